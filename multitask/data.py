"""Manifests → SpeechBrain datasets → length-aware, task-mixing data loaders.

Each row becomes ``{"id", "sig", "intent_id", "emotion_id"}``: the waveform from
:func:`multitask.audio.load_audio` (mono, 16 kHz, normalised) and one class index
per task, ``IGNORE_INDEX`` where the row has no label for that task. Label
encoders (SpeechBrain's ``CategoricalEncoder``) are built from the training rows,
saved beside the checkpoints, and size the heads.

Rows are checked before any training starts (duplicate ids, missing or unreadable
audio, labels the encoder does not know): all problems are reported together, each
with the row id and path, rather than as a traceback in the middle of an epoch.
:func:`check_manifests` applies these checks to every manifest of a run, test ones
included, and adds those that span manifests: an id in two splits, audio outside
``data_root``, manifests from two versions of one corpus, and a resumed run whose
manifests are not the ones its checkpoints were trained on.
"""

from __future__ import annotations

import functools
import json
import os

import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.data_pipeline import provides, takes
from torch.utils.data import DataLoader

from .audio import AudioInputError, check_file, load_audio, probe_audio
from .ctc import row_targets
from .losses import IGNORE_INDEX
from .manifest import (
    TASKS,
    ManifestError,
    check_one_spelling,
    corpus_version,
    label_set,
    read_manifest,
    read_manifests,
    rows_digest,
)
from .sampling import TaskMixingBatchSampler

MAX_PROBLEMS_SHOWN = 20
SIGNATURE_NAME = "data_signature.json"
# Splits a run trains and selects on; resuming on other rows for these is refused.
SIGNED_SPLITS = ("train", "valid")


def label_encoder_path(folder, task: str) -> str:
    return os.path.join(folder, f"label_encoder_{task}.txt")


def build_label_encoders(rows: list[dict], folder, tasks=TASKS) -> dict:
    """Load the saved encoders from ``folder``, or create them from ``rows``.

    Labels are sorted before encoding so the class order does not depend on row
    order. Once saved, an encoder is reused (a resumed or fine-tuned run keeps its
    indices).

    Example
    -------
    >>> import tempfile
    >>> rows = [{"intent": "lost", "emotion": ""}, {"intent": "block", "emotion": "sad"}]
    >>> encoders = build_label_encoders(rows, tempfile.mkdtemp())
    >>> encoders["intent"].decode_ndim([0, 1]), len(encoders["emotion"])
    (['block', 'lost'], 1)
    """
    os.makedirs(folder, exist_ok=True)
    encoders = {}
    for task in tasks:
        labels = label_set(rows, task)
        check_one_spelling(labels, "the training manifests", f"{task} labels")
        encoder = CategoricalEncoder()
        path = label_encoder_path(folder, task)
        if not os.path.isfile(path) and not labels:
            raise ManifestError(f"no training row carries a {task!r} label")
        encoder.load_or_create(path, from_iterables=[labels])
        encoder.expect_len(len(encoder.lab2ind))  # its size is the head's, by construction
        encoders[task] = encoder
    return encoders


def load_label_encoders(folder, tasks=TASKS) -> dict:
    """Encoders saved by :func:`build_label_encoders`."""
    encoders = {}
    for task in tasks:
        encoder = CategoricalEncoder()
        encoder.load(label_encoder_path(folder, task))
        encoder.expect_len(len(encoder.lab2ind))
        encoders[task] = encoder
    return encoders


def label_index(encoder: CategoricalEncoder, label: str) -> int:
    """Class index, or ``IGNORE_INDEX`` for an empty label."""
    return encoder.lab2ind[label] if label else IGNORE_INDEX


def check_rows(rows: list[dict], encoders: dict, source: str, probe=True, data_root=None) -> None:
    """Raise :class:`ManifestError` listing every row that would fail during training."""
    problems = row_problems(rows, encoders, probe, data_root)
    if problems:
        raise ManifestError(f"{source}: {len(problems)} unusable row(s):\n  {_shown(problems)}")


