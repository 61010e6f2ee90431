"""The parent model: loaded, checked, described (architecture, identity, license).

A fine-tuning run starts from an exported model folder or a Hub repo id; this module
loads it as a :class:`~multitask.inference.MultitaskClassifier`, turns its encoder
config and head designs into the run's model settings, and records which exact model
it was (for the card's ``base_model`` and for refusing to resume over another parent).
:class:`FinetuneError`, the package's one error, is defined here, where the others import
it from.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..card import display_path
from ..export import CARD_FILE, HPARAMS_FILE, WEIGHTS_FILES
from ..source import FOLDER, HUB, ModelNotFoundError, check_model_source, source_kind


class FinetuneError(ValueError):
    """A fine-tuning that cannot start; the message names the file or labels at fault."""


def check_parent_folder(source, revision=None) -> None:
    """Raise :class:`FinetuneError` unless a local ``source`` is a ``multitask export``
    folder (not a training run), asked for no revision."""
    folder = Path(source)
    if not folder.is_dir():
        raise FinetuneError(f"{folder}: not a folder")
    try:
        check_model_source(os.fspath(folder), revision=revision)
    except ModelNotFoundError as err:
        raise FinetuneError(str(err)) from None
    hparams = folder / HPARAMS_FILE
    text = hparams.read_text(encoding="utf-8") if hparams.is_file() else ""
    if "multitask.inference" not in text:
        raise FinetuneError(f"{folder}: not a multitask model folder: no hyperparams.yaml "
                            "written by `multitask export`")
    missing = [name for name in (*WEIGHTS_FILES.values(), "label_encoder_intent.txt")
               if not (folder / name).is_file()]
    if missing:
        raise FinetuneError(f"{folder}: not a complete multitask model (missing "
                            f"{', '.join(missing)})")


def load_parent(source, revision=None, savedir=None):
    """The parent as a :class:`MultitaskClassifier` on the CPU (folder or Hub repo id)."""
    from ..inference import MultitaskClassifier, load_failure

    try:
        kind = source_kind(source)
    except ModelNotFoundError as err:
        raise FinetuneError(str(err)) from None
    if kind == FOLDER:
        check_parent_folder(source, revision)
    try:
        parent = MultitaskClassifier.from_hparams(
            source=source, revision=revision, savedir=savedir, run_opts={"device": "cpu"},
            optimize=None)  # its modules are trained further: keep them as built
    except Exception as err:
        raise FinetuneError(load_failure(source, err)) from err
    if "intent" not in parent.tasks:
        raise FinetuneError(f"{source}: the model has no intent head (tasks {list(parent.tasks)})")
    return parent


def parent_settings(parent) -> dict:
    """The run's head settings: each of the parent's heads as it was built.

    ``task_heads`` holds every head's architecture (dropout aside: the run's
    ``head_dropout`` applies), so the parent's weights fit the run's heads.
    """
    from ..model import head_architecture

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


def write_encoder_config(parent, folder) -> str:
    """The parent's wav2vec2 config as ``folder/config.json`` (a config-only folder:
    random weights, replaced by the parent's in
    :func:`~multitask.finetune.weights.init_from_parent`)."""
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
