"""SpeechBrain's ``Checkpointer``, made crash-safe.

SpeechBrain writes a checkpoint's meta file (which marks the folder as a
checkpoint) before its parameter files, so a process killed in between leaves a
folder that looks complete and would be loaded on resume. Here every checkpoint
is written into a staging folder that the ``Checkpointer`` does not list, flushed
to disk, and only then renamed into place: a rename within one file system is
atomic, so a checkpoint is either whole or absent.

Example
-------
>>> import tempfile, torch
>>> layer = torch.nn.Linear(2, 2)
>>> ckpt = AtomicCheckpointer(tempfile.mkdtemp(), recoverables={"layer": layer})
>>> saved = ckpt.save_checkpoint(meta={"accuracy": 0.5})
>>> [c.meta["accuracy"] for c in ckpt.list_checkpoints()]
[0.5]
"""

from __future__ import annotations

import os
import pathlib
import shutil

from speechbrain.utils.checkpoints import Checkpoint, Checkpointer
from speechbrain.utils.distributed import ddp_barrier, if_main_process

STAGING = ".staging"
_RESUME_ADVICE = "resume with the settings it was saved with, or use a new output folder"


class ResumeError(ValueError):
    """A run folder's checkpoint (or other saved state) was written by a run with other
    settings, so this run cannot resume from it; the message names the file or folder."""


class AtomicCheckpointer(Checkpointer):
    """A ``Checkpointer`` whose checkpoints appear only once fully written."""

    def __init__(self, checkpoints_dir, *args, **kwargs):
        super().__init__(checkpoints_dir, *args, **kwargs)
        self.final_dir = self.checkpoints_dir

    def discard_interrupted_save(self) -> None:
        """Delete what a killed save left in staging (never listed, never loaded).

        Only the run that writes this folder may call it, before it saves: a reader
        (export, test) must not, since a save may be in progress.
        """
        if if_main_process():
            shutil.rmtree(self.final_dir / STAGING, ignore_errors=True)

    def check_resumable(self, hints: dict[str, str] | None = None) -> None:
        """Refuse to resume from a checkpoint saved with other parts than this run has.

        SpeechBrain would fail deep in its loader (a part without a file) or load the
        optimizer's state over other parameters; here the checkpoint and the parts are
        named. ``hints`` says, per part, which setting adds it.
        """
        checkpoint = self.find_checkpoint()
        if checkpoint is None:
            return
        missing = set() if self.allow_partial_load else (
            set(self.recoverables) - set(checkpoint.paramfiles))
        extra = set(checkpoint.paramfiles) - set(self.recoverables)
        if missing or extra:
            parts = [f"this run also has {', '.join(sorted(missing))}" if missing else "",
                     f"the checkpoint also has {', '.join(sorted(extra))}" if extra else "",
                     *((hints or {}).get(part, "") for part in sorted(missing | extra))]
            raise ResumeError(f"{checkpoint.path}: cannot resume from this checkpoint, it was "
                              f"saved by a run with other parts ({'; '.join(p for p in parts if p)})"
                              f"; {_RESUME_ADVICE}")

    def load_checkpoint(self, checkpoint):
        """SpeechBrain's, with a checkpoint that does not fit this run's model refused by a
        :class:`ResumeError` naming it and what differs, not by Torch's traceback:
        parameters of another shape or name (another architecture), or optimizer groups of
        other sizes (other parameters trained, e.g. another ``freeze_feature_extractor``)."""
        try:
            return super().load_checkpoint(checkpoint)
        except ResumeError:
            raise
        except (RuntimeError, ValueError) as err:
            mismatch = parameter_mismatch(err)
            if mismatch:
                what = f"its parameters are not this model's ({mismatch})"
            elif "parameter group" in str(err):
                what = ("its optimizer trained other parameters than this run's (another "
                        "set of frozen parts)")
            else:
                raise
            raise ResumeError(f"{checkpoint.path}: this checkpoint does not fit this run: "
                              f"{what}; use the settings it was saved with (the run's "
                              "hyperparams.yaml), or a new output folder") from None

    def save_checkpoint(self, meta=None, end_of_epoch=True, name=None, verbosity=20):
        meta = meta or {}
        staging = self.final_dir / STAGING
        if if_main_process():
            staging.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir = staging
        try:
            staged = super().save_checkpoint(meta, end_of_epoch, name, verbosity)
        finally:
            self.checkpoints_dir = self.final_dir
        ddp_barrier()
        checkpoint = self._publish(staged) if if_main_process() and staged is not None else None
        # Every process must see the published folder before anyone lists checkpoints.
        ddp_barrier()
        return checkpoint

    def _publish(self, staged: Checkpoint) -> Checkpoint:
        _fsync_folder(staged.path)
        final = self.final_dir / staged.path.name
        suffix = 0
        while final.exists():  # names are per second or per epoch: never overwrite one
            suffix += 1
            final = self.final_dir / f"{staged.path.name}-{suffix}"
        os.replace(staged.path, final)
        _fsync_folder(self.final_dir)
        files = {key: final / pathlib.Path(p).name for key, p in staged.paramfiles.items()}
        return Checkpoint(final, staged.meta, files)