def row_problems(rows: list[dict], encoders: dict, probe=True, data_root=None,
                 decode=False) -> list[str]:
    """One line per problem: duplicate id, unknown label, audio outside ``data_root``
    (see :func:`allowed_roots`), missing or unreadable audio (``probe``: each header;
    with ``decode`` each whole file, as :func:`multitask.audio.check_file` reads it, so
    silent, too short or non-finite audio is found too)."""
    problems, seen = [], set()
    roots = allowed_roots(data_root)
    for row in rows:
        where = f"id {row['id']!r} ({row['wav']})"
        if row["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(row["id"])
        if encoders and not any(row.get(task) for task in encoders):
            problems.append(f"{where}: no label of the run's tasks ({', '.join(encoders)})")
        for task, encoder in encoders.items():
            if row.get(task) and row[task] not in encoder.lab2ind:
                known = ", ".join(sorted(encoder.lab2ind))
                problems.append(f"{where}: {task} label {row[task]!r} is not one of the "
                                f"{len(encoder.lab2ind)} the model has: {known}")
        if roots:
            real = os.path.realpath(row["wav"])
            if not any(_inside(real, root) for root in roots):
                problems.append(f"{where}: resolves to {real}, outside data_root "
                                f"({', '.join(roots)})")
                continue  # never open a file outside the allowed folders
        if probe:
            try:
                if decode:
                    check_file(row["wav"])
                else:
                    probe_audio(row["wav"])
            except AudioInputError as err:
                problems.append(f"{where}: {err.reason}")
    return problems


def allowed_roots(data_root) -> list[str]:
    """``data_root`` (None, a folder, or a list of folders) as resolved folder paths.

    None allows any path: manifests routinely point at corpora on other disks. Set,
    a row's audio must resolve (``..`` and symlinks followed) inside one of them.
    """
    if data_root is None or data_root == "":
        return []
    roots = [data_root] if isinstance(data_root, (str, os.PathLike)) else list(data_root)
    return [os.path.realpath(os.fspath(root)) for root in roots]


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _shown(problems: list[str]) -> str:
    shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
    more = len(problems) - MAX_PROBLEMS_SHOWN
    return shown + (f"\n  ... and {more} more" if more > 0 else "")


def check_manifests(manifests: dict, encoders: dict, save_folder=None, data_root=None,
                    probe=True) -> None:
    """Check every manifest of a run before training; one :class:`ManifestError` lists all.

    Parameters
    ----------
    manifests : dict
        ``{"train": paths, "valid": paths, "test": paths}``; each a path or a list.
        A file named twice in one role (e.g. a test set scored under two names) is
        read once; one file in two roles (trained and validated on) is refused.
    encoders : dict
        The run's label encoders: every label of every manifest must be one of theirs.
    save_folder : str, optional
        Where the run keeps its checkpoints: ``data_signature.json`` there records the
        train and valid rows, and a run that already saved a checkpoint must resume on
        the same rows (see :func:`check_data_signature`).
    data_root : str or list of str, optional
        Folders the audio must resolve into (see :func:`allowed_roots`).
    probe : bool
        Decode every audio file whole (:func:`multitask.audio.check_file`, 1-3 ms a clip
        on 2 cores: seconds for the demo, under a minute for both real corpora), so a
        missing, silent, too short or non-finite clip is named here, with the rest, not
        met mid-epoch or mid-test hours later.

    Raises
    ------
    ManifestError
        Naming each manifest with its unusable rows (duplicate ids, labels the encoders
        do not know, audio outside ``data_root``, missing or unreadable audio), ids found
        in two splits, and manifests made from two versions of one corpus.
    """
    read = {}  # (role, real path) -> (role, path, rows)
    for role, paths in manifests.items():
        for path in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths or []):
            key = (role, os.path.realpath(os.fspath(path)))
            if key not in read:
                read[key] = (role, os.fspath(path), read_manifest(path))
    problems = []
    for _role, path, rows in read.values():
        found = row_problems(rows, encoders, probe, data_root, decode=True)
        if not rows:
            found.append("no rows")
        problems += [f"{path}: {line}" for line in found]
    problems += _shared_ids(list(read.values()))
    problems += _mixed_corpus_versions([(role, path) for role, path, _ in read.values()])
    if problems:
        raise ManifestError(f"{len(problems)} problem(s) in the manifests; nothing was trained:"
                            f"\n  {_shown(problems)}")
    if save_folder is not None:
        check_data_signature(save_folder, {
            role: [(path, rows) for r, path, rows in read.values() if r == role]
            for role in SIGNED_SPLITS
        })


