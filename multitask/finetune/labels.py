"""The run's intent label set: the new labels alone, or the parent's with the new ones
appended; labels that differ from each other only in spelling are refused. The label
files the run's checkpoints are read with are written here too."""

from __future__ import annotations

import os

from ..head_labels import encoder_labels
from ..manifest import ManifestError, check_one_spelling, label_key
from .parent import FinetuneError

MODES = ("replace", "extend")


def _check_unambiguous(labels, where: str) -> None:
    try:
        check_one_spelling(labels, where, "intents")
    except ManifestError as err:
        raise FinetuneError(str(err)) from None


def intent_label_set(parent_labels: list[str], new_labels, mode: str, source=None) -> list[str]:
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
    multitask.finetune.parent.FinetuneError: new intent 'Block' and the parent's intent 'block' differ only in case, spacing, punctuation or word order: name it 'block' if it is the same intent, or give it a clearly different name
    """
    if mode not in MODES:
        raise FinetuneError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    new_labels = sorted(set(new_labels))
    _check_unambiguous(new_labels, source or "the new training data")
    if mode == "replace":
        return new_labels
    old = {label_key(label): label for label in parent_labels}
    for label in new_labels:
        match = old.get(label_key(label))
        if match is not None and match != label:
            raise FinetuneError(
                (f"{source}: " if source else "")
                + f"new intent {label!r} and the parent's intent {match!r} differ only in case, "
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
