"""Fine-tuning an exported model on a new banking domain: new intents from few examples,
emotion kept (and measured).

    multitask finetune --from results/demo/model --out results/finetune/run \
        --train new_domain/train.csv --valid new_domain/valid.csv --test new_domain/test.csv \
        --emotion data/crema_d/test.csv [--mode replace|extend] [--freeze_encoder=1]

``--from`` is a folder written by ``multitask export`` or a Hub repo id (``--revision``
pins a branch, tag or commit). A fine-tuning run is an ordinary run folder
(``hyperparams.yaml``, ``save/`` with checkpoints and label encoders,
``test_metrics.json``) trained by :func:`multitask.train.fit` with
``hparams/finetune.yaml``; rerunning the command resumes it, and it exports like
any run, its card naming the parent (``base_model``). What this module adds:

* the parent, loaded with :meth:`MultitaskClassifier.from_hparams`: its encoder
  architecture and head sizes become the run's model settings, its weights the
  run's starting point (:func:`init_from_parent`, the ``init_model`` step that
  :func:`~multitask.train.fit` runs before recovering the run's own checkpoint);
* the intent label set: ``replace`` takes the new labels only; ``extend`` keeps the
  parent's intents at their indices and appends the new ones, by default with the
  parent's intent head kept whole beside a head for the new intents
  (:class:`~multitask.model.ExtendedHead`). A new label spelled like an old one but not
  identically (``Block`` vs ``block``, ``card_lost`` vs ``lost card``) is refused,
  naming both;
* what stays fixed: heads in ``frozen_heads`` (emotion, by default) take no
  gradient, are not in the optimizer (weight decay would move them) and stay in
  eval mode (a stats head's batch statistics would move), and the
  encoder is frozen fully, up to its N lower transformer layers, or not at all;
* ``extend``: the parent's intents rehearsed from ``--replay`` (every clip by
  default; ``rows_per_class`` in ``finetune.yaml`` balances each epoch over the
  classes, emotions rehearsed with ``--emotion-replay`` included), then an offset on
  the new intents' logits chosen on held-out clips of the old ones (``--old-valid``;
  :mod:`multitask.calibration`);
* ``--emotion-replay``: emotion-labelled manifests (the parent's emotion corpus)
  rehearsed while a trainable encoder adapts, their loss flowing through the frozen
  emotion head into the encoder, so that what the emotion head reads stays readable;
* retention, measured: emotion accuracy (and, in ``extend`` mode, old-intent
  accuracy) of the parent and of the fine-tuned model on the same manifests, in
  ``finetune.json``, with a warning when emotion drops by more than
  ``emotion_drop_warning``.

Only intent labels are learnt: emotion labels in the new CSV are ignored (the
emotion head is the parent's).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import random
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

from .card import display_path
from .export import CARD_FILE, HPARAMS_FILE, WEIGHTS_FILES, export_model
from .head_labels import encoder_labels
from .manifest import single_task_copy, single_task_rows
from .source import FOLDER, HUB, ModelNotFoundError, source_kind

FINETUNE_RECORD = "finetune.json"
# The repository's hparams/finetune.yaml (and the model.yaml it includes), shipped inside
# the package as links that a wheel turns into copies: `multitask finetune` works installed.
DEFAULT_HPARAMS = Path(__file__).resolve().parent / "hparams" / "finetune.yaml"
MODES = ("replace", "extend")
TASKS = ("intent", "emotion")


class FinetuneError(ValueError):
    """A fine-tuning that cannot start; the message names the file or labels at fault."""


# --------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------


def check_parent_folder(source) -> None:
    """Raise :class:`FinetuneError` unless a local ``source`` is a ``multitask export`` folder."""
    folder = Path(source)
    if not folder.is_dir():
        raise FinetuneError(f"{folder}: not a folder")
    hparams = folder / HPARAMS_FILE
    text = hparams.read_text(encoding="utf-8") if hparams.is_file() else ""
    if "multitask.inference" not in text:
        hint = (" (it looks like a training run: export it first with "
                f"`multitask export --from {folder} --out DIR`)"
                if (folder / "save").is_dir() else "")
        raise FinetuneError(f"{folder}: not a multitask model folder: no hyperparams.yaml "
                            f"written by `multitask export`{hint}")
    missing = [name for name in (*WEIGHTS_FILES.values(), "label_encoder_intent.txt")
               if not (folder / name).is_file()]
    if missing:
        raise FinetuneError(f"{folder}: not a complete multitask model (missing "
                            f"{', '.join(missing)})")


def load_parent(source, revision=None, savedir=None):
    """The parent as a :class:`MultitaskClassifier` on the CPU (folder or Hub repo id)."""
    from .inference import MultitaskClassifier

    try:
        kind = source_kind(source)
    except ModelNotFoundError as err:
        raise FinetuneError(str(err)) from None
    if kind == FOLDER:
        check_parent_folder(source)
    try:
        parent = MultitaskClassifier.from_hparams(
            source=source, revision=revision, savedir=savedir, run_opts={"device": "cpu"},
            optimize=None)  # its modules are trained further: keep them as built
    except Exception as err:
        raise FinetuneError(f"cannot load a multitask model from {source}: "
                            f"{type(err).__name__}: {err}") from err
    if "intent" not in parent.tasks:
        raise FinetuneError(f"{source}: the model has no intent head (tasks {list(parent.tasks)})")
    return parent


def parent_settings(parent) -> dict:
    """The run's head settings: each of the parent's heads as it was built.

    ``task_heads`` holds every head's architecture (dropout aside: the run's
    ``head_dropout`` applies), so the parent's weights fit the run's heads.
    """
    from .model import head_architecture

    heads = {task: head_architecture(head) for task, head in parent.mods.heads.items()}
    plain = [arch for arch in heads.values() if "kept" not in arch] or [
        _innermost(next(iter(heads.values())))]
    return {"head_proj_size": plain[0]["proj_size"], "head_hidden_size": plain[0]["hidden_size"],
            "head_pooling": plain[0]["pooling"], "task_heads": heads}


def _innermost(arch: dict) -> dict:
    while "kept" in arch:
        arch = arch["kept"]
    return arch


def new_intent_head(task_heads: dict, mode: str, options, parent_classes: int = 0) -> dict:
    """``task_heads`` with the intent head of a fine-tuning run whose new intents are
    learnt by a head designed with ``options``.

    ``options`` (``TaskHead`` keywords, e.g. ``{"pooling": "stats", "hidden_size": 0}``)
    update the parent's intent head's design (the newest head's, for a parent extended
    before). ``replace``: the new intent head. ``extend``: an extended head, the
    parent's intent head kept whole (its ``parent_classes`` logits exactly the parent's)
    beside a head for the new intents. ``None`` keeps the parent's design: ``replace``
    a head like the parent's, ``extend`` the parent's head retrained with rows appended.

    >>> heads = {"intent": {"pooling": "attention", "hidden_size": 8}, "emotion": {}}
    >>> new_intent_head(heads, "replace", {"pooling": "stats"})["intent"], heads["intent"]
    ({'pooling': 'stats', 'hidden_size': 8}, {'pooling': 'attention', 'hidden_size': 8})
    >>> new_intent_head(heads, "extend", {"hidden_size": 0}, parent_classes=14)["intent"]
    {'kept': {'pooling': 'attention', 'hidden_size': 8, 'num_classes': 14}, 'added': {'pooling': 'attention', 'hidden_size': 0}}
    >>> new_intent_head(heads, "extend", None) == heads
    True
    """
    parent = task_heads["intent"]
    if options is None:
        if "kept" in parent:
            raise FinetuneError("the parent's intent head is an extended one (two heads); "
                                f"{mode} mode needs a new_intent_head design, not null")
        return task_heads
    base = parent.get("added", parent)
    unknown = sorted(set(options) - set(base))
    if unknown:
        raise FinetuneError(f"new_intent_head: unknown option(s) {unknown}; a head takes "
                            f"{sorted(base)}")
    design = {**base, **options}
    if mode == "replace":
        return task_heads if design == parent else {**task_heads, "intent": design}
    return {**task_heads,
            "intent": {"kept": {**parent, "num_classes": parent_classes}, "added": design}}


def hparams_default(hparams_file, key: str):
    """``key``'s value as written in ``hparams_file`` (plain YAML data), read without
    building anything.

    The new intent head's design shapes the heads, which must be in the overrides the
    run saves with its ``hyperparams.yaml`` (the export rebuilds the model from them),
    so it is read before the file is loaded.
    """
    from ruamel.yaml import YAML

    with open(hparams_file, encoding="utf-8") as fin:
        value = YAML(typ="rt").load(fin).get(key)
    return json.loads(json.dumps(value))  # ruamel's containers -> dict / list


def write_encoder_config(parent, folder) -> str:
    """The parent's wav2vec2 config as ``folder/config.json`` (a config-only folder:
    random weights, replaced by the parent's in :func:`init_from_parent`)."""
    os.makedirs(folder, exist_ok=True)
    config = parent.mods.encoder.config.to_dict()
    config.pop("_name_or_path", None)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as fout:
        json.dump(config, fout, indent=1, sort_keys=True)
    return os.fspath(folder)


