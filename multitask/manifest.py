"""The manifest: one row per utterance, the contract between preparers and training.

Columns (in this order; extra columns are kept after them):

``id``        unique utterance id
``wav``       path to the audio file (absolute, or relative to the manifest's folder)
``duration``  seconds, from the header
``task``      ``intent``, ``emotion`` or ``both``: which labels the row carries
``intent``    intent label name, empty when the row has none
``emotion``   emotion label name, empty when the row has none
``speaker``   speaker (voice, actor) id; used for speaker-disjoint splits
``split``     ``train``, ``valid`` or ``test``

Manifests are CSV (``.csv``) or JSON (``.json``: a mapping from id to the other
columns, SpeechBrain's layout). Both load into the same list of row dicts.

Where a manifest came from: the preparers write ``prepare_options.json`` beside the
manifests they make, recording the digests of the corpus files they read.
:func:`corpus_version` turns that record into a short version id, so manifests made
from two different releases of one corpus can be told apart;
:func:`rows_digest` fingerprints the rows themselves (ids, labels, durations, not
where the audio lives), which is what a training run remembers of its data.

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "m.csv")
>>> write_manifest(path, [{"id": "a", "wav": "a.wav", "duration": 1.5, "task": "intent",
...                        "intent": "block", "speaker": "s1", "split": "train"}])
>>> rows = read_manifest(path)
>>> rows[0]["emotion"], rows[0]["duration"], rows[0]["wav"] == os.path.join(os.path.dirname(path), "a.wav")
('', 1.5, True)
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable

COLUMNS = ("id", "wav", "duration", "task", "intent", "emotion", "speaker", "split")
TASKS = ("intent", "emotion")
SPLITS = ("train", "valid", "test")
# Written beside its manifests by :func:`multitask.prepare.common.run_preparer`.
PREPARATION_RECORD = "prepare_options.json"


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and the rows."""


# The task column's values (task_of's answers).
TASK_VALUES = ("intent", "emotion", "both")


def task_of(intent: str, emotion: str) -> str:
    """The ``task`` column for a row with these labels."""
    if intent and emotion:
        return "both"
    if intent:
        return "intent"
    if emotion:
        return "emotion"
    raise ValueError("a row needs an intent or an emotion label")


def label_set(rows, task: str) -> list[str]:
    """The class names of ``task`` in ``rows``, sorted: the one rule for class order.

    >>> label_set([{"intent": "lost"}, {"intent": ""}, {"intent": "block"}], "intent")
    ['block', 'lost']
    """
    return sorted({row[task] for row in rows if row.get(task)})


def label_key(label: str, word_order: bool = False) -> tuple[str, ...]:
    """Words of a label, lower-cased, sorted unless ``word_order``: labels with one key
    name one class.

    >>> label_key("card_lost") == label_key("Lost card"), label_key("block")
    (True, ('block',))
    >>> label_key("a_to_b", word_order=True) == label_key("b_to_a", word_order=True)
    False
    """
    words = re.findall(r"[a-z0-9]+", label.lower())
    return tuple(words if word_order else sorted(words))


def check_one_spelling(labels, where: str, what: str = "labels") -> None:
    """Refuse two of ``labels`` that differ only in case, spacing or punctuation (one
    class spelled two ways, which training would learn as two); ``where`` and ``what``
    name them. Words in another order are other classes (``transfer_a_to_b``).

    >>> check_one_spelling(["low", "high"], "train.csv")
    >>> check_one_spelling(["low", "high", "Low "], "train.csv", "intent labels")
    Traceback (most recent call last):
    ...
    multitask.manifest.ManifestError: train.csv: intent labels 'low' and 'Low ' differ only in case, spacing or punctuation: one class spelled two ways would be learnt as two; use one spelling
    """
    seen: dict[tuple, str] = {}
    for label in labels:
        other = seen.setdefault(label_key(label, word_order=True), label)
        if other != label:
            raise ManifestError(f"{where}: {what} {other!r} and {label!r} differ only in case, "
                                "spacing or punctuation: one class spelled two ways would be "
                                "learnt as two; use one spelling")


