#!/usr/bin/env python3
"""Fine-tuning the demo model on the synthetic new banking domain, measured.

    python recipes/finetune_demo.py [--key=value ...]     # overrides for hparams/finetune.yaml

Needs ``make demo`` first (``results/demo/model`` and the demo's manifests). Steps:
the new-domain corpus (``multitask synth --domain new --shots 20``, 8 intents,
test clips from voices no banking corpus has), then two fine-tunings of
``results/demo/model``:

* ``replace``: the 8 new intents only, the whole encoder trainable at a low rate while
  the demo's emotion training split is rehearsed through the frozen emotion head
  (``--emotion-replay``);
* ``extend``: the demo's 14 intents and the 8 new ones, the demo's intent head kept
  whole beside a head for the new intents, every training clip of the demo's
  intents rehearsed, scored on the demo's intent test as well. The new intents'
  offset is chosen on held-out calls of the demo's intents (``multitask synth
  --domain calls`` by the 4 timbres of the demo's validation splits, half of them
  with emotion: what a bank has of its own callers), within 2 points of the parent.

Both measure emotion on the demo's emotion test before and after. The figures go
to ``results/finetune/metrics.json``.
"""

import json
import os
import sys

from multitask.finetune import finetune, parse_overrides
from multitask.synth.corpus import check_current, generate, manifest_timbres, recorded_seed

DEMO = "results/demo"
OUT = "results/finetune"
SHOTS = 20
# replace: the encoder adapts to the new intents; the emotion rows it rehearses keep
# what the frozen emotion head reads (measured against a frozen encoder: docs/finetune-experiments.md).
REPLACE = {"freeze_encoder": "none", "encoder_lr": 1e-4}
# extend: the offset may cost the old intents up to 2 points on the held-out calls.
EXTEND = {"retention_tolerance": 0.02}

# What `make demo` leaves that this recipe reads.
DEMO_NEEDS = ("model/hyperparams.yaml", "synth/speakers.json", "data/crema_d/test.csv",
              "data/crema_d/train.csv", "data/skit_s2i/train.csv", "data/skit_s2i/test.csv")

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__.strip())
        sys.exit(0)
    missing = [name for name in DEMO_NEEDS if not os.path.isfile(os.path.join(DEMO, name))]
    if missing:
        sys.exit(f"error: {DEMO} lacks {', '.join(missing)}: run `make demo` first, from the "
                 "clone's folder (this recipe fine-tunes the demo model on its data)")
    try:
        overrides = parse_overrides(sys.argv[1:])
    except ValueError as err:
        sys.exit(f"error: {err}")

    # The new domain is dealt from the demo corpus's seed, so that its test voices are
    # the demo's joint-test voices, which no banking corpus has.
    try:
        seed = recorded_seed(f"{DEMO}/synth/speakers.json")
        check_current(f"{DEMO}/synth/speakers.json", seed)
    except ValueError as err:
        sys.exit(f"error: {err} (by `make demo`, whose model this recipe fine-tunes)")
    # The new domain (skipped if present; deterministic from the seed).
    new_domain = os.path.join(OUT, "synth", "new_domain")
    if not os.path.isfile(os.path.join(new_domain, "test.csv")):
        generate(os.path.join(OUT, "synth"), size="small", domain="new", shots=SHOTS, seed=seed)
    try:  # a corpus found on disk is reused: refuse another seed's, size's or version's
        check_current(os.path.join(new_domain, "speakers.json"), seed, "small")
    except ValueError as err:
        sys.exit(f"error: {err}")
    data = {split: os.path.join(new_domain, f"{split}.csv") for split in ("train", "valid", "test")}
    # Held-out calls of the demo's intents by its validation timbres (in no training or
    # test split): where extend chooses the new intents' offset. The demo's own when it
    # made them (with its class-bias option on), else made here.
    calls = os.path.join(DEMO, "synth", "calls", "calls.csv")
    if not os.path.isfile(calls):
        calls = os.path.join(OUT, "synth", "calls", "calls.csv")
    if not os.path.isfile(calls):
        timbres = manifest_timbres([f"{DEMO}/data/skit_s2i/valid.csv",
                                    f"{DEMO}/data/crema_d/valid.csv"],
                                   f"{DEMO}/synth/speakers.json")
        generate(os.path.join(OUT, "synth"), size="small", domain="calls", variants=timbres,
                 seed=seed)
    common = dict(valid=[data["valid"]], test=data["test"],
                  emotion=f"{DEMO}/data/crema_d/test.csv", overrides=overrides)

    # Two fine-tunings of the demo model: new intents only, and old + new.
    replace = finetune(f"{DEMO}/model", data["train"], f"{OUT}/replace", mode="replace",
                       emotion_replay=[f"{DEMO}/data/crema_d/train.csv"],
                       **{**common, "overrides": {**REPLACE, **overrides}})
    extend = finetune(f"{DEMO}/model", data["train"], f"{OUT}/extend", mode="extend",
                      old_intent=f"{DEMO}/data/skit_s2i/test.csv",
                      old_valid=calls, replay=[f"{DEMO}/data/skit_s2i/train.csv"],
                      **{**common, "overrides": {**EXTEND, **overrides}})

    metrics = {
        "parent": replace["parent"],
        "shots_per_new_intent": SHOTS,
        "new_intents": replace["new_intents"],
        "overrides": overrides,
        "replace": {"settings": {k: replace[k] for k in ("freeze_encoder", "frozen_heads",
                                                         "intent_head", "emotion_replayed")},
                    **replace["results"]},
        "extend": {"settings": {k: extend[k] for k in ("freeze_encoder", "frozen_heads",
                                                       "intent_head", "replayed",
                                                       "rows_per_class")},
                   "calibration": extend.get("calibration"),
                   **extend["results"]},
    }
    with open(os.path.join(OUT, "metrics.json"), "w", encoding="utf-8") as fout:
        json.dump(metrics, fout, indent=2)
    print(json.dumps(metrics, indent=2))