def parent_identity(source, revision=None, repo_id=None) -> dict:
    """What the card records about the parent: its name, revision and exact version.

    For a Hub repo the commit the revision resolved to (from the download cache);
    for a local folder a digest of its weights.
    """
    source = os.fspath(source)
    local = source_kind(source) == FOLDER
    identity = {"source": display_path(source) if local else source,
                "local_folder": local, "revision": revision, "commit": None,
                "repo_id": repo_id or (None if local else source)}
    if local:
        digest = hashlib.sha256()
        for name in WEIGHTS_FILES.values():
            digest.update(Path(source, name).read_bytes())
        identity["weights_sha256"] = digest.hexdigest()[:16]
    elif source_kind(source) == HUB:
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "hyperparams.yaml", revision=revision))
            if path.parent.parent.name == "snapshots":
                identity["commit"] = path.parent.name
        except Exception:  # the commit is a record, not a requirement
            pass
    return identity


def parent_license(source, revision=None) -> str | None:
    """The ``license`` of the parent's model card (``README.md`` front matter), or None
    when the card cannot be read (offline without it cached, no card, no license).

    A model fine-tuned from one trained on non-commercial data keeps that term unless
    ``model_license`` says otherwise (:func:`multitask.export.card_license`).
    """
    try:
        from huggingface_hub import ModelCard, hf_hub_download

        source = os.fspath(source)
        path = (Path(source, CARD_FILE) if source_kind(source) == FOLDER
                else hf_hub_download(source, CARD_FILE, revision=revision))
        return ModelCard.load(path).data.license
    except Exception:  # the license is a record, not a requirement
        return None


# --------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------


def label_key(label: str) -> tuple[str, ...]:
    """Words of a label, lower-cased and sorted: labels with one key mean one intent.

    Example
    -------
    >>> label_key("card_lost") == label_key("Lost card"), label_key("block")
    (True, ('block',))
    """
    return tuple(sorted(re.findall(r"[a-z0-9]+", label.lower())))


def _check_unambiguous(labels, where: str) -> None:
    seen: dict[tuple, str] = {}
    for label in labels:
        other = seen.setdefault(label_key(label), label)
        if other != label:
            raise FinetuneError(f"{where}: intents {other!r} and {label!r} differ only in case, "
                                "spacing, punctuation or word order; use one spelling")


def intent_label_set(parent_labels: list[str], new_labels, mode: str) -> list[str]:
    """The run's intent classes in index order.

    ``replace``: the new labels, sorted. ``extend``: the parent's, at their indices,
    then the new ones, sorted. In ``extend`` a new label identical to a parent label
    is that intent (its rows are more clips of the parent's class); one that differs from a
    parent label only in case, spacing, punctuation or word order is refused.

    Example
    -------
    >>> intent_label_set(["lost", "block"], ["open_account", "block"], "extend")
    ['lost', 'block', 'open_account']
    >>> intent_label_set(["lost", "block"], ["Block"], "extend")
    Traceback (most recent call last):
    ...
    multitask.finetune.FinetuneError: new intent 'Block' and the parent's intent 'block' differ only in case, spacing, punctuation or word order: name it 'block' if it is the same intent, or give it a clearly different name
    """
    if mode not in MODES:
        raise FinetuneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    new_labels = sorted(set(new_labels))
    _check_unambiguous(new_labels, "the new training data")
    if mode == "replace":
        return new_labels
    old = {label_key(label): label for label in parent_labels}
    for label in new_labels:
        match = old.get(label_key(label))
        if match is not None and match != label:
            raise FinetuneError(
                f"new intent {label!r} and the parent's intent {match!r} differ only in case, "
                f"spacing, punctuation or word order: name it {match!r} if it is the same "
                "intent, or give it a clearly different name")
    return list(parent_labels) + [label for label in new_labels if label not in parent_labels]


