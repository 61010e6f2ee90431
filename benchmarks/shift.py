#!/usr/bin/env python3
"""Where accuracy goes: a model scored under one controlled shift at a time.

The joint IVR test changes several things at once against the training corpora:
callers speak with emotion (the intent corpus is read neutrally), over the telephone
(the emotion corpus is wideband), with voices no corpus contains. This benchmark
renders the same kind of material with the demo corpus's synthesiser, changing one
factor per condition, and scores a model export on each:

==========================  =========================================  ==========
condition                   material                                   scored
==========================  =========================================  ==========
``intent_neutral``          banking queries (training templates),      intent
                            neutral prosody, telephone (as the intent
                            corpus)
``intent_emotion_lo``       the same queries with emotion, intensity   intent,
                            LO                                         emotion
``intent_emotion_hi``       ... intensity HI                           intent,
                                                                       emotion
``emotion_wideband``        the emotion corpus's sentences, wideband   emotion
                            (as the emotion corpus)
``emotion_telephone``       the same through the telephone line        emotion
==========================  =========================================  ==========

Voices: ``--voices valid`` takes the speakers of the prepared intent validation
split (a development set: tune on this), ``--voices joint`` the joint test's pool,
whose voices no corpus contains (report it; do not tune on it). Each query and
sentence is rendered in every condition of its group with the same voice and seed,
so the conditions differ only by the factor named.

    python benchmarks/shift.py --model results/demo/model --voices valid \\
        --out results/bench/shift_valid.json

Example
-------
>>> plan = plan_conditions(["en-us+f2"], per_intent=1, per_emotion=1, seed=0, root="x")
>>> sorted(plan), len(plan["intent_neutral"]), len(plan["emotion_telephone"])
(['emotion_telephone', 'emotion_wideband', 'intent_emotion_hi', 'intent_emotion_lo', 'intent_neutral'], 14, 6)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from multitask.synth.corpus import DEFAULT_SEED, cycle_evenly, render_all, speaker_pools
from multitask.synth.prosody import EMOTIONS, LEVELS, make_speaker
from multitask.synth.render import Utterance
from multitask.synth.text import (
    EMOTION_SENTENCES,
    INTENTS,
    TEMPLATES,
    fill,
    sentence,
    split_templates,
)
from multitask.synth.voices import voices_of

VALID_MANIFEST = "results/demo/data/skit_s2i/valid.csv"
SPEAKERS = "results/demo/synth/speakers.json"


@dataclass(frozen=True)
class Item:
    """One rendered clip and the labels it is scored against (``None``: not scored)."""

    utterance: Utterance
    intent: str | None
    emotion: str | None


def plan_conditions(voices: list[str], per_intent: int, per_emotion: int, seed: int,
                    root: str, corpus_seed: int = DEFAULT_SEED) -> dict[str, list[Item]]:
    """The clips of every condition; speakers are built as the corpus builds them."""
    rng = np.random.default_rng(seed)
    plan: dict[str, list[Item]] = {}

    def add(condition, text, voice, emotion, strength, channel, clip_seed, intent, scored_emotion):
        path = os.path.join(root, condition, f"{len(plan.setdefault(condition, [])):05d}.wav")
        utt = Utterance(path=path, text=text, speaker=make_speaker(voice, corpus_seed),
                        emotion=emotion, strength=strength, channel=channel, seed=clip_seed)
        plan[condition].append(Item(utt, intent, scored_emotion))

    for class_index, (intent, _) in enumerate(INTENTS):
        seen, _ = split_templates(TEMPLATES[intent])
        for k, (template, voice) in enumerate(zip(cycle_evenly(seen, per_intent, rng),
                                                  cycle_evenly(voices, per_intent, rng), strict=True)):
            text, clip_seed = sentence(fill(template, rng)), int(rng.integers(2**31))
            emotion = EMOTIONS[(k + class_index) % len(EMOTIONS)]  # balanced intent x emotion
            add("intent_neutral", text, voice, "neutral", 0.0, "telephone", clip_seed, intent, None)
            add("intent_emotion_lo", text, voice, emotion, LEVELS["LO"], "telephone", clip_seed,
                intent, emotion)
            add("intent_emotion_hi", text, voice, emotion, LEVELS["HI"], "telephone", clip_seed,
                intent, emotion)
    sentences = [EMOTION_SENTENCES[c] for c in sorted(EMOTION_SENTENCES)]
    for k in range(per_emotion * len(EMOTIONS)):
        emotion, level = EMOTIONS[k % len(EMOTIONS)], list(LEVELS)[(k // len(EMOTIONS)) % 2]
        voice = voices[int(rng.integers(len(voices)))]
        text, clip_seed = sentences[int(rng.integers(len(sentences)))], int(rng.integers(2**31))
        for channel in ("wideband", "telephone"):
            add(f"emotion_{channel}", text, voice, emotion, LEVELS[level], channel, clip_seed,
                None, emotion)
    return plan


def score(plan: dict[str, list[Item]], classify) -> dict[str, dict]:
    """Accuracy per condition and task; ``classify(paths) -> [{task: {"label": ...}}]``.

    A clip the classifier cannot read counts as wrong and is listed under ``errors``.

    >>> u = Utterance("a.wav", "hi", make_speaker("en+m1", 0), "sad", 1.0, "telephone", 1)
    >>> plan = {"c": [Item(u, "block", "sad"), Item(u, "lost", "sad")]}
    >>> fake = lambda paths: [{"intent": {"label": "block"}, "emotion": {"label": "sad"}}] * 2
    >>> score(plan, fake)["c"]  # doctest: +NORMALIZE_WHITESPACE
    {'clips': 2, 'errors': [], 'intent_accuracy': 0.5, 'emotion_accuracy': 1.0,
     'emotion_recall': {'sad': 1.0}, 'intent_accuracy_by_emotion': {'sad': 0.5}}
    """
    results = {}
    for condition, items in plan.items():
        preds = classify([it.utterance.path for it in items])
        row = {"clips": len(items), "errors": [p["error"] for p in preds if "error" in p]}
        for task in ("intent", "emotion"):
            pairs = [(getattr(it, task), p) for it, p in zip(items, preds, strict=True)
                     if getattr(it, task) is not None]
            if pairs:
                row[f"{task}_accuracy"] = _accuracy(task, pairs)
        if any(it.emotion is not None for it in items):
            # Which emotions the condition loses: each one's share heard as itself.
            row["emotion_recall"] = {
                emotion: _accuracy("emotion", [(it.emotion, p) for it, p in zip(items, preds, strict=True)
                                               if it.emotion == emotion])
                for emotion in sorted({it.emotion for it in items if it.emotion is not None})}
        if all(it.intent is not None and it.emotion is not None for it in items):
            # Which emotions cost the intent most.
            row["intent_accuracy_by_emotion"] = {
                emotion: _accuracy("intent", [(it.intent, p) for it, p in zip(items, preds, strict=True)
                                              if it.emotion == emotion])
                for emotion in sorted({it.emotion for it in items})}
        results[condition] = row
    return results


def _accuracy(task: str, pairs) -> float:
    return round(float(np.mean([p.get(task, {}).get("label") == truth for truth, p in pairs])), 4)


def voices_for(choice: str, valid_manifests: list[str], speakers: str = SPEAKERS) -> list[str]:
    """Every accent of the prepared validation manifests' speakers (variants), or the
    joint test's pool. A CREMA-D manifest names actors; ``speakers`` (the generator's
    ``speakers.json``) says which variant each actor is."""
    if choice == "joint":
        return speaker_pools(DEFAULT_SEED)["joint"]
    actors = {}
    if os.path.isfile(speakers):
        with open(speakers, encoding="utf-8") as fin:
            actors = {a: v["variant"] for a, v in json.load(fin).get("crema_d_actors", {}).items()}
    variants = set()
    for manifest in valid_manifests:
        if not os.path.isfile(manifest):
            raise SystemExit(f"{manifest}: no such manifest; run `make demo` first, "
                             "or pass --valid-manifest")
        with open(manifest, newline="", encoding="utf-8") as fin:
            found = {row["speaker"] for row in csv.DictReader(fin)}
        if not found:
            raise SystemExit(f"{manifest}: no rows")
        unknown = {s for s in found if s.isdigit() and s not in actors}
        if unknown:
            raise SystemExit(f"{manifest}: actors {sorted(unknown)} are not in {speakers}")
        variants |= {actors.get(s, s) for s in found}
    return voices_of(sorted(variants))


def check_labels(classifier, path: str) -> None:
    """Refuse a model whose label sets are not the synthetic corpus's."""
    wanted = {"intent": {name for name, _ in INTENTS}, "emotion": set(EMOTIONS)}
    for task, names in wanted.items():
        have = set(classifier.labels.get(task, ()))
        if not names <= have:
            raise SystemExit(f"{path}: the model's {task} labels lack "
                             f"{sorted(names - have)}; this benchmark needs the demo's labels")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="results/demo/model", help="an exported model folder")
    parser.add_argument("--voices", choices=("valid", "joint"), default="valid")
    parser.add_argument("--valid-manifest", nargs="+", default=[VALID_MANIFEST],
                        help="prepared validation manifests whose speakers are the development "
                             "voices (a CREMA-D one adds its actors' timbres)")
    parser.add_argument("--speakers", default=SPEAKERS,
                        help="the generator's speakers.json (actor -> timbre)")
    parser.add_argument("--per-intent", type=int, default=12, help="queries per intent")
    parser.add_argument("--per-emotion", type=int, default=30, help="sentences per emotion")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--audio", default=None, help="where to render (default: beside --out)")
    parser.add_argument("--out", default=None, help="JSON (default results/bench/shift_<voices>.json)")
    args = parser.parse_args(argv)
    out = args.out or f"results/bench/shift_{args.voices}.json"
    audio = args.audio or os.path.join(os.path.dirname(out) or ".", f"shift_{args.voices}_audio")

    from multitask.inference import MultitaskClassifier

    classifier = MultitaskClassifier.from_hparams(source=args.model,
                                                  savedir=os.path.join(audio, "model"))
    check_labels(classifier, args.model)
    start = time.time()
    voices = voices_for(args.voices, args.valid_manifest, args.speakers)
    plan = plan_conditions(voices, args.per_intent,
                           args.per_emotion, args.seed, audio)
    render_all([it.utterance for items in plan.values() for it in items], None, True)
    # batch_size=1: each clip alone, exactly as classify_file scores it.
    results = score(plan, lambda paths: classifier.classify_files(paths, batch_size=1))
    report = {"model": os.path.abspath(args.model), "voices": args.voices,
              "timbres": sorted({voice.split("+", 1)[1] for voice in voices}),
              "seed": args.seed, "per_intent": args.per_intent, "per_emotion": args.per_emotion,
              "seconds": round(time.time() - start, 1), "conditions": results}
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w", encoding="utf-8") as fout:
        json.dump(report, fout, indent=2)
    for condition, row in results.items():
        figures = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k.endswith("accuracy"))
        by_emotion = row.get("intent_accuracy_by_emotion", {})
        figures += "".join(f"\n{'':22s}intent, {e}: {v:.3f}" for e, v in by_emotion.items())
        recall = row.get("emotion_recall", {})
        figures += "".join(f"\n{'':22s}emotion recall, {e}: {v:.3f}" for e, v in recall.items())
        print(f"{condition:20s} {figures}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
