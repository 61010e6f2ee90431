"""The run's data: new-domain CSVs or manifests as intent-only manifests, the
rehearsed rows of the parent's intents and emotions, and the checks on classes."""

from __future__ import annotations

import csv
import io
import os
import random
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..manifest import single_task_copy, single_task_rows
from .labels import intent_label_set
from .parent import FinetuneError


def read_header(path) -> list[str]:
    """The column names of the CSV at ``path``, with a clear error for a path that is not
    a readable UTF-8 file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FinetuneError(f"{path}: not found")
    if not os.path.isfile(path):
        raise FinetuneError(f"{path}: a folder, not a CSV file")
    from ..prepare.common import CorpusError, read_csv_text

    try:
        text = read_csv_text(path)
    except CorpusError as err:
        raise FinetuneError(str(err)) from None
    return [c.strip() for c in next(csv.reader(io.StringIO(text, newline="")), [])]


def is_manifest(path) -> bool:
    """A package manifest (``id,wav,duration,...``) rather than a generic ``path,intent`` CSV."""
    if str(path).endswith(".json"):
        return True
    return {"id", "wav", "duration"} <= set(read_header(path))


def check_intent_labels(path) -> None:
    """Refuse a generic CSV without an ``intent`` column, or with a row without an intent:
    new intents are learnt from every row of it."""
    header = read_header(path)
    if "intent" not in header:
        raise FinetuneError(f"{path}: no 'intent' column (columns: {', '.join(header) or 'none'});"
                            " new intents are learnt from a CSV path,intent[,emotion][,speaker]")
    with open(path, newline="", encoding="utf-8-sig") as fin:
        unlabelled = [(number, row.get("path") or "") for number, row
                      in enumerate(csv.DictReader(fin), start=2)
                      if not (row.get("intent") or "").strip()]
    if unlabelled:
        number, wav = unlabelled[0]
        raise FinetuneError(f"{path}: {len(unlabelled)} row(s) without an intent (e.g. line "
                            f"{number}, {wav!r}); every row needs one")


def _csv_labels(path) -> Counter:
    with open(path, newline="", encoding="utf-8-sig") as fin:
        return Counter((row.get("intent") or "").strip() for row in csv.DictReader(fin))


def check_nothing_lost(csv_path, rows, rejected_csv) -> None:
    """Refuse when an intent of ``csv_path`` has no row left in ``rows`` (the prepared
    manifests' rows): every recording of it was rejected."""
    lost = set(_csv_labels(csv_path)) - {row["intent"] for row in rows} - {""}
    if lost:
        raise FinetuneError(f"{csv_path}: intent(s) {', '.join(sorted(lost))} have no usable "
                            f"recording left (see {rejected_csv})")


def prepare_split(path, out_dir, split: str, seed: int, shown=None) -> str:
    """An intent-only manifest of ``split`` from a generic CSV or a manifest.

    Emotion labels are dropped (only intents are learnt); a row without an intent
    label, or an intent whose every row was rejected, is an error. Errors name
    ``shown`` (default: ``path``).
    """
    from ..manifest import read_manifest, write_manifest
    from ..prepare.generic_csv import prepare_generic_csv

    path = os.fspath(path)
    shown = shown or path
    if is_manifest(path):
        rows = read_manifest(path)
    else:
        check_intent_labels(path)
        folder = os.path.join(out_dir, f"prepared_{split}")
        prepared = prepare_generic_csv(path, folder, seed=seed, split_as=split,
                                       id_prefix=f"{split}-")
        rows = read_manifest(prepared[split])
        check_nothing_lost(path, rows, os.path.join(folder, "rejected.csv"))
    unlabelled = [row["id"] for row in rows if not row["intent"]]
    if unlabelled:
        raise FinetuneError(f"{shown}: {len(unlabelled)} row(s) without an intent label "
                            f"(e.g. {', '.join(unlabelled[:3])}); every row needs one")
    if not rows:
        raise FinetuneError(f"{shown}: no rows")
    for row in rows:
        row.update(emotion="", task="intent", split=split)
    out = os.path.join(out_dir, f"{split}.csv")
    write_manifest(out, rows)
    return out


def replay_manifest(manifests, labels, per_class: int | None, seed: int, out_path) -> str:
    """The rows of ``manifests`` with one of the parent's intents (at most ``per_class``
    of each, drawn with ``seed``; ``None``: all): rehearsal, so that ``extend`` keeps
    the old intents while it learns the new."""
    from ..manifest import read_manifests, write_manifest

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
    from ..manifest import read_manifest, write_manifest

    if not labels:
        raise FinetuneError(f"--emotion-replay {', '.join(map(str, manifests))}: the parent has "
                            "no emotion head to rehearse; drop --emotion-replay")
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


def check_classes(train_manifests, other_manifests: dict, train_shown) -> Counter:
    """Rows per intent in training; raise if a class of ``other_manifests`` (``{name shown
    in errors: manifest}``) has none in ``train_shown`` (the training data as given)."""
    from ..manifest import read_manifests

    counts = Counter(row["intent"] for row in read_manifests(train_manifests))
    for name, manifest in other_manifests.items():
        empty = sorted({row["intent"] for row in read_manifests(manifest)
                        if row["intent"]} - set(counts))
        if empty:
            raise FinetuneError(f"{name}: intent(s) {', '.join(empty)} have no training "
                                f"example in {train_shown} (empty class)")
    return counts


def check_parent_intents(manifest, parent_labels, shown) -> None:
    """Refuse ``--old-valid`` clips (``shown``: the path as given) of intents the parent
    does not have: they cannot say what the parent's intents lose."""
    from ..manifest import read_manifest

    foreign = sorted({row["intent"] for row in read_manifest(manifest)} - set(parent_labels))
    if foreign:
        raise FinetuneError(f"--old-valid {shown}: intent(s) {', '.join(foreign)} are not the "
                            "parent's")


def check_parent_emotions(manifest, emotion_labels, shown) -> None:
    """Refuse an ``--emotion`` retention manifest (``shown``: the path as given) with
    emotions the parent's head does not have: it cannot be scored on them."""
    from ..manifest import read_manifest

    if not emotion_labels:
        raise FinetuneError(f"--emotion {shown}: the parent has no emotion head to score")
    foreign = sorted({row["emotion"] for row in read_manifest(manifest)} - set(emotion_labels))
    if foreign:
        raise FinetuneError(f"--emotion {shown}: emotion label(s) {', '.join(foreign)} are not "
                            f"the parent's ({', '.join(emotion_labels)})")


def row_count(manifest) -> int:
    """Rows in ``manifest`` (for the record: how many clips were rehearsed)."""
    from ..manifest import read_manifest

    return len(read_manifest(manifest))


def split_csv(path, data_dir: Path, seed: int):
    """A generic CSV without --valid: 20 % of it held out (by speaker when given)."""
    from ..manifest import read_manifests
    from ..prepare.generic_csv import prepare_generic_csv

    check_intent_labels(path)
    folder = data_dir / "prepared_split"
    prepared = prepare_generic_csv(path, folder, seed=seed, valid_fraction=0.2,
                                   test_fraction=0.0, id_prefix="new-")
    check_nothing_lost(path, read_manifests([prepared["train"], prepared["valid"]]),
                       folder / "rejected.csv")
    return (prepare_split(prepared["train"], data_dir, "train", seed, shown=path),
            [prepare_split(prepared["valid"], data_dir, "valid", seed,
                           shown=f"the validation part held out of {path}")])


@dataclass
class RunData:
    """A run's manifests (intent-only, or emotion-only for emotion rehearsal and retention)
    and what was read from them."""

    train: list[str]               # the new-domain rows, then each rehearsed manifest
    valid: list[str]
    tests: dict[str, str]          # new / emotion / old_intent: the run's copies
    given: dict[str, str | None]   # the same, as the caller named them (for the record)
    counts: Counter                # training rows per new-domain intent
    labels: list[str]              # the run's intent classes, in index order
    old_valid: str | None = None   # extend: held-out clips of the parent's intents
    replayed: str | None = None    # extend: the parent's intents, rehearsed
    emotion_replayed: str | None = None


def prepare_run_data(parent_labels, emotion_labels, train, data_dir: Path, seed: int, *,
                     mode, valid=(), test=None, emotion=None, old_intent=None, old_valid=None,
                     replay=(), replay_per_class=None, emotion_replay=()) -> RunData:
    """Every manifest a run reads, written under ``data_dir``, with the checks on them:
    new-domain data as intent-only manifests (``valid`` or, for a generic CSV, 20 % of
    ``train``), the run's intent label set, the rehearsed rows and the retention tests.
    Arguments as :func:`~multitask.finetune.run.finetune` takes them."""
    train_manifest = valid_manifests = None
    if valid:
        train_manifest = prepare_split(train, data_dir, "train", seed)
        valid_manifests = [prepare_split(v, data_dir / f"valid{i}", "valid", seed)
                           for i, v in enumerate(valid)]
    elif is_manifest(train):
        raise FinetuneError(f"{train}: a manifest needs --valid (a generic CSV is split)")
    else:
        train_manifest, valid_manifests = split_csv(train, data_dir, seed)
    tests = {}
    given = {"new": test, "emotion": emotion, "old_intent": old_intent}  # named in the record
    if test:
        tests["new"] = prepare_split(test, data_dir, "test", seed)
    if valid:
        valid_names, train_shown = [f"--valid {v}" for v in valid], train
    else:
        valid_names = [f"the validation part held out of {train} (20%, by speaker when the CSV "
                       "names speakers; or give --valid)"]
        train_shown = f"the part of {train} kept for training"
    counts = check_classes([train_manifest], {
        **dict(zip(valid_names, valid_manifests, strict=True)),
        **({f"--test {test}": tests["new"]} if test else {})}, train_shown)
    labels = intent_label_set(parent_labels, counts, mode, source=train)
    if mode == "extend" and labels == list(parent_labels):
        raise FinetuneError(f"{train}: every intent in it is already one of the parent's "
                            f"({', '.join(parent_labels)}); extend adds new intents")
    replayed = emotion_replayed = None
    if replay:
        replayed = replay_manifest(replay, set(parent_labels), replay_per_class, seed,
                                   data_dir / "replay.csv")
    elif mode == "extend":
        warnings.warn("extend without --replay: the parent's intents are not rehearsed and "
                      "their accuracy may drop; pass --replay with manifests of them", stacklevel=3)
    if emotion_replay:
        emotion_replayed = emotion_replay_manifest(
            emotion_replay, emotion_labels, data_dir / "emotion_replay.csv", emotion)
    if emotion:
        tests["emotion"] = single_task_copy(emotion, "emotion", data_dir / "emotion.csv")
        check_parent_emotions(tests["emotion"], emotion_labels, emotion)
    if old_intent:
        tests["old_intent"] = single_task_copy(old_intent, "intent", data_dir / "old_intent.csv")
    old_valid_manifest = None
    if old_valid:
        old_valid_manifest = single_task_copy(old_valid, "intent", data_dir / "old_valid.csv")
        check_parent_intents(old_valid_manifest, parent_labels, old_valid)
    return RunData(
        train=[m for m in (train_manifest, replayed, emotion_replayed) if m],
        valid=valid_manifests, tests=tests, given=given, counts=counts, labels=labels,
        old_valid=old_valid_manifest, replayed=replayed, emotion_replayed=emotion_replayed)