def save_label_encoder(path, labels: list[str]) -> None:
    """A SpeechBrain ``CategoricalEncoder`` file with ``labels`` at indices 0, 1, ...;
    an existing file (a resumed run) must hold the same labels."""
    from speechbrain.dataio.encoder import CategoricalEncoder

    encoder = CategoricalEncoder()
    if os.path.isfile(path):
        encoder.load(path)
        found = encoder_labels(encoder)
        if found != list(labels):
            raise FinetuneError(f"{path}: this run folder was started with other labels "
                                f"({found}); use a new --out")
        return
    encoder.update_from_iterable(labels)
    encoder.save(path)


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def is_manifest(path) -> bool:
    """A package manifest (``id,wav,duration,...``) rather than a generic ``path,intent`` CSV."""
    if str(path).endswith(".json"):
        return True
    with open(path, newline="", encoding="utf-8-sig") as fin:
        header = [c.strip() for c in next(csv.reader(fin), [])]
    return {"id", "wav", "duration"} <= set(header)


def _csv_labels(path) -> Counter:
    with open(path, newline="", encoding="utf-8-sig") as fin:
        return Counter((row.get("intent") or "").strip() for row in csv.DictReader(fin))


def prepare_split(path, out_dir, split: str, seed: int) -> str:
    """An intent-only manifest of ``split`` from a generic CSV or a manifest.

    Emotion labels are dropped (only intents are learnt); a row without an intent
    label, or an intent whose every row was rejected, is an error.
    """
    from .manifest import read_manifest, write_manifest
    from .prepare.generic_csv import prepare_generic_csv

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FinetuneError(f"{path}: not found")
    if is_manifest(path):
        rows = read_manifest(path)
    else:
        prepared = prepare_generic_csv(path, os.path.join(out_dir, f"prepared_{split}"),
                                       seed=seed, split_as=split, id_prefix=f"{split}-")
        rows = read_manifest(prepared[split])
        lost = set(_csv_labels(path)) - {row["intent"] for row in rows} - {""}
        if lost:
            raise FinetuneError(
                f"{path}: intent(s) {', '.join(sorted(lost))} have no usable recording left "
                f"(see {os.path.join(out_dir, f'prepared_{split}', 'rejected.csv')})")
    unlabelled = [row["id"] for row in rows if not row["intent"]]
    if unlabelled:
        raise FinetuneError(f"{path}: {len(unlabelled)} row(s) without an intent label "
                            f"(e.g. {', '.join(unlabelled[:3])}); every row needs one")
    if not rows:
        raise FinetuneError(f"{path}: no rows")
    for row in rows:
        row.update(emotion="", task="intent", split=split)
    out = os.path.join(out_dir, f"{split}.csv")
    write_manifest(out, rows)
    return out


def replay_manifest(manifests, labels, per_class: int | None, seed: int, out_path) -> str:
    """The rows of ``manifests`` with one of the parent's intents (at most ``per_class``
    of each, drawn with ``seed``; ``None``: all): rehearsal, so that ``extend`` keeps
    the old intents while it learns the new."""
    from .manifest import read_manifests, write_manifest

    by_label: dict[str, list] = {}
    for row in read_manifests(manifests):
        if row.get("intent") in labels:
            by_label.setdefault(row["intent"], []).append(row)
    rng = random.Random(seed)
    rows = []
    for label in sorted(by_label):
        pool = by_label[label]
        chosen = pool if per_class is None else rng.sample(pool, min(per_class, len(pool)))
        rows += [dict(row, id=f"replay-{row['id']}", emotion="", task="intent") for row in chosen]
    if not rows:
        raise FinetuneError(f"{manifests}: no row carries one of the parent's intents")
    write_manifest(out_path, rows)
    return os.fspath(out_path)


def emotion_replay_manifest(manifests, labels, out_path, measured_on=None) -> str:
    """The emotion-labelled rows of ``manifests`` as emotion-only rows, rehearsed so that a
    trainable encoder keeps what the (frozen) emotion head reads. Every emotion must be
    one of the parent's ``labels``, and no clip may be one of ``measured_on``'s (the
    retention manifest: rehearsed clips would flatter it)."""
    from .manifest import read_manifest, write_manifest

    measured = {os.path.realpath(row["wav"]) for row in read_manifest(measured_on)} \
        if measured_on else set()
    rows = []
    for manifest in manifests:
        kept = single_task_rows(manifest, "emotion")
        unknown = sorted({row["emotion"] for row in kept} - set(labels))
        if unknown:
            raise FinetuneError(f"{manifest}: emotion label(s) {unknown} are not the parent's "
                                f"({', '.join(labels)})")
        shared = sorted(r["id"] for r in kept if os.path.realpath(r["wav"]) in measured)
        if shared:
            raise FinetuneError(f"{manifest}: {len(shared)} clip(s) (e.g. {shared[0]!r}) are also "
                                f"in --emotion {measured_on}, on which retention is measured")
        rows += [dict(row, id=f"emotion-replay-{row['id']}") for row in kept]
    write_manifest(out_path, rows)
    return os.fspath(out_path)


def check_emotion_replay(hparams) -> None:
    """Refuse an emotion rehearsal that cannot act: no emotion weight, or nothing
    trainable that the emotion loss reaches."""
    weight = float((hparams.get("task_weights") or {}).get("emotion", 0.0))
    if weight <= 0:
        raise FinetuneError(f"--emotion-replay rehearses emotion, but task_weights gives it "
                            f"weight {weight}; give it a positive weight or drop --emotion-replay")
    frozen_heads = set(hparams.get("frozen_heads") or [])
    spec = hparams.get("freeze_encoder")
    layers = hparams["encoder"].config.num_hidden_layers
    encoder_frozen = str(spec) == "all" or (isinstance(spec, int) and spec >= layers)
    if encoder_frozen and "emotion" in frozen_heads:
        raise FinetuneError("--emotion-replay rehearses emotion through the encoder, but the "
                            "encoder and the emotion head are both frozen: unfreeze encoder "
                            "layers (--freeze_encoder=none or N lower layers) or drop "
                            "--emotion-replay")


def check_classes(train_manifests, other_manifests: dict) -> Counter:
    """Rows per intent in training; raise if a class of ``other_manifests`` has none."""
    from .manifest import read_manifests

    counts = Counter(row["intent"] for row in read_manifests(train_manifests))
    for name, manifest in other_manifests.items():
        empty = sorted({row["intent"] for row in read_manifests(manifest)
                        if row["intent"]} - set(counts))
        if empty:
            raise FinetuneError(f"{name} ({manifest}): intent(s) {', '.join(empty)} have no "
                                "training example (empty class)")
    return counts


# --------------------------------------------------------------------------
# Starting weights and frozen parts: the `init_model` step of fit()
# --------------------------------------------------------------------------