def parameter_mismatch(err: Exception) -> str | None:
    """What Torch's ``load_state_dict`` error says differs (missing, unexpected or
    other-shaped parameters) on one line of at most about 300 characters; ``None`` for
    any other error, and for a copy that failed for another reason than shape.

    >>> import torch
    >>> try:
    ...     torch.nn.Linear(2, 3).load_state_dict(torch.nn.Linear(2, 4).state_dict())
    ... except RuntimeError as err:
    ...     print(parameter_mismatch(err)[:60])
    size mismatch for weight: copying a param with shape torch.S
    >>> parameter_mismatch(ValueError("other")) is None
    True
    """
    message = str(err)
    if "loading state_dict" not in message or "While copying the parameter" in message:
        return None
    shown = "; ".join(line.strip() for line in message.splitlines()[1:] if line.strip())
    return shown if len(shown) <= 300 else shown[:300] + " ..."


def check_epoch_budget(epoch_counter, checkpoint) -> None:
    """Refuse to resume a run whose recovered ``epoch_counter`` has already passed its
    ``number_of_epochs``: the run would train nothing and describe itself (its card, its
    record) by the smaller number.

    >>> from speechbrain.utils.epoch_loop import EpochCounter
    >>> counter = EpochCounter(5); counter.current = 10
    >>> check_epoch_budget(counter, "run/save/CKPT+epoch-0010")
    Traceback (most recent call last):
    ...
    multitask.checkpoints.ResumeError: run/save/CKPT+epoch-0010: this run has trained 10 epochs, more than number_of_epochs=5; give 10 or more to resume it, or use a new output folder
    """
    if epoch_counter.current > epoch_counter.limit:
        raise ResumeError(f"{checkpoint}: this run has trained {epoch_counter.current} epochs, "
                          f"more than number_of_epochs={epoch_counter.limit}; give "
                          f"{epoch_counter.current} or more to resume it, or use a new output "
                          "folder")


def rewrite_recoverable(checkpoint: Checkpoint, key: str, module) -> None:
    """Replace ``key``'s parameter file in a published ``checkpoint`` with ``module``'s
    state, whole or not at all (written beside it, flushed, renamed over it).

    For a change made after training (e.g. an offset written into a bias); the file
    format is SpeechBrain's save hook for modules, ``torch.save(state_dict)``. Call it
    on the main process only.
    """
    import torch

    path = pathlib.Path(checkpoint.paramfiles[key])
    staged = path.with_name(path.name + STAGING)
    torch.save(module.state_dict(), staged)
    _fsync_folder(staged)
    os.replace(staged, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: pathlib.Path) -> None:
    for path in [*folder.iterdir(), folder] if folder.is_dir() else [folder]:
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if path.is_dir() else os.O_RDONLY
        fd = os.open(path, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
