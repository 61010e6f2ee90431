"""The label order each head was trained with, kept inside ``heads.safetensors``.

An export's labels live in ``label_encoder_<task>.txt`` beside the weights. A file whose
lines were reordered, or taken from another run with as many classes, would still load,
and every prediction would carry another class's name. So the export also writes each
task's labels, in class-index order, into the heads file's safetensors metadata, and
loading compares the two.

>>> meta = heads_metadata({"intent": ["balance", "lost_card"]})
>>> meta["labels.intent"]
'["balance", "lost_card"]'
>>> labels_in_metadata(meta)
{'intent': ['balance', 'lost_card']}
>>> label_mismatch(meta, {"intent": ["lost_card", "balance"]})
('intent', ['balance', 'lost_card'])
>>> label_mismatch({"format": "pt"}, {"intent": ["lost_card", "balance"]}) is None
True
"""

from __future__ import annotations

import json

LABELS_KEY_PREFIX = "labels."


def encoder_labels(encoder) -> list[str]:
    """Labels in class-index order from a loaded SpeechBrain ``CategoricalEncoder``."""
    encoder.expect_len(len(encoder.lab2ind))
    return [encoder.ind2lab[i] for i in range(len(encoder.ind2lab))]


def read_metadata(path) -> dict[str, str]:
    """A safetensors file's metadata (``{"format": "pt"}`` if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as tensors:
        return tensors.metadata() or {"format": "pt"}


def heads_metadata(labels: dict[str, list[str]]) -> dict[str, str]:
    """Safetensors metadata for a heads file: the format tag and each task's labels."""
    return {"format": "pt",
            **{f"{LABELS_KEY_PREFIX}{task}": json.dumps(list(names)) for task, names in labels.items()}}


def labels_in_metadata(metadata: dict[str, str] | None) -> dict[str, list[str]]:
    """Each task's labels recorded in a heads file's metadata (none for older exports)."""
    return {key[len(LABELS_KEY_PREFIX):]: json.loads(value)
            for key, value in (metadata or {}).items() if key.startswith(LABELS_KEY_PREFIX)}


def label_mismatch(metadata: dict[str, str] | None,
                   labels: dict[str, list[str]]) -> tuple[str, list[str]] | None:
    """The first task whose loaded ``labels`` differ from those the heads were trained
    with, and the trained ones; None if all agree or the file records none."""
    recorded = labels_in_metadata(metadata)
    for task, names in labels.items():
        if task in recorded and recorded[task] != list(names):
            return task, recorded[task]
    return None