def freeze_encoder(encoder, spec) -> None:
    """Freeze ``all``, ``none``, or N: the conv front end plus the N lower transformer layers.

    Example
    -------
    >>> import tempfile
    >>> from multitask.model import Wav2Vec2Encoder, tiny_config
    >>> folder = tempfile.mkdtemp(); tiny_config().save_pretrained(folder)
    >>> enc = Wav2Vec2Encoder(folder, save_path=folder)
    >>> freeze_encoder(enc, 1)
    >>> [any(p.requires_grad for p in layer.parameters()) for layer in enc.model.encoder.layers]
    [False, True]
    """
    model = encoder.model
    layers = model.encoder.layers
    if spec == "all":
        frozen_layers = len(layers)
    elif spec == "none":
        frozen_layers = None
    elif isinstance(spec, int) and not isinstance(spec, bool) and 0 <= spec <= len(layers):
        frozen_layers = spec
    else:
        raise FinetuneError(f"freeze_encoder must be all, none or 0..{len(layers)}; got {spec!r}")
    for param in model.parameters():
        param.requires_grad = frozen_layers is None
    model.feature_extractor._requires_grad = frozen_layers is None
    if frozen_layers is None:
        return
    trainable = list(layers[frozen_layers:])
    # A pre-norm (stable layer norm) encoder's final norm belongs to the top.
    if getattr(model.config, "do_stable_layer_norm", False) and trainable:
        trainable.append(model.encoder.layer_norm)
    for module in trainable:
        for param in module.parameters():
            param.requires_grad = True


def init_from_parent(model, encoders, source, revision=None, savedir=None, mode="replace",
                     freeze_encoder_spec="all", frozen_heads=("emotion",), seed=0,
                     preserve_old_intents=False, kept_temperature=1.0) -> None:
    """Load the parent's weights into ``model`` and freeze what stays fixed.

    Encoder and heads are copied; in the intent head, the last layer's rows are
    copied by label name (every parent class the run keeps), and rows of new
    classes start from the mean of the parent's rows plus small noise (``extend``)
    or from the layer's fresh initialisation (``replace``). A ``replace`` intent head
    built otherwise than the parent's (``new_intent_head``) starts fresh. An ``extend``
    run's extended intent head (the default) holds the parent's intent head, whole and
    fixed, beside a fresh head for the new intents. An ``extend`` run that retrains the
    parent's head (``new_intent_head`` null) with ``preserve_old_intents`` (and a frozen
    encoder) keeps the parent's intent logits too: see :func:`preserve_parent_rows`. Run by
    :func:`multitask.train.fit` before the optimizer is built and before the run's
    own checkpoint (if any) is recovered over these weights.
    """
    import torch

    from .model import ExtendedHead, head_architecture

    parent = load_parent(source, revision, savedir)
    model.encoder.load_state_dict(parent.mods.encoder.state_dict())
    generator = torch.Generator().manual_seed(seed)
    for task, head in model.heads.items():
        if task not in parent.tasks:
            raise FinetuneError(f"{source}: the parent has no {task} head")
        if (task, mode) == ("intent", "extend") and isinstance(head, ExtendedHead):
            # The parent's head, whole and fixed; the added head keeps its initialisation.
            head.kept.load_state_dict(parent.mods.heads[task].state_dict())
            head.kept_temperature = float(kept_temperature)
            continue
        if head_architecture(head) != head_architecture(parent.mods.heads[task]):
            if (task, mode) != ("intent", "replace"):
                raise FinetuneError(
                    f"the run's {task} head ({head_architecture(head)}) is not the parent's "
                    f"({head_architecture(parent.mods.heads[task])}); only replace mode's new "
                    "intent head may differ")
            continue  # a new head over new labels: its own initialisation
        source_state = parent.mods.heads[task].state_dict()
        target = head.state_dict()
        old = parent.labels[task]
        new = encoder_labels(encoders[task])
        last = f"classifier.{len(head.classifier) - 1}."
        for key, value in source_state.items():
            if not key.startswith(last):
                target[key] = value.clone()
                continue
            rows = target[key].clone()
            if mode == "extend":
                start = value.mean(dim=0)
                noise = torch.randn(rows.shape[1:], generator=generator) if rows.ndim > 1 else 0
                scale = 0.01 * value.std() if rows.ndim > 1 else 0
                for index, label in enumerate(new):
                    if label not in old:
                        rows[index] = start + scale * noise
            for index, label in enumerate(new):
                if label in old:
                    rows[index] = value[old.index(label)]
            target[key] = rows
        head.load_state_dict(target)
    freeze_encoder(model.encoder, freeze_encoder_spec)
    for task in frozen_heads or ():
        model.freeze_head(task)
    if mode == "extend" and preserve_old_intents and not isinstance(model.heads["intent"],
                                                                     ExtendedHead):
        intent = encoders["intent"]
        kept = [i for i, label in enumerate(encoder_labels(intent)) if label in parent.labels["intent"]]
        preserve_parent_rows(model.heads["intent"], kept)


def preserve_parent_rows(head, kept_rows) -> None:
    """Train only the new classes' rows of ``head``'s last layer.

    Every other part of the head is frozen, and the gradient of the ``kept_rows``
    is zeroed (with no weight decay on that layer, which would shrink them), so the
    parent's classes keep their exact logits; the new rows learn, from the
    rehearsed clips too, where the new classes differ from the old. On the demo it
    did not help: the old intents fell as far as with the whole head retrained
    (-12.3 points against -12.6), because the new classes win old clips, and the
    new intents reached 0.22 against 0.33. So the forgetting there is not drift of
    the old rows.

    Example
    -------
    >>> import torch
    >>> from multitask.model import TaskHead
    >>> head = TaskHead(num_layers=2, input_size=4, num_classes=3, proj_size=4, hidden_size=4)
    >>> preserve_parent_rows(head, [0, 1])
    >>> head(torch.randn(2, 1, 5, 4), torch.tensor([5])).sum().backward()
    >>> grad = head.classifier[-1].weight.grad
    >>> bool(grad[:2].abs().max() == 0), bool(grad[2].abs().max() > 0)
    (True, True)
    >>> [name for name, p in head.named_parameters() if p.requires_grad]
    ['classifier.4.weight', 'classifier.4.bias']
    """
    import torch

    last = head.classifier[-1]
    for param in head.parameters():
        param.requires_grad = False
    learns = torch.ones(last.out_features, dtype=torch.bool)
    learns[list(kept_rows)] = False
    for param in (last.weight, last.bias):
        param.requires_grad = True
        scale = learns.to(param.dtype).reshape(-1, *([1] * (param.ndim - 1)))
        param.register_hook(lambda grad, scale=scale: grad * scale.to(grad.device))
    last.weight.no_weight_decay = True