def _shared_ids(manifests: list[tuple[str, str, list[dict]]]) -> list[str]:
    """An id in two manifests: one row read twice in training, or a test row trained on.

    Two test manifests may share ids (a test set and a subset of it are scored apart).
    """
    problems, owner = [], {}
    for role, path, rows in manifests:
        shared: dict[str, list[str]] = {}
        for row in rows:
            first = owner.setdefault(row["id"], (role, path))
            if first[1] != path and not (role == first[0] == "test"):
                shared.setdefault(f"{first[1]} ({first[0]})", []).append(row["id"])
        for other, ids in shared.items():
            examples = ", ".join(repr(i) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
            problems.append(f"{path} ({role}): {len(ids)} id(s) also in {other}: {examples}")
    return problems


def _mixed_corpus_versions(manifests: list[tuple[str, str]]) -> list[str]:
    """One corpus (a preparer reading the same inputs) must come in one version.

    A generic-CSV train.csv and valid.csv are different inputs, not versions of one.
    """
    versions: dict[tuple, dict[str, list[str]]] = {}
    for role, path in manifests:
        stamp = corpus_version(path)
        if stamp is not None:
            corpus = (stamp["preparer"], *stamp["inputs"])
            versions.setdefault(corpus, {}).setdefault(stamp["version"], []).append(
                f"{path} ({role})")
    return [
        f"{corpus[0]} manifests from {len(by_version)} corpus versions (prepared from different "
        "releases of the corpus; prepare every split from one): "
        + "; ".join(f"version {v}: {', '.join(paths)}" for v, paths in by_version.items())
        for corpus, by_version in versions.items() if len(by_version) > 1
    ]


def data_signature(manifests: dict) -> dict:
    """``{role: [{"manifest", "rows", "digest", "corpus"}, ...]}`` of ``{role: [(path, rows)]}``."""
    return {
        role: [{"manifest": os.path.abspath(path), "rows": len(rows), "digest": rows_digest(rows),
                "corpus": corpus_version(path)} for path, rows in entries]
        for role, entries in manifests.items()
    }


def check_data_signature(save_folder, manifests: dict) -> None:
    """Refuse to resume a run's checkpoints on rows other than those they were trained on.

    ``save_folder/data_signature.json`` records the train and valid rows (ids, labels,
    durations; not where the audio lives). Once a checkpoint exists, rows that differ
    (another corpus version, an edited manifest) raise :class:`ManifestError`: the
    model, its label encoders and its sampler state belong to the old data. Before the
    first checkpoint the record is simply rewritten.
    """
    path = os.path.join(save_folder, SIGNATURE_NAME)
    signature = data_signature(manifests)
    try:
        with open(path, encoding="utf-8") as fin:
            saved = json.load(fin)
    except (OSError, ValueError):
        saved = None
    if saved is not None and _has_checkpoint(save_folder):
        changed = [
            _describe_change(role, saved.get(role, []), signature[role]) for role in signature
            if [e["digest"] for e in saved.get(role, [])] != [e["digest"] for e in signature[role]]
        ]
        if changed:
            raise ManifestError(
                f"{path}: the checkpoints in {save_folder} were trained on other data than "
                "these manifests give:\n  " + "\n  ".join(changed) + "\nResume with the "
                "manifests the run started with, or train into a new output_folder."
            )
    if saved != signature:
        os.makedirs(save_folder, exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fout:
            json.dump(signature, fout, indent=1)
        os.replace(tmp, path)


def _describe_change(role: str, before: list[dict], now: list[dict]) -> str:
    def describe(entries):
        return "; ".join(
            f"{e['manifest']} ({e['rows']} rows"
            + (f", {e['corpus']['preparer']} corpus version {e['corpus']['version']}"
               if e.get("corpus") else "") + ")"
            for e in entries) or "nothing"
    same_shape = [(e["manifest"], e["rows"]) for e in before] == [(e["manifest"], e["rows"])
                                                                 for e in now]
    detail = " (as many rows, but other ids, labels or durations)" if same_shape else ""
    return f"{role}: trained on {describe(before)}; now {describe(now)}{detail}"


def _has_checkpoint(save_folder) -> bool:
    # SpeechBrain names checkpoint folders CKPT+<name>; staging never counts.
    return any(name.startswith("CKPT+") for name in os.listdir(save_folder))


def make_dataset(rows: list[dict], encoders: dict, transcripts: str | None = None
                 ) -> DynamicItemDataset:
    """A ``DynamicItemDataset`` whose items carry ``id``, ``sig`` and ``<task>_id``.

    With ``transcripts`` (a manifest column, e.g. Skit-S2I's ``template``) they carry
    ``tokens`` and ``token_count`` too, the column's characters for the auxiliary CTC
    loss (:mod:`multitask.ctc`); a row without that column or text has a count of 0.
    """
    data = {
        row["id"]: {
            "wav": row["wav"],
            "duration": row["duration"],
            "task": row["task"],
            "text": row.get(transcripts, "") if transcripts else "",
            **{task: row.get(task, "") for task in encoders},
        }
        for row in rows
    }
    dataset = DynamicItemDataset(data)

    @takes("wav")
    @provides("sig")
    def audio_pipeline(wav):
        return load_audio(wav)

    dataset.add_dynamic_item(audio_pipeline)
    for task, encoder in encoders.items():
        dataset.add_dynamic_item(_label_pipeline(task, encoder))
    keys = ["id", "sig", *[f"{task}_id" for task in encoders]]
    if transcripts:
        dataset.add_dynamic_item(row_targets, takes=["text"], provides=["tokens", "token_count"])
        keys += ["tokens", "token_count"]
    dataset.set_output_keys(keys)
    return dataset


def _label_pipeline(task: str, encoder: CategoricalEncoder):
    @takes(task)
    @provides(f"{task}_id")
    def pipeline(label):
        return torch.tensor(label_index(encoder, label), dtype=torch.long)

    return pipeline


def load_split(manifests, encoders: dict, probe=True, rows=None, transcripts=None
               ) -> tuple[DynamicItemDataset, list[dict]]:
    """Read (unless ``rows`` were already read from ``manifests``) and check, then build
    (``transcripts``: see :func:`make_dataset`)."""
    rows = read_manifests(manifests) if rows is None else rows
    if not rows:
        raise ManifestError(f"{manifests}: no rows")
    check_rows(rows, encoders, source=str(manifests), probe=probe)
    if transcripts and not any(row.get(transcripts) for row in rows):
        raise ManifestError(f"{manifests}: no row has a {transcripts!r} transcript for the "
                            "CTC loss (ctc_transcripts); set ctc_weight to 0 or name the "
                            "column that holds them")
    return make_dataset(rows, encoders, transcripts), rows


def make_loader(dataset, rows: list[dict], sampler_options: dict, shuffle: bool, seed: int,
                num_workers=0, shard=None):
    """A DataLoader over ``dataset`` batched by :class:`TaskMixingBatchSampler`.

    ``shard=(process_index, num_processes)`` splits evaluation batches between processes.
    """
    options = dict(sampler_options)
    if not shuffle:
        for key in ("task_ratio", "epoch_size", "rows_per_class"):
            options.pop(key, None)
    if options.get("rows_per_class") is not None:
        options["classes"] = [row_class(row) for row in rows]
    sampler = TaskMixingBatchSampler(
        durations=[row["duration"] for row in rows],
        tasks=[row["task"] for row in rows],
        shuffle=shuffle,
        seed=seed,
        shard=shard,
        **options,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=functools.partial(PaddedBatch, padded_keys=["sig", "tokens"]),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def row_class(row: dict) -> tuple:
    """A row's class for class-balanced sampling: each labelled task with its label.

    >>> row_class({"task": "intent", "intent": "card_block", "emotion": ""})
    (('intent', 'card_block'),)
    """
    return tuple((task, row[task]) for task in TASKS if row.get(task))


def batch_labels(batch, tasks) -> dict:
    """``{task: LongTensor[batch]}`` from a ``PaddedBatch``."""
    return {task: getattr(batch, f"{task}_id") for task in tasks}
