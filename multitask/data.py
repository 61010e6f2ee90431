"""Manifests → SpeechBrain datasets → length-aware, task-mixing data loaders.

Each row becomes ``{"id", "sig", "intent_id", "emotion_id"}``: the waveform from
:func:`multitask.audio.load_audio` (mono, 16 kHz, normalised) and one class index
per task, ``IGNORE_INDEX`` where the row has no label for that task. Label
encoders (SpeechBrain's ``CategoricalEncoder``) are built from the training rows,
saved beside the checkpoints, and size the heads.

Rows are checked before any training starts (duplicate ids, missing or unreadable
audio, labels the encoder does not know): all problems are reported together, each
with the row id and path, rather than as a traceback in the middle of an epoch.
"""

from __future__ import annotations

import functools
import os

import torch
from speechbrain.dataio.batch import PaddedBatch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CategoricalEncoder
from speechbrain.utils.data_pipeline import provides, takes
from torch.utils.data import DataLoader

from .audio import AudioInputError, load_audio, probe_audio
from .losses import IGNORE_INDEX
from .manifest import TASKS, ManifestError, label_set, read_manifests
from .sampling import TaskMixingBatchSampler

MAX_PROBLEMS_SHOWN = 20


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


def check_rows(rows: list[dict], encoders: dict, source: str, probe=True) -> None:
    """Raise :class:`ManifestError` listing every row that would fail during training."""
    problems, seen = [], set()
    for row in rows:
        where = f"id {row['id']!r} ({row['wav']})"
        if row["id"] in seen:
            problems.append(f"{where}: duplicate id")
        seen.add(row["id"])
        for task, encoder in encoders.items():
            if row.get(task) and row[task] not in encoder.lab2ind:
                known = ", ".join(sorted(encoder.lab2ind))
                problems.append(f"{where}: {task} label {row[task]!r} is not one of: {known}")
        if probe:
            try:
                probe_audio(row["wav"])
            except AudioInputError as err:
                problems.append(f"{where}: {err.reason}")
    if problems:
        shown = "\n  ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise ManifestError(f"{source}: {len(problems)} unusable row(s):\n  {shown}{tail}")


def make_dataset(rows: list[dict], encoders: dict) -> DynamicItemDataset:
    """A ``DynamicItemDataset`` whose items carry ``id``, ``sig`` and ``<task>_id``."""
    data = {
        row["id"]: {
            "wav": row["wav"],
            "duration": row["duration"],
            "task": row["task"],
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
    dataset.set_output_keys(["id", "sig", *[f"{task}_id" for task in encoders]])
    return dataset


def _label_pipeline(task: str, encoder: CategoricalEncoder):
    @takes(task)
    @provides(f"{task}_id")
    def pipeline(label):
        return torch.tensor(label_index(encoder, label), dtype=torch.long)

    return pipeline


def load_split(manifests, encoders: dict, probe=True, rows=None) -> tuple[DynamicItemDataset, list[dict]]:
    """Read (unless ``rows`` were already read from ``manifests``) and check, then build."""
    rows = read_manifests(manifests) if rows is None else rows
    if not rows:
        raise ManifestError(f"{manifests}: no rows")
    check_rows(rows, encoders, source=str(manifests), probe=probe)
    return make_dataset(rows, encoders), rows


def make_loader(dataset, rows: list[dict], sampler_options: dict, shuffle: bool, seed: int,
                num_workers=0, shard=None):
    """A DataLoader over ``dataset`` batched by :class:`TaskMixingBatchSampler`.

    ``shard=(process_index, num_processes)`` splits evaluation batches between processes.
    """
    options = dict(sampler_options)
    if not shuffle:
        options.pop("task_ratio", None)
        options.pop("epoch_size", None)
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
        collate_fn=functools.partial(PaddedBatch, padded_keys=["sig"]),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


def batch_labels(batch, tasks) -> dict:
    """``{task: LongTensor[batch]}`` from a ``PaddedBatch``."""
    return {task: getattr(batch, f"{task}_id") for task in tasks}