# --------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------


def check_same_run(record: dict, identity: dict, mode: str, out, intent_head=None,
                   emotion_replayed=None, kept_temperature=None) -> None:
    """Refuse to resume a run folder that fine-tuned another parent (or in another mode,
    with another intent head design, rehearsing another number of emotion clips, or
    tempering the kept logits by another temperature).

    Its checkpoints would otherwise be loaded over the new parent's weights and the
    run would carry on from them, silently.

    Example
    -------
    >>> check_same_run({}, {"weights_sha256": "ab"}, "replace", "run")   # a new folder
    >>> check_same_run({"parent": {"weights_sha256": "cd"}, "mode": "replace"},
    ...                {"weights_sha256": "ab"}, "replace", "run")
    Traceback (most recent call last):
    ...
    multitask.finetune.FinetuneError: run: this run folder fine-tuned another parent (weights_sha256 cd, now ab); use a new --out, or delete the folder to start over
    """
    previous = record.get("parent")
    if not previous:
        return
    for key in ("weights_sha256", "commit", "source"):
        if previous.get(key) and identity.get(key) and previous[key] != identity[key]:
            raise FinetuneError(
                f"{out}: this run folder fine-tuned another parent ({key} {previous[key]}, "
                f"now {identity[key]}); use a new --out, or delete the folder to start over")
    if record.get("mode") not in (None, mode):
        raise FinetuneError(f"{out}: this run folder was fine-tuned in {record['mode']} mode, "
                            f"not {mode}; use a new --out")
    if intent_head is not None and record.get("intent_head") not in (None, intent_head):
        raise FinetuneError(f"{out}: this run folder's intent head is {record['intent_head']}, "
                            f"not {intent_head} (new_intent_head); use a new --out")
    if emotion_replayed is not None and record.get("emotion_replayed") not in (
            None, emotion_replayed):
        raise FinetuneError(f"{out}: this run folder rehearsed {record['emotion_replayed']} "
                            f"emotion clips (--emotion-replay), not {emotion_replayed}; use a "
                            "new --out")
    previous = (record.get("kept_temperature") or {}).get("setting")
    if (kept_temperature is not None and previous is not None
            and temperature_setting(previous) != temperature_setting(kept_temperature)):
        raise FinetuneError(f"{out}: this run folder tempered the kept logits with "
                            f"kept_temperature {previous}, not {kept_temperature}; use a new "
                            "--out")


