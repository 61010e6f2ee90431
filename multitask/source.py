"""Where a model comes from: a folder on this machine, a Hub repo, or a web address.

SpeechBrain's fetch decides which of the three a ``source`` string is
(:func:`speechbrain.utils.fetching.guess_source`): an existing folder, then an
``http(s)://`` address, and anything else is sent to the Hub. This module asks it once
for everyone who loads a model (:mod:`multitask.inference`, the trust check in
:mod:`multitask.trust`, :mod:`multitask.finetune`), so they cannot disagree, and adds
what the fetch lacks: a source that can be none of the three (a mistyped path, a file)
is refused by name before anything is fetched, and a miss on the Hub is told in one line
instead of as huggingface_hub's rules for repo ids.
"""

from __future__ import annotations

import os

from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id
from speechbrain.utils.fetching import FetchFrom, guess_source

FOLDER, HUB, URL = "folder", "hub", "url"
# Written into a ``savedir`` once loading filled it: which source (and revision) it holds.
SAVEDIR_SOURCE_FILE = ".multitask-source"
# Written into a training run's output_folder before anything else: the folder is a run's.
RUN_MARKER = ".multitask-run"
_KINDS = {FetchFrom.LOCAL: FOLDER, FetchFrom.HUGGING_FACE: HUB, FetchFrom.URI: URL}


class ModelNotFoundError(FileNotFoundError):
    """No model where a ``source`` points; the message says why, and names the source."""


class BrokenModelError(ValueError):
    """A model folder whose files are there but cannot be read (truncated, corrupt, or
    not what an export writes); the message names the file."""


class SavedirError(ValueError):
    """A ``savedir`` that loading would write over what is not its own; the message names it."""


def source_kind(source: str) -> str:
    """``"folder"``, ``"hub"`` or ``"url"``: where SpeechBrain's fetch will look for ``source``.

    Raises :class:`ModelNotFoundError` for what the fetch would send to the Hub but the
    Hub cannot hold: a file here, or a path that is not shaped like a repo id (a typo
    in a local path should not surface as the Hub's rules for repo ids).

    >>> source_kind("org/name"), source_kind("https://example.org/models/x"), source_kind(".")
    ('hub', 'url', 'folder')
    >>> source_kind("results/no-such-run/model")
    Traceback (most recent call last):
      ...
    multitask.source.ModelNotFoundError: no model folder at results/no-such-run/model, and it is not a Hub repo id ('name' or 'org/name')
    >>> source_kind("")  # not the current folder
    Traceback (most recent call last):
      ...
    multitask.source.ModelNotFoundError: the model source is empty: give a folder written by `multitask export`, or a Hub repo id
    """
    source = os.fspath(source)
    if not source.strip():
        raise ModelNotFoundError("the model source is empty: give a folder written by "
                                 "`multitask export`, or a Hub repo id")
    kind = _KINDS[guess_source(source)[0]]
    if kind != HUB:
        return kind
    if os.path.exists(source):
        raise ModelNotFoundError(f"{source} is a file: a model is a folder written by "
                                 "`multitask export`, or a Hub repo id")
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise ModelNotFoundError(f"no model folder at {source}, and it is not a Hub repo id "
                                 "('name' or 'org/name')") from None
    return HUB


def check_model_source(source: str, hparams_file: str = "hyperparams.yaml",
                       revision: str | None = None) -> str:
    """:func:`source_kind`, and for a folder, that it holds ``hparams_file``, is not a
    training run, and is not asked for a revision (a folder has none).

    >>> check_model_source("org/name")  # shaped like a repo id: the Hub will be asked
    'hub'
    """
    kind = source_kind(source)
    if kind != FOLDER:
        return kind
    if is_training_run(source):
        raise ModelNotFoundError(f"{source} is a training run, not an exported model: export "
                                 f"it first (`multitask export --from {source} --out DIR`)")
    if not os.path.isfile(os.path.join(source, hparams_file)):
        raise ModelNotFoundError(f"{source} is a folder without {hparams_file}: not a model "
                                 "folder written by `multitask export`")
    if revision is not None:
        raise ModelNotFoundError(f"{source} is a folder here, which has no revisions; a "
                                 f"revision ({revision}) is for a Hub repo id")
    return kind


def is_training_run(folder) -> bool:
    """Whether ``folder`` is a training recipe's ``output_folder``, which ``multitask
    export`` turns into a model: it holds the recipes' marker (:data:`RUN_MARKER`),
    SpeechBrain's ``env.log``, or a ``save/`` with the run's checkpoints or label files (a
    ``save/`` holding only a downloaded ``encoder_cache`` is not a run). An export is not.

    >>> import tempfile; run = tempfile.mkdtemp(); os.makedirs(os.path.join(run, "save", "encoder_cache"))
    >>> is_training_run(run)
    False
    >>> open(os.path.join(run, RUN_MARKER), "w").close(); is_training_run(run)
    True
    """
    if any(os.path.isfile(os.path.join(folder, f"encoder.{ext}")) for ext in ("safetensors", "ckpt")):
        return False
    if any(os.path.isfile(os.path.join(folder, name)) for name in (RUN_MARKER, "env.log")):
        return True
    save = os.path.join(folder, "save")
    return os.path.isdir(save) and any(
        name.startswith(("CKPT+", "label_encoder_")) or name == "data_signature.json"
        for name in os.listdir(save))


def hub_miss_message(source: str, revision, err: Exception) -> str:
    """One line on why the Hub (or, offline, its cache) gave no model for ``source``.

    ``err`` is the error huggingface_hub raised while fetching one of the model's files.
    """
    where = f"{source}" + (f" at revision {revision}" if revision else "")
    if isinstance(err, LocalEntryNotFoundError):
        why = "not in the local Hub cache, and the Hub was not reached (offline, or HF_HUB_OFFLINE=1)"
    elif isinstance(err, RevisionNotFoundError):
        why = "the repo has no such branch, tag or commit"
    elif isinstance(err, RepositoryNotFoundError):
        why = "no such repo on the Hub, or it is private (pass token=True once logged in)"
    else:
        why = "the repo lacks a file that `multitask export` writes: is it a multitask model?"
    return f"no model at {where}: {why}; and no folder {source} here"