def write_manifest(path, rows: Iterable[dict]) -> None:
    """Write rows as CSV or JSON (by extension); missing columns are left empty."""
    rows = [dict(row) for row in rows]
    extra = [key for row in rows for key in row if key not in COLUMNS]
    fields = list(COLUMNS) + list(dict.fromkeys(extra))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    if str(path).endswith(".json"):
        data = {row["id"]: {k: row.get(k, "") for k in fields if k != "id"} for row in rows}
        with open(tmp, "w", encoding="utf-8") as fout:
            json.dump(data, fout, indent=1, ensure_ascii=False)
    else:
        with open(tmp, "w", newline="", encoding="utf-8") as fout:
            writer = csv.DictWriter(fout, fieldnames=fields)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: row.get(k, "") for k in fields})
    os.replace(tmp, path)


def read_manifest(path) -> list[dict]:
    """Read a CSV or JSON manifest; relative ``wav`` paths resolve against its folder."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ManifestError(f"{path}: a folder, not a manifest (give its train.csv, ...)"
                            if os.path.isdir(path) else f"{path}: manifest not found")
    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as fin:
                rows = _json_rows(path, json.load(fin))
        else:
            # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark
            with open(path, newline="", encoding="utf-8-sig") as fin:
                reader = csv.DictReader(fin)
                twice = repeated_columns(reader.fieldnames or [])
                if twice:  # DictReader would keep the last column of each name, silently
                    raise ManifestError(f"{path}: {twice}")
                rows = list(reader)
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: not a readable manifest ({err})") from None
    if rows:
        missing = [c for c in ("id", "wav", "duration") if c not in rows[0]]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        if not any(task in rows[0] for task in TASKS):
            raise ManifestError(f"{path}: no intent or emotion column (columns: "
                                f"{', '.join(map(str, rows[0]))})")
    root = os.path.dirname(os.path.abspath(path))
    for number, row in enumerate(rows, start=2):
        if None in row or None in row.values():  # csv.DictReader's marks of a ragged row
            raise ManifestError(f"{path}: row {number} has "
                                f"{'more' if None in row else 'fewer'} fields than the header")
        for column in COLUMNS:
            row[column] = "" if row.get(column) is None else str(row.get(column, ""))
        if not row["wav"].strip():
            raise ManifestError(f"{path}: row {number} (id {row['id']!r}) has no wav path")
        row["wav"] = os.path.join(root, row["wav"])
        try:
            row["duration"] = float(row["duration"])
        except ValueError:
            raise ManifestError(
                f"{path}: row {number} (id {row['id']!r}) has a non-numeric duration "
                f"{row['duration']!r}"
            ) from None
        if not 0 <= row["duration"] < math.inf:  # nan too
            raise ManifestError(f"{path}: row {number} (id {row['id']!r}) has duration "
                                f"{row['duration']}; a duration is a finite number of seconds, "
                                "0 or more")
        if row["task"] and row["task"] not in TASK_VALUES:
            raise ManifestError(f"{path}: row {number} (id {row['id']!r}) has task "
                                f"{row['task']!r}; the task column is one of "
                                f"{', '.join(TASK_VALUES)}, or empty (then it follows the labels)")
        if not row["task"]:
            if not (row["intent"] or row["emotion"]):
                raise ManifestError(f"{path}: row {number} (id {row['id']!r}) has neither an "
                                    "intent nor an emotion label")
            row["task"] = task_of(row["intent"], row["emotion"])
    return rows


def repeated_columns(header) -> str:
    """What is wrong with a CSV header that names a column twice ("" when nothing is): a
    row read into a dict keeps only the last such column. Empty names (a spreadsheet's
    trailing empty columns) do not count.

    >>> repeated_columns(["id", "intent", "intent", "", ""])
    "column(s) 'intent' appear more than once in the header"
    """
    twice = sorted({name for name in header if name and list(header).count(name) > 1})
    return (f"column(s) {', '.join(map(repr, twice))} appear more than once in the header"
            if twice else "")


def _json_rows(path, data) -> list[dict]:
    """Rows of a JSON manifest, ``{id: {column: value}}``, refusing any other shape and
    null values (a JSON manifest has no header for a short row to fall short of)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a JSON manifest is an object of entries by id, not a "
                            f"{type(data).__name__}")
    rows = []
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ManifestError(f"{path}: entry {key!r} is not an object of columns")
        empty = [column for column, field in value.items() if field is None]
        if empty:
            raise ManifestError(f"{path}: entry {key!r} has no value (null) for "
                                f"{', '.join(empty)}")
        rows.append({"id": key, **value})
    return rows