def temperature_setting(value):
    """``kept_temperature`` as given, comparable: ``"auto"`` or a float (``2`` == ``2.0``).

    >>> temperature_setting("2"), temperature_setting(2), temperature_setting("auto")
    (2.0, 2.0, 'auto')
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def finetune(source, train, out, *, valid=(), test=None, mode="replace", emotion=None,
             old_intent=None, old_valid=None, replay=(), replay_per_class=None, revision=None,
             emotion_replay=(), parent_repo_id=None, hparams_file=DEFAULT_HPARAMS, overrides=None,
             export=True, repo_id=None) -> dict:
    """Fine-tune ``source`` on new intents; returns the run's ``finetune.json`` record.

    Parameters
    ----------
    source : str
        Exported model folder or Hub repo id.
    train : str
        New-domain training data: a generic CSV (``path,intent[,emotion][,speaker]``)
        or a manifest.
    out : str
        The run folder (rerun the same command to resume).
    valid : list of str
        Validation data (CSV or manifests). Default: 20 % of ``train``, split off by
        speaker when a speaker column is filled in (a generic CSV only).
    test : str, optional
        New-domain test data, scored with the best checkpoint.
    mode : {"replace", "extend"}
    emotion : str, optional
        An emotion-labelled manifest: emotion accuracy of the parent and of the
        fine-tuned model is measured on it (retention).
    old_intent : str, optional
        ``extend``: a manifest of the parent's intents, scored before and after.
    old_valid : str, optional
        ``extend``: held-out clips of the parent's intents (not ``old_intent``'s), on
        which the new intents' logit offset is chosen (``retention_tolerance``).
    replay : list of str
        ``extend``: manifests with the parent's intents, rehearsed during training:
        every row, or at most ``replay_per_class`` of each intent.
    emotion_replay : list of str
        Emotion-labelled manifests rehearsed during training (with a trainable encoder):
        ``task_weights`` gives emotion weight 1 unless overridden.
    revision, parent_repo_id : str, optional
        Hub revision of ``source``; the Hub id a local parent folder was pushed as
        (for the card's ``base_model``).
    hparams_file, overrides
        ``hparams/finetune.yaml`` and ``{key: value}`` overrides (e.g. ``freeze_encoder``;
        ``class_bias_tasks`` and ``class_bias_calls`` fit per-class biases on labelled
        calls after training, :mod:`multitask.class_bias`).
    export : bool
        Export the best checkpoint to ``export_folder`` at the end.
    """
    import speechbrain as sb

    from .class_bias import ClassBiasError, check_calls
    from .class_bias import calibrate as calibrate_class_bias
    from .recipe import load_hparams
    from .train import fit, make_accelerator
    from .train import test as run_test

    if mode not in MODES:
        raise FinetuneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "replace" and (replay or old_intent or old_valid):
        raise FinetuneError("--replay, --old-intent and --old-valid keep the parent's intents: "
                            "use --mode extend")
    out = Path(out).resolve()
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    user = dict(overrides or {})
    seed = int(user.get("seed", 1234))

    parent = load_parent(source, revision, out / "parent")
    parent_labels = parent.labels["intent"]

    # New-domain data -> intent-only manifests; the label set and its checks.
    train_manifest = valid_manifests = None
    if valid:
        train_manifest = prepare_split(train, data_dir, "train", seed)
        valid_manifests = [prepare_split(v, data_dir / f"valid{i}", "valid", seed)
                           for i, v in enumerate(valid)]
    elif is_manifest(train):
        raise FinetuneError(f"{train}: a manifest needs --valid (a generic CSV is split)")
    else:
        train_manifest, valid_manifests = _split_csv(train, data_dir, seed)
    tests = {}
    given = {"new": test, "emotion": emotion, "old_intent": old_intent}  # named in the record
    if test:
        tests["new"] = prepare_split(test, data_dir, "test", seed)
    counts = check_classes([train_manifest], {
        **{f"validation set {i}": v for i, v in enumerate(valid_manifests)}, **tests})
    labels = intent_label_set(parent_labels, counts, mode)
    if mode == "extend" and labels == list(parent_labels):
        raise FinetuneError(f"{train}: every intent in it is already one of the parent's "
                            f"({', '.join(parent_labels)}); extend adds new intents")
    train_manifests = [train_manifest]
    if replay:
        train_manifests.append(replay_manifest(replay, set(parent_labels), replay_per_class,
                                               seed, data_dir / "replay.csv"))
    elif mode == "extend":
        warnings.warn("extend without --replay: the parent's intents are not rehearsed and "
                      "their accuracy may drop; pass --replay with manifests of them", stacklevel=2)
    if emotion_replay:
        train_manifests.append(emotion_replay_manifest(
            emotion_replay, parent.labels["emotion"], data_dir / "emotion_replay.csv", emotion))
    if emotion:
        tests["emotion"] = single_task_copy(emotion, "emotion", data_dir / "emotion.csv")
    if old_intent:
        tests["old_intent"] = single_task_copy(old_intent, "intent", data_dir / "old_intent.csv")
    old_valid_manifest = None
    if old_valid:
        old_valid_manifest = single_task_copy(old_valid, "intent", data_dir / "old_valid.csv")
        _check_parent_intents(old_valid_manifest, parent_labels, old_valid)
    heads = parent_settings(parent)
    # A mapping given on the command line updates the file's, as HyperPyYAML merges it.
    design = hparams_default(hparams_file, "new_intent_head")
    if "new_intent_head" in user:
        override = user["new_intent_head"]
        design = None if override is None else {**(design or {}), **override}
    heads["task_heads"] = new_intent_head(heads["task_heads"], mode, design, len(parent_labels))
    settings = {
        "output_folder": str(out), "parent_source": os.fspath(source),
        "parent_revision": revision, "mode": mode,
        "encoder_source": write_encoder_config(parent, out / "parent_encoder"),
        **heads,
        "train_manifests": [str(p) for p in train_manifests],
        "valid_manifests": [str(p) for p in valid_manifests],
        "test_manifests": {k: str(v) for k, v in tests.items()},
    }
    if emotion_replay:  # emotion weight 1 unless given; merged into the file's mapping
        settings["task_weights"] = {"emotion": 1.0, **(user.pop("task_weights", None) or {})}
    overrides = {**settings, **user}
    hparams = load_hparams(str(hparams_file), overrides)
    if emotion_replay:
        check_emotion_replay(hparams)
    if mode == "extend" and not old_valid and hparams.get("new_intent_offset") is None:
        warnings.warn("extend without --old-valid: the new intents' logits are not offset and "
                      "may take many old-intent clips; pass --old-valid with held-out clips of "
                      "the parent's intents", stacklevel=2)
    accelerator = make_accelerator(hparams)
    sb.create_experiment_directory(experiment_directory=str(out),
                                   hyperparams_to_save=str(hparams_file), overrides=overrides)
    save = Path(hparams["save_folder"])
    save.mkdir(parents=True, exist_ok=True)
    save_label_encoder(save / "label_encoder_intent.txt", labels)
    for task in parent.tasks:
        if task != "intent":
            save_label_encoder(save / f"label_encoder_{task}.txt", parent.labels[task])
    if mode == "extend" and "intent" in (hparams.get("class_bias_tasks") or []):
        raise FinetuneError("class_bias_tasks: extend keeps the parent's intent logits whole, "
                            "so its intent head takes no class biases; calibrate emotion only")
    try:
        check_calls(hparams)  # class biases' calls, before training rather than after it
    except ClassBiasError as err:
        raise FinetuneError(str(err)) from None

    record_path = out / FINETUNE_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    identity = parent_identity(source, revision, parent_repo_id)
    check_same_run(record, identity, mode, out, heads["task_heads"]["intent"],
                   _row_count(train_manifests[-1]) if emotion_replay else 0,
                   hparams.get("kept_temperature", 1.0))
    temperature = resolve_kept_temperature(
        hparams, heads["task_heads"]["intent"], parent, accelerator,
        train_manifests[1] if replay else None, old_valid_manifest,
        recorded=record.get("kept_temperature"))
    if "parent_license" not in record:  # read once, at the revision the weights came from
        record["parent_license"] = parent_license(source, revision)
        if record["parent_license"] is None and not hparams.get("model_license"):
            message = (f"{source}: the parent's model card cannot be read, so its license is "
                       "unknown; the export's card will say `license: unknown` (give "
                       "--model_license=... to state it)")
            warnings.warn(message, stacklevel=2)
            accelerator.print(f"WARNING: {message}")
    record.update({
        "parent": identity,
        "mode": mode,
        "freeze_encoder": hparams.get("freeze_encoder"),
        "frozen_heads": list(hparams.get("frozen_heads") or []),
        "intent_head": heads["task_heads"]["intent"],
        "intent_labels": labels,
        "new_intents": sorted(set(labels) - set(parent_labels)),
        "kept_intents": [label for label in labels if label in parent_labels],
        "shots": dict(sorted(counts.items())),
        "replay_per_class": replay_per_class if replay else None,
        "replayed": _row_count(train_manifests[1]) if replay else 0,
        "emotion_replayed": _row_count(train_manifests[-1]) if emotion_replay else 0,
        "rows_per_class": (hparams.get("train_batching") or {}).get("rows_per_class"),
        "kept_temperature": temperature,
    })
    hparams["init_model"] = functools.partial(hparams["init_model"],
                                              kept_temperature=temperature["temperature"])

    # Retention, before: the parent itself, on the same manifests as after.
    before = record.setdefault("before", {})
    for name, task in (("emotion", "emotion"), ("old_intent", "intent")):
        if name in tests and (before.get(name) or {}).get("manifest") != display_path(given[name]):
            before[name] = _score(parent, tests[name], task, hparams, accelerator,
                                  given[name])

    # Written before training, so a killed run's folder still names its parent.
    if accelerator.is_main_process:
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    fit(hparams, accelerator)
    if mode == "extend" and (old_valid_manifest or hparams.get("new_intent_offset") is not None):
        record["calibration"] = calibrate_new_intents(
            hparams, accelerator, old_valid_manifest, valid_manifests, parent_labels,
            record.get("calibration"), old_valid)
        if accelerator.is_main_process:
            record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    try:
        class_bias = calibrate_class_bias(hparams, accelerator)
    except ClassBiasError as err:
        raise FinetuneError(str(err)) from None
    if class_bias:
        record["class_bias"] = class_bias
        if accelerator.is_main_process:
            record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    results = run_test(hparams, accelerator)

    record["results"] = {}
    if "new" in tests:
        record["results"]["new_intent"] = _figures(results["new"]["intent"], given["new"])
    for name, task in (("emotion", "emotion"), ("old_intent", "intent")):
        if name in tests:
            now = _figures(results[name][task], given[name])
            now["before"] = before[name]["accuracy"]
            now["change"] = now["accuracy"] - now["before"]
            record["results"][name] = now
    threshold = float(hparams.get("emotion_drop_warning", 0.01))
    emotion_result = record["results"].get("emotion")
    if emotion_result:
        emotion_result["warning"] = -emotion_result["change"] > threshold
        if emotion_result["warning"]:
            message = (f"emotion accuracy dropped from {emotion_result['before']:.4f} to "
                       f"{emotion_result['accuracy']:.4f} on {emotion_result['manifest']} "
                       f"(more than {threshold:.2%}); "
                       + ("it includes the emotion class biases fitted on "
                          f"{class_bias['calls']} (without them: 'without_class_bias' in "
                          "test_metrics.json)" if "emotion" in (class_bias or {}).get("tasks", {})
                          else "freeze more of the encoder (--freeze_encoder=all) or lower "
                          "encoder_lr"))
            warnings.warn(message, stacklevel=2)
            accelerator.print(f"WARNING: {message}")
    if accelerator.is_main_process:
        record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
        if export and hparams.get("export_folder"):
            export_model(out, hparams["export_folder"], overwrite=True, repo_id=repo_id)
    return record


def resolve_kept_temperature(hparams, intent_head: dict, parent, accelerator,
                             rehearsed=None, old_valid=None, recorded=None) -> dict:
    """``kept_temperature`` for the record: ``{"setting", "temperature"}``, the temperature
    as given, or (``auto``) measured on the parent, rehearsed clips against
    ``old_valid``'s, with the two NLLs (:func:`multitask.calibration.kept_temperature`);
    a resumed ``auto`` run reuses its ``recorded`` measurement. Refused without an
    extended intent head to temper."""
    from .calibration import kept_temperature

    temperature = hparams.get("kept_temperature", 1.0)
    if str(temperature) != "auto":
        try:
            temperature = float(temperature)
        except (TypeError, ValueError):
            raise FinetuneError(f"kept_temperature must be a number or auto, not "
                                f"{temperature!r}") from None
        if temperature != 1.0 and "kept" not in intent_head:
            raise FinetuneError(f"kept_temperature {temperature}: only an extended intent head "
                                "(--mode extend with a new_intent_head design) has kept logits")
        return {"setting": temperature, "temperature": temperature}
    if "kept" not in intent_head or not (rehearsed and old_valid):
        raise FinetuneError("kept_temperature auto tempers an extended intent head by "
                            "comparing the parent on the rehearsed clips with --old-valid: "
                            "use --mode extend with --replay and --old-valid, or a number")
    if (recorded or {}).get("setting") == "auto":
        measured = recorded  # the same run, resumed: the temperature it trained with
    else:
        measured = {"setting": "auto", **kept_temperature(
            _parent_log_probs(parent, rehearsed, hparams, accelerator, "rehearsed"),
            _parent_log_probs(parent, old_valid, hparams, accelerator, "old valid"))}
    accelerator.print(f"kept logits divided by {measured['temperature']:.2f} while the new "
                      "intents' head trains")
    return measured


def calibrate_new_intents(hparams, accelerator, old_valid, valid_manifests, parent_labels,
                          done=None, shown=None) -> dict:
    """``extend``: offset the new intents' logits in the best checkpoint; the record.

    The offset is ``new_intent_offset`` when set, else chosen on ``old_valid`` by
    :func:`multitask.calibration.choose_offset` with ``retention_tolerance``. It is
    added to the bias of the checkpoint's new rows (so test and export carry it);
    ``done``, the record of an earlier call on the same checkpoint (a resumed run),
    makes this a no-op.
    """
    import torch

    from .calibration import (
        accuracy_with_offset,
        choose_offset,
        log_probs_of,
        trade_off,
    )
    from .checkpoints import rewrite_recoverable
    from .train import evaluate_manifest, load_best

    model, encoders, best = load_best(hparams, accelerator)
    name = os.path.basename(best.path)
    tolerance = float(hparams.get("retention_tolerance", 0.01))
    fixed = hparams.get("new_intent_offset")
    # How the offset is to be chosen; a resumed run whose offset is already in the weights
    # cannot choose it again another way.
    settings = {"old_valid": display_path(shown) if old_valid else None,
                "retention_tolerance": tolerance if old_valid else None,
                "new_intent_offset": None if fixed is None else float(fixed)}
    if done and done.get("checkpoint") == name:
        before = done.get("settings") or _offset_settings_of(done)
        if before != settings:
            raise FinetuneError(
                f"{best.path}: its new intents' offset {done['offset']:+.2f} was chosen with "
                f"{before}, not {settings}; use a new --out to choose it again")
        accelerator.print(f"new intents' offset {done['offset']:+.2f} already in {name}")
        return done
    new = torch.tensor([label not in parent_labels for label in encoder_labels(encoders["intent"])])

    def scored(manifests, desc):
        stats = evaluate_manifest(accelerator, model, manifests, encoders, hparams, desc=desc)
        return log_probs_of(stats["rows"])

    new_valid = scored(valid_manifests, "calibrate: new intents")
    record = {"checkpoint": name, "settings": settings}
    if old_valid:
        old = scored(old_valid, "calibrate: old intents")
        choice = choose_offset(*old, new, tolerance)
        if fixed is not None:
            choice = {"offset": float(fixed), "chosen_on_validation": choice["offset"]}
        record.update({"old_valid": display_path(shown), "tolerance": tolerance, **choice,
                       "trade_off": trade_off(old, new_valid, new)})
        if not choice.get("within_tolerance", True):
            warnings.warn(f"no offset keeps the old intents within {tolerance:.1%} on "
                          f"{display_path(shown)}; the smallest ({choice['offset']}) is used",
                          stacklevel=2)
    else:
        record["offset"] = float(fixed)
    record["new_valid_accuracy"] = accuracy_with_offset(*new_valid, new, record["offset"])
    model.heads["intent"].offset_logits(new, record["offset"])
    if accelerator.is_main_process:
        rewrite_recoverable(best, "heads", model.heads)
    accelerator.wait_for_everyone()
    accelerator.print(f"new intents' logit offset {record['offset']:+.2f} written into {name}")
    return record


def _offset_settings_of(record: dict) -> dict:
    """The settings a calibration record written before they were recorded was made with."""
    fixed = "chosen_on_validation" in record or not record.get("old_valid")
    return {"old_valid": record.get("old_valid"),
            "retention_tolerance": record.get("tolerance"),
            "new_intent_offset": float(record["offset"]) if fixed else None}


def _check_parent_intents(manifest, parent_labels, shown) -> None:
    from .manifest import read_manifest

    foreign = sorted({row["intent"] for row in read_manifest(manifest)} - set(parent_labels))
    if foreign:
        raise FinetuneError(f"--old-valid {shown}: intent(s) {', '.join(foreign)} are not the "
                            "parent's")


def _row_count(manifest) -> int:
    from .manifest import read_manifest

    return len(read_manifest(manifest))


def _split_csv(path, data_dir: Path, seed: int):
    """A generic CSV without --valid: 20 % of it held out (by speaker when given)."""
    from .prepare.generic_csv import prepare_generic_csv

    prepared = prepare_generic_csv(path, data_dir / "prepared_split", seed=seed,
                                   valid_fraction=0.2, test_fraction=0.0, id_prefix="new-")
    return (prepare_split(prepared["train"], data_dir, "train", seed),
            [prepare_split(prepared["valid"], data_dir, "valid", seed)])


def _score(parent, manifest, task, hparams, accelerator, shown) -> dict:
    """The parent's figures for ``task`` on ``manifest`` (the same loop, and the same
    batches, as the test after: ``test_batching``)."""
    stats = _parent_stats(parent, manifest, hparams, accelerator, f"parent {task}",
                          batching=hparams.get("test_batching"))
    return _figures(stats[task], shown)


def _parent_log_probs(parent, manifest, hparams, accelerator, desc):
    """The parent's intent ``(log_probs, targets)`` on ``manifest``."""
    from .calibration import log_probs_of

    return log_probs_of(_parent_stats(parent, manifest, hparams, accelerator,
                                      f"parent: {desc}")["rows"])


def _parent_stats(parent, manifest, hparams, accelerator, desc, batching=None) -> dict:
    """:func:`multitask.train.evaluate_manifest` of the parent model on ``manifest``
    (batched by ``batching``, default ``eval_batching``)."""
    from .model import MultitaskModel
    from .train import evaluate_manifest

    encoders = {t: parent.hparams.label_encoders[t] for t in parent.tasks}
    model = MultitaskModel(parent.mods.encoder, {t: parent.mods.heads[t] for t in parent.tasks})
    model.to(accelerator.device)
    return evaluate_manifest(accelerator, model, manifest, encoders, hparams, desc=desc,
                             batching=batching)


def _figures(report: dict, manifest) -> dict:
    """Accuracy and macro-F1 of one test, the F1 over the labels the test holds (in
    extend, each test holds only part of the run's labels), and the accuracy in each
    voice when the test names its speakers."""
    from .metrics import macro_f1_over_references

    figures = {"manifest": display_path(manifest), "accuracy": report["accuracy"],
               "macro_f1": macro_f1_over_references(report)}
    if "by_speaker" in report:
        figures["by_speaker"] = report["by_speaker"]
    return figures


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def add_parser(subparsers) -> None:
    """Register ``finetune`` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "finetune", help="Fine-tune an exported model on new intents from a few examples",
        description="Start from an exported model (folder or Hub repo id), learn the intents "
                    "of a new CSV (path,intent[,emotion][,speaker]) or manifest, keep the "
                    "emotion head, measure what is retained, export. Extra --key=value "
                    "arguments override hparams/finetune.yaml (e.g. --freeze_encoder=1, "
                    "--number_of_epochs=20).")
    parser.add_argument("--from", dest="source", required=True, metavar="SOURCE",
                        help="exported model folder or Hub repo id")
    parser.add_argument("--revision", help="Hub branch, tag or commit of SOURCE")
    parser.add_argument("--train", required=True, metavar="CSV", help="new-domain training data")
    parser.add_argument("--valid", action="append", default=[], metavar="CSV",
                        help="validation data (repeatable; default: 20%% of --train)")
    parser.add_argument("--test", metavar="CSV", help="new-domain test data")
    parser.add_argument("--mode", choices=MODES, default="replace",
                        help="replace: the new intents only; extend: the parent's and the new")
    parser.add_argument("--emotion", metavar="MANIFEST",
                        help="emotion manifest on which retention is measured (before/after)")
    parser.add_argument("--old-intent", metavar="MANIFEST",
                        help="extend: manifest of the parent's intents, scored before/after")
    parser.add_argument("--old-valid", metavar="MANIFEST",
                        help="extend: held-out clips of the parent's intents, on which the "
                             "new intents' logit offset is chosen")
    parser.add_argument("--replay", action="append", default=[], metavar="MANIFEST",
                        help="extend: manifests of the parent's intents to rehearse")
    parser.add_argument("--emotion-replay", action="append", default=[], metavar="MANIFEST",
                        help="emotion-labelled manifests (the parent's emotion corpus) rehearsed "
                             "while a trainable encoder adapts (needs --freeze_encoder=none|N)")
    parser.add_argument("--replay-per-class", type=int,
                        help="at most this many rehearsed rows per parent intent (default: all)")
    parser.add_argument("--parent-repo-id", help="Hub id of a local SOURCE, for the card")
    parser.add_argument("--repo-id", help="repo id used in the card's usage examples")
    parser.add_argument("--out", required=True, help="run folder (rerun to resume)")
    parser.add_argument("--hparams", default=str(DEFAULT_HPARAMS))
    parser.add_argument("--no-export", dest="export", action="store_false")
    parser.set_defaults(func=_run, takes_overrides=True, overrides=[])


def parse_overrides(extra: list[str]) -> dict:
    """``["--key=value", ...]`` -> ``{key: YAML value}``.

    >>> parse_overrides(["--freeze_encoder=1", "--encoder_lr=1e-5", "--freeze_encoder=all"])
    {'freeze_encoder': 'all', 'encoder_lr': 1e-05}
    """
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")  # YAML 1.2, as HyperPyYAML reads the file: 1e-5 is a float
    overrides = {}
    for item in extra:
        match = re.fullmatch(r"--([A-Za-z_][\w]*)=(.*)", item, flags=re.S)
        if not match:
            raise FinetuneError(f"unknown argument {item!r} (hparams overrides are --key=value)")
        overrides[match.group(1)] = yaml.load(match.group(2))
    return overrides


def _run(args) -> int:
    from .manifest import ManifestError

    try:
        record = finetune(
            args.source, args.train, args.out, valid=args.valid, test=args.test, mode=args.mode,
            emotion=args.emotion, old_intent=args.old_intent, old_valid=args.old_valid,
            replay=args.replay, emotion_replay=args.emotion_replay,
            replay_per_class=args.replay_per_class, revision=args.revision,
            parent_repo_id=args.parent_repo_id, hparams_file=args.hparams,
            overrides=parse_overrides(args.overrides), export=args.export,
            repo_id=args.repo_id)
    except (FinetuneError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(record.get("results", {}), indent=2))
    return 0