def manifest_paths(value) -> list:
    """A manifest setting as a list of paths: one path, a list of them, or none.

    >>> manifest_paths("train.csv"), manifest_paths(["a.csv", "b.csv"]), manifest_paths(None)
    (['train.csv'], ['a.csv', 'b.csv'], [])
    """
    if value is None:
        return []
    return [value] if isinstance(value, (str, os.PathLike)) else list(value)


def read_manifests(paths) -> list[dict]:
    """Concatenate the rows of one or several manifests (duplicate ids are checked
    by the training data checks, which report every bad row at once)."""
    return [row for path in manifest_paths(paths) for row in read_manifest(path)]


def corpus_version(path) -> dict | None:
    """``{"preparer", "inputs", "version"}`` of the corpus a manifest was prepared from, or None.

    The version digests what the preparer recorded of its inputs (label files, the
    audio folder's listing) and its output format, not where the corpus lives or how
    it was split: the same release moved to another disk has the same version, and
    a release with one file added, removed or relabelled has another. Manifests made
    without a preparer (no record beside them) have none.
    """
    record_path = os.path.join(os.path.dirname(os.path.abspath(path)), PREPARATION_RECORD)
    try:
        with open(record_path, encoding="utf-8") as fin:
            record = json.load(fin)
        stamp = {"format_version": record["format_version"], "inputs": record["inputs"]}
        preparer = str(record["preparer"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    digest = hashlib.sha256(json.dumps(stamp, sort_keys=True).encode("utf-8")).hexdigest()
    # What was read (e.g. Skit-S2I's label files, a bank's train.csv): two versions of
    # one corpus read the same names; a generic preparer's train.csv and valid.csv do not.
    return {"preparer": preparer, "inputs": sorted(record["inputs"]), "version": digest[:12]}


def rows_digest(rows) -> str:
    """SHA-256 of what training reads from rows, independent of row order and audio location.

    >>> a = [{"id": "u1", "wav": "/x/u1.wav", "duration": 1.0, "task": "intent",
    ...       "intent": "lost", "emotion": "", "split": "train"}]
    >>> rows_digest(a) == rows_digest([dict(a[0], wav="/elsewhere/u1.wav")])
    True
    >>> rows_digest(a) == rows_digest([dict(a[0], intent="block")])
    False
    """
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda row: row["id"]):
        fields = (row["id"], f"{float(row['duration']):.3f}", row.get("task", ""),
                  *(row.get(task, "") for task in TASKS), row.get("split", ""))
        digest.update("\t".join(fields).encode("utf-8") + b"\n")
    return digest.hexdigest()


def single_task_rows(manifest, task: str) -> list[dict]:
    """The rows of ``manifest`` that carry ``task``'s label, with only that label kept
    (e.g. calls labelled with both tasks, scored for one whose other labels a model
    does not have)."""
    other = next(t for t in TASKS if t != task)
    rows = [dict(row, **{other: "", "task": task}) for row in read_manifest(manifest)
            if row.get(task)]
    if not rows:
        raise ManifestError(f"{manifest}: no row has an {task} label")
    return rows


def single_task_copy(manifest, task: str, out_path) -> str:
    """``manifest`` with only ``task``'s labels kept (rows without it dropped)."""
    write_manifest(out_path, single_task_rows(manifest, task))
    return os.fspath(out_path)
