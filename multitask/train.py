"""The joint training loop, owned by Accelerate.

Accelerate decides the device, wraps the model for data parallelism, applies the
mixed precision its launch config asks for, and accumulates gradients; nothing in
this file sets any of those itself (SpeechBrain's ``Brain`` is not used for the
same reason: it would be a second owner of device, DDP and precision).

The loop, as ``accelerate launch recipes/train.py hparams/train.yaml`` runs it:

1. label encoders from the training rows (main process first, then shared);
2. datasets and length-aware loaders, one ``accelerator.prepare`` call;
3. per epoch: reseed from ``(seed, epoch)``, train with clipping and a
   non-finite-loss guard, validate with ``gather_for_metrics``, checkpoint
   (keeping the latest and the best by ``best_metric``), log a line to
   ``train_log.txt`` and redraw ``training_curves.png`` (:mod:`multitask.curves`);
4. rerunning the same command resumes from the latest complete checkpoint.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from datetime import timedelta

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DistributedDataParallelKwargs,
    InitProcessGroupKwargs,
    gather_object,
    set_seed,
)
from tqdm.auto import tqdm

from . import data as D
from .audio import normalise_padded
from .card import display_path
from .checkpoints import AtomicCheckpointer, check_epoch_budget
from .class_bias import add_figures_without_bias
from .class_bias import read_record as read_class_bias
from .ctc import CTCHead, ctc_loss_sum
from .curves import CURVES_FILE, plot_training_curves
from .data_report import write_data_report
from .head_labels import encoder_labels
from .losses import IGNORE_INDEX, joint_loss, task_loss_sums
from .manifest import TASKS, ManifestError, manifest_paths, read_manifests
from .metrics import accuracy_by_group, classification_report, plot_confusion_matrix
from .model import CTC_OUTPUT, MultitaskModel, build_heads, frame_mask
from .optim import param_groups
from .sampling import check_epoch_complete, seed_epoch, steps_per_epoch
from .settings import SettingError


class NonFiniteLossError(RuntimeError):
    """Training produced NaN/Inf losses for more consecutive steps than allowed."""


def make_accelerator(hparams) -> Accelerator:
    """An ``Accelerator`` configured from hparams; precision comes from the launch config."""
    ddp = DistributedDataParallelKwargs(
        # A frozen encoder takes no gradient for a while; DDP must then skip it.
        find_unused_parameters=hparams.get("encoder_freeze_steps", 0) > 0,
    )
    # A rank that dies closes its sockets and the others fail at once; one that hangs
    # (frozen node, stalled file system) would hold them in a collective for torch's
    # 30 min gloo default. NCCL's 10 min default bounds every backend, and must also
    # cover the main process preparing corpora while the others wait.
    group = InitProcessGroupKwargs(
        timeout=timedelta(seconds=hparams.get("dist_timeout_seconds", 600)),
    )
    accelerator = Accelerator(
        gradient_accumulation_steps=hparams.get("grad_accumulation", 1),
        step_scheduler_with_optimizer=False,
        kwargs_handlers=[ddp, group],
    )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        # Otherwise N independent single-process runs would write the same folder.
        raise RuntimeError(
            f"the launcher started {launched} processes but they did not form one group "
            f"(this process sees {accelerator.num_processes}); on CPUs launch with "
            "ACCELERATE_USE_CPU=true and --multi_gpu, or use hparams/accelerate/cpu_2proc.yaml"
        )
    return accelerator


DATA_REPORT = "data_report"  # the folder in output_folder that prepare_data writes


def earlier_data_report(output_folder, save_folder) -> list[str]:
    """``[DATA_REPORT]`` when ``output_folder`` holds the data report of a run that
    started training (a checkpoint in ``save_folder``), which a refused rerun puts back;
    the report of an attempt that failed before training is replaced and kept, as it
    shows the data that was refused."""
    trained = os.path.isdir(save_folder) and any(
        name.startswith("CKPT+") for name in os.listdir(save_folder))
    return [DATA_REPORT] if trained and os.path.isdir(
        os.path.join(output_folder, DATA_REPORT)) else []


def prepare_data(hparams, accelerator: Accelerator) -> None:
    """Run the corpus preparers named in ``hparams["prepare"]`` (main process only,
    the others wait), then write a data report of what training will read.

    ``prepare`` maps a name to a preparer factory from YAML (``!name:``), e.g.
    ``multitask.prepare.prepare_skit_s2i`` with its corpus and output folders;
    ``prepare_corpora: False`` skips them (training on manifests made elsewhere).
    """
    if accelerator.is_main_process:
        preparers = (hparams.get("prepare") or {}) if hparams.get("prepare_corpora", True) else {}
        for preparer in preparers.values():
            preparer()
        manifests = [*manifest_paths(hparams["train_manifests"]), *manifest_paths(hparams["valid_manifests"]),
                     *(hparams.get("test_manifests") or {}).values()]
        write_data_report(manifests, os.path.join(hparams["output_folder"], DATA_REPORT))
    accelerator.wait_for_everyone()


def check_settings(hparams) -> None:
    """Refuse settings of a shape training cannot use, before anything is written:
    ``tasks`` not a list of known tasks, ``test_manifests`` not a mapping, a
    ``best_metric`` validation does not report (raises
    :class:`multitask.settings.SettingError`).

    >>> check_settings({"tasks": ["intent"], "best_metric": "intent_accuracy"})
    >>> check_settings({"tasks": ["intent"], "best_metric": "emotion_accuracy"})
    Traceback (most recent call last):
    ...
    multitask.settings.SettingError: best_metric 'emotion_accuracy' is not one validation reports for tasks ['intent']: intent_accuracy, intent_macro_f1, intent_unweighted_accuracy, mean_accuracy, mean_macro_f1
    """
    tasks = hparams.get("tasks", TASKS)
    if not isinstance(tasks, (list, tuple)) or not tasks or any(t not in TASKS for t in tasks):
        raise SettingError(f"tasks must be a list of one or more of {list(TASKS)}, not {tasks!r}")
    tests = hparams.get("test_manifests")
    if tests is not None and not isinstance(tests, dict):
        raise SettingError("test_manifests must be a mapping {name: manifest}, e.g. "
                           f"{{joint: test.csv}}, not {type(tests).__name__} {tests!r}")
    reported = sorted(validation_metrics(tasks))
    best = hparams.get("best_metric", "mean_accuracy")
    if best == "loss":
        raise SettingError("best_metric 'loss': the run keeps the checkpoint with the highest "
                           f"best_metric, so it takes a score: {', '.join(reported)}")
    if best not in reported:
        raise SettingError(f"best_metric {best!r} is not one validation reports for tasks "
                           f"{list(tasks)}: {', '.join(reported)}")


def run_settings_files(hparams) -> list[str]:
    """What a run writes into ``output_folder`` before it knows that it resumes its own
    checkpoints (or starts): its ``hyperparams.yaml``, label files and data report (if a
    run that trained wrote one: :func:`earlier_data_report`), relative to ``output_folder``. A
    rerun refused as another run's, or a first run that fails before training, puts them
    back (:func:`multitask.recipe.restored_on_failure`), so the next run neither
    describes nor reuses what was refused.

    >>> run_settings_files({"output_folder": "run", "save_folder": "run/save", "tasks": ["intent"]})
    ['hyperparams.yaml', 'save/label_encoder_intent.txt']
    """
    return ["hyperparams.yaml", *earlier_data_report(hparams["output_folder"],
                                                     hparams["save_folder"]), *(
        os.path.relpath(D.label_encoder_path(hparams["save_folder"], task), hparams["output_folder"])
        for task in hparams.get("tasks", TASKS))]


def get_dataloaders(accelerator, hparams):
    """Label encoders, and train/valid loaders built from the manifests in ``hparams``."""
    for key in ("train_manifests", "valid_manifests"):
        if not manifest_paths(hparams.get(key)):
            raise ManifestError(f"{key}: no manifest given")
    train_rows = read_manifests(hparams["train_manifests"])
    if not train_rows:
        raise ManifestError(f"{', '.join(map(os.fspath, manifest_paths(hparams['train_manifests'])))}: no "
                              "rows to train on")
    with accelerator.main_process_first():
        encoders = D.build_label_encoders(train_rows, hparams["save_folder"],
                                          hparams.get("tasks", TASKS))
        # Every manifest, test ones too, before any training: one error lists all faults.
        D.check_manifests(
            {"train": hparams["train_manifests"], "valid": hparams["valid_manifests"],
             "test": list((hparams.get("test_manifests") or {}).values())},
            encoders, hparams["save_folder"], data_root=hparams.get("data_root"),
        )
    train_set, train_rows = D.load_split(hparams["train_manifests"], encoders, rows=train_rows,
                                         probe=False, transcripts=ctc_transcripts(hparams))
    valid_set, valid_rows = D.load_split(hparams["valid_manifests"], encoders, probe=False)
    seed = hparams["seed"]
    train_loader = D.make_loader(train_set, train_rows, hparams["train_batching"], True, seed,
                                 hparams.get("num_workers", 0))
    valid_loader = D.make_loader(valid_set, valid_rows, hparams["eval_batching"], False, seed,
                                 hparams.get("num_workers", 0), shard=_shard(accelerator))
    return encoders, train_loader, valid_loader


def build_model(hparams, encoders, training=False) -> MultitaskModel:
    """Encoder from hparams; one head per task, sized by that task's label encoder.

    Every head takes the ``head`` factory's options; ``task_heads`` (optional, task ->
    options) overrides them for one task, e.g. ``{"intent": {"pooling": "stats"}}``.
    ``training`` adds the auxiliary CTC head when ``ctc_weight`` is positive.
    """
    encoder = hparams["encoder"]
    sizes = {task: len(enc) for task, enc in encoders.items()}
    heads = build_heads(encoder, sizes, head_options(hparams, encoders), head=hparams["head"])
    ctc_head = CTCHead(encoder.output_size) if training and ctc_transcripts(hparams) else None
    return MultitaskModel(encoder, heads, ctc_head)


def ctc_transcripts(hparams) -> str | None:
    """The manifest column the auxiliary CTC loss spells, or None when it is off
    (``ctc_weight`` 0 or absent)."""
    if float(hparams.get("ctc_weight") or 0) <= 0:
        return None
    column = hparams.get("ctc_transcripts")
    if not column:
        raise ValueError("ctc_weight is positive but ctc_transcripts names no manifest column")
    return column


def head_options(hparams, tasks) -> dict:
    """Each task's ``TaskHead`` options: the ``head`` factory's, updated by ``task_heads``.

    >>> from functools import partial
    >>> hp = {"head": partial(dict, pooling="mean", hidden_size=8),
    ...       "task_heads": {"intent": {"pooling": "stats"}}}
    >>> head_options(hp, ["intent", "emotion"])
    {'intent': {'pooling': 'stats', 'hidden_size': 8}, 'emotion': {'pooling': 'mean', 'hidden_size': 8}}
    """
    shared = dict(getattr(hparams["head"], "keywords", {}))
    given = dict(hparams.get("task_heads") or {})
    unknown = sorted(set(given) - set(tasks))
    if unknown:
        raise ValueError(f"task_heads names task(s) {unknown} that this run does not train "
                         f"(tasks: {sorted(tasks)})")
    return {task: {**shared, **(given.get(task) or {})} for task in tasks}


def fit(hparams, accelerator: Accelerator | None = None, on_start=None) -> dict:
    """Train (or resume) as ``hparams`` says; returns the last validation stats.

    ``on_start``, if given, is called once the run's own checkpoint (if any) is
    recovered into the model this run builds: from then on, the run is this one.
    """
    accelerator = accelerator or make_accelerator(hparams)
    accelerator.print(
        f"world size {accelerator.num_processes}, device {accelerator.device}, "
        f"mixed precision {accelerator.mixed_precision}"
    )
    set_seed(hparams["seed"])
    check_augmenters(hparams)
    encoders, train_loader, valid_loader = get_dataloaders(accelerator, hparams)
    model = build_model(hparams, encoders, training=True)
    if hparams.get("init_model") is not None:
        # Starting weights and frozen parts (e.g. a parent model being fine-tuned), set
        # before the optimizer sees the parameters; a resumed run then recovers its own
        # checkpoint over these weights.
        hparams["init_model"](model, encoders)
    optimizer = hparams["optimizer"](
        param_groups(model, hparams["encoder_lr"], hparams["head_lr"], hparams.get("weight_decay", 0.0))
    )
    epoch_counter = hparams["epoch_counter"]
    train_sampler = train_loader.batch_sampler
    total_steps = epoch_counter.limit * steps_per_epoch(
        len(train_sampler), accelerator.num_processes, accelerator.gradient_accumulation_steps
    )
    freeze_steps = hparams.get("encoder_freeze_steps", 0)
    scheduler = hparams["lr_schedule"](
        optimizer, total_steps=total_steps, warmup_steps=hparams.get("warmup_steps", 0),
        encoder_freeze_steps=freeze_steps,
    )
    checkpointer = AtomicCheckpointer(
        hparams["save_folder"],
        recoverables={
            "encoder": model.encoder,
            "heads": model.heads,
            **({"ctc_head": model.ctc_head} if model.ctc_head is not None else {}),
            "optimizer": optimizer,
            "scheduler": scheduler,
            "epoch_counter": epoch_counter,
            "train_sampler": train_sampler,
            # fp16's loss scale (GPUs only): a resumed run goes on with it, not from 2**16
            **({"grad_scaler": accelerator.scaler} if accelerator.scaler is not None else {}),
        },
    )
    checkpointer.discard_interrupted_save()
    checkpointer.check_resumable({"ctc_head": "ctc_weight adds the ctc_head",
                                  "grad_scaler": "fp16 mixed precision adds the grad_scaler "
                                                 "(fp16 checkpoints of version 0.2.0 lack it)"})
    resumed = checkpointer.recover_if_possible()
    if resumed is not None:
        check_epoch_budget(epoch_counter, resumed.path)
        accelerator.print(f"Resuming from {resumed.path} (epoch {epoch_counter.current} done)")
    if on_start is not None:
        on_start()

    # Evaluation loaders are sharded by the sampler, not by prepare(): see evaluate().
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    logger = file_train_logger(os.path.join(hparams["output_folder"], "train_log.txt"))
    weights = {**(hparams.get("task_weights") or {}),
               CTC_OUTPUT: float(hparams.get("ctc_weight") or 0)}
    best_metric = hparams.get("best_metric", "mean_accuracy")
    valid_stats = {}
    for epoch in epoch_counter:
        seed_epoch(hparams["seed"], epoch, accelerator.process_index)
        # The prepared loader re-sets its sampler's epoch when iterated (one process);
        # a sharded one does not reach our sampler (several): set both, to one value.
        train_loader.set_epoch(epoch)
        train_sampler.set_epoch(epoch)
        start = time.time()
        train_stats = train_one_epoch(
            accelerator, model, optimizer, scheduler, train_loader, weights, hparams, epoch,
            freeze_steps,
        )
        train_stats["seconds"] = time.time() - start
        valid_stats = evaluate(accelerator, model, valid_loader, encoders, weights,
                               desc=f"valid {epoch}")
        valid_stats.pop("rows")
        summary = flat_stats(valid_stats)
        logger.log_stats(  # SpeechBrain writes on the main process; all must call it
            stats_meta={"epoch": epoch, "lr_heads": _group_lr(optimizer, "heads"),
                        "lr_encoder": _group_lr(optimizer, "encoder")},
            train_stats=train_stats,
            valid_stats=summary,
        )
        accelerator.print(
            f"epoch {epoch}: train loss {train_stats['loss']:.4f} | "
            + " | ".join(f"{k} {v:.4f}" for k, v in summary.items())
        )
        if best_metric not in summary:
            raise KeyError(f"best_metric {best_metric!r} is not one of {sorted(summary)}")
        checkpointer.save_and_keep_only(
            meta={**summary, "epoch": epoch}, name=f"epoch-{epoch:04d}", max_keys=[best_metric],
            keep_recent=True, num_to_keep=1,
        )
        if accelerator.is_main_process:
            redraw_training_curves(hparams["output_folder"], checkpointer, best_metric, epoch,
                                   with_ctc=weights[CTC_OUTPUT] > 0)
        accelerator.wait_for_everyone()
    check_replicas_in_sync(accelerator, model)
    return valid_stats


def redraw_training_curves(output_folder, checkpointer, best_metric: str, epoch: int,
                           with_ctc: bool = False) -> None:
    """``training_curves.png`` from ``train_log.txt``, the checkpoint kept so far marked.

    A figure that cannot be drawn (a full disk, a broken font cache) is a warning: the
    epoch's checkpoint is saved already, and the run goes on.
    """
    best = checkpointer.find_checkpoint(max_key=best_metric)
    try:
        plot_training_curves(os.path.join(output_folder, "train_log.txt"),
                             os.path.join(output_folder, CURVES_FILE),
                             chosen_epoch=best.meta.get("epoch") if best else None,
                             best_metric=best_metric, last_epoch=epoch, with_ctc=with_ctc)
    except Exception as err:  # noqa: BLE001 - a figure must not end a training run
        logging.getLogger(__name__).warning(
            "could not draw %s: %s: %s", os.path.join(output_folder, CURVES_FILE),
            type(err).__name__, err)


def check_replicas_in_sync(accelerator, model) -> None:
    """Raise if data-parallel replicas ended with different parameters (they never should)."""
    if accelerator.num_processes == 1:
        return
    with torch.no_grad():
        fingerprint = torch.stack(
            [p.detach().double().sum() for p in accelerator.unwrap_model(model).parameters()]
        )
    everyone = accelerator.gather(fingerprint.unsqueeze(0))
    spread = (everyone - everyone[0]).abs().max().item()
    if spread > 0:
        raise RuntimeError(f"parameters differ between processes (max difference {spread:.3g})")
    accelerator.print(f"parameters identical on all {accelerator.num_processes} processes")


def check_augmenters(hparams: dict) -> None:
    """Refuse an ``Augmenter`` that would never run some of its augmentations.

    SpeechBrain's ``Augmenter`` takes its first N augmentations in list order unless
    ``shuffle_augmentations`` is set: with ``max_augmentations: 1`` and two listed, the
    second never runs, silently.

    >>> from speechbrain.augment.augmenter import Augmenter
    >>> from multitask.augment import PauseInsertion, TelephoneBand
    >>> two = [TelephoneBand(), PauseInsertion()]
    >>> check_augmenters({"augmentation": Augmenter(augmentations=two, max_augmentations=1)})
    Traceback (most recent call last):
    ...
    ValueError: augmentation: SpeechBrain's Augmenter applies its augmentations in list order, so with max_augmentations 1 only ['TelephoneBand0'] would ever run, never ['PauseInsertion1']; set shuffle_augmentations: True
    >>> check_augmenters({"augmentation": Augmenter(augmentations=two, max_augmentations=1,
    ...                                             shuffle_augmentations=True)})
    """
    from speechbrain.augment.augmenter import Augmenter

    named = [("augmentation", hparams.get("augmentation"))]
    named += [(f"task_augmentation.{task}", aug)
              for task, aug in (hparams.get("task_augmentation") or {}).items()]
    for name, augmenter in named:
        if not isinstance(augmenter, Augmenter) or augmenter.shuffle_augmentations:
            continue
        listed = list(augmenter.augmentations)
        if augmenter.max_augmentations < len(listed):
            raise ValueError(
                f"{name}: SpeechBrain's Augmenter applies its augmentations in list order, "
                f"so with max_augmentations {augmenter.max_augmentations} only "
                f"{listed[: augmenter.max_augmentations]} would ever run, never "
                f"{listed[augmenter.max_augmentations:]}; set shuffle_augmentations: True")


def augment_batch(hparams: dict, wavs, wav_lens, labels: dict):
    """The training batch's augmentations: ``augmentation`` on every row, then each
    ``task_augmentation[task]`` on the rows labelled for that task."""
    if hparams.get("augmentation") is not None:
        wavs, wav_lens = augment_rows(hparams["augmentation"], wavs, wav_lens, labels)
    for task, augmentation in (hparams.get("task_augmentation") or {}).items():
        wavs, wav_lens = augment_rows(augmentation, wavs, wav_lens, labels, [task])
    return wavs, wav_lens


def augment_rows(augmentation, wavs, wav_lens, labels: dict, tasks=None):
    """One augmented copy per row (no concatenation), so labels stay aligned.

    ``augmentation`` is SpeechBrain's ``Augmenter`` or one of its augmentations (any
    ``(wavs, lens) -> wavs`` or ``-> (wavs, lens)``). With ``tasks`` (e.g. ``[intent]``)
    only the rows labelled for one of them are augmented; the others pass unchanged.
    The augmentation may change the rows' length (``SpeedPerturb``): the batch is then
    padded to its new widest row, with each row's relative length recomputed, and the
    augmented rows renormalised over their new length.

    Example
    -------
    >>> from multitask.losses import IGNORE_INDEX
    >>> flip = lambda w, lens: (-w, lens)
    >>> labels = {"emotion": torch.tensor([2, IGNORE_INDEX])}
    >>> out, _ = augment_rows(flip, torch.ones(2, 3), torch.ones(2), labels, ["emotion"])
    >>> out[:, 0].tolist()
    [-1.0, 1.0]
    >>> stretch = lambda w, lens: torch.repeat_interleave(w, 2, dim=1)  # twice as long
    >>> out, lens = augment_rows(stretch, torch.randn(2, 3), torch.ones(2), labels, ["emotion"])
    >>> out.shape, lens.tolist()
    (torch.Size([2, 6]), [1.0, 0.5])
    """
    if not tasks:
        return _augmented(augmentation, wavs, wav_lens)
    unknown = set(tasks) - set(labels)
    if unknown:
        raise ValueError(f"task_augmentation names tasks the model lacks: {sorted(unknown)} "
                         f"(tasks: {sorted(labels)})")
    rows = torch.zeros(wavs.shape[0], dtype=torch.bool, device=wavs.device)
    for task in tasks:
        rows |= labels[task].to(wavs.device) != IGNORE_INDEX
    if not rows.any():
        return wavs, wav_lens
    augmented, augmented_lens = _augmented(augmentation, wavs[rows], wav_lens[rows])
    if augmented.shape == wavs[rows].shape and torch.equal(augmented_lens, wav_lens[rows]):
        wavs = wavs.clone()
        wavs[rows] = augmented
        return wavs, wav_lens
    return _repadded(wavs, wav_lens, rows, augmented, augmented_lens)


def _repadded(wavs, wav_lens, rows, augmented, augmented_lens):
    """Rows ``rows`` of the batch replaced by ``augmented`` of another width, re-padded."""
    width = max(wavs.shape[1], augmented.shape[1])
    samples = torch.round(wav_lens * wavs.shape[1])
    samples[rows] = torch.round(augmented_lens.to(samples) * augmented.shape[1])
    out = wavs.new_zeros(wavs.shape[0], width)
    out[~rows, : wavs.shape[1]] = wavs[~rows]
    valid = frame_mask(samples[rows].long(), augmented.shape[1])
    out[rows, : augmented.shape[1]] = normalise_padded(augmented, valid)
    return out, samples / width


def _augmented(augmentation, wavs, wav_lens):
    """SpeechBrain's ``Augmenter`` returns ``(wavs, lens)``, its augmentations ``wavs``."""
    out = augmentation(wavs, wav_lens)
    return out if isinstance(out, tuple) else (out, wav_lens)


def train_one_epoch(accelerator, model, optimizer, scheduler, loader, weights, hparams, epoch,
                    freeze_steps) -> dict:
    """One pass over ``loader``; returns the mean loss and counts of skipped steps."""
    model.train()
    core = accelerator.unwrap_model(model)
    max_norm = hparams.get("max_grad_norm", 5.0)
    patience = hparams.get("nonfinite_patience", 3)
    total_loss, batches, skipped, consecutive_bad = 0.0, 0, 0, 0
    bar = tqdm(loader, desc=f"train {epoch}", disable=not accelerator.is_local_main_process,
               dynamic_ncols=True)
    for batch in bar:
        core.encoder_frozen = scheduler.last_epoch < freeze_steps
        with accelerator.accumulate(model):
            wavs, wav_lens = batch.sig
            labels = D.batch_labels(batch, core.tasks)
            wavs, wav_lens = augment_batch(hparams, wavs, wav_lens, labels)
            logits = model(wavs, wav_lens)
            ctc = logits.pop(CTC_OUTPUT, None)
            sums, counts = task_loss_sums(logits, labels)
            if ctc is not None:
                tokens, _ = batch.tokens
                sums[CTC_OUTPUT], counts[CTC_OUTPUT] = ctc_loss_sum(
                    *ctc, tokens.to(wavs.device), batch.token_count.to(wavs.device))
            global_counts = {t: accelerator.reduce(c, "sum") for t, c in counts.items()}
            loss = joint_loss(sums, global_counts, weights, accelerator.num_processes)
            # Every process must agree to skip, or the gradient all-reduce would hang.
            bad = accelerator.reduce(torch.tensor(float(not torch.isfinite(loss)),
                                                  device=loss.device), "max")
            if bad.item() > 0:
                skipped += 1
                consecutive_bad += 1
                optimizer.zero_grad()
                if consecutive_bad > patience:
                    raise NonFiniteLossError(
                        f"epoch {epoch}: non-finite loss on {consecutive_bad} consecutive steps "
                        f"(batch ids {batch.id[:4]}...); lower the learning rate or check the data"
                    )
                continue
            consecutive_bad = 0
            accelerator.backward(loss)
            if accelerator.sync_gradients and max_norm:
                accelerator.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            optimizer.zero_grad()
        # Each process holds its share of the global mean; their mean is the global loss.
        total_loss += accelerator.reduce(loss.detach(), "mean").item()
        batches += 1
        bar.set_postfix(loss=f"{total_loss / batches:.3f}")
    check_epoch_complete(batches + skipped, loader, epoch)
    return {"loss": total_loss / max(1, batches), "skipped_steps": skipped}


@torch.no_grad()
def evaluate(accelerator, model, loader, encoders, weights=None, desc="eval") -> dict:
    """Loss and per-task metrics over ``loader``, gathered from every process.

    ``loader`` is an evaluation loader built with ``shard=(process_index,
    num_processes)``: each process scores its own batches with the unwrapped model
    (no DDP collectives, so uneven shards are fine) and the rows are gathered once at
    the end, each exactly once. Each task is scored on the rows that carry its label.
    The result also holds per-row ids, references, predictions and probabilities.
    """
    core = accelerator.unwrap_model(model)
    core.eval()
    tasks = core.tasks
    local = []
    loss_sums = {t: 0.0 for t in tasks}
    loss_counts = {t: 0 for t in tasks}
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process,
                      dynamic_ncols=True, leave=False):
        batch = batch.to(accelerator.device)
        wavs, wav_lens = batch.sig
        with accelerator.autocast():
            logits = core(wavs, wav_lens)
        labels = D.batch_labels(batch, tasks)
        sums, counts = task_loss_sums(logits, labels)
        probs = {t: torch.softmax(logits[t].float(), dim=-1).cpu() for t in tasks}
        for t in tasks:
            loss_sums[t] += sums[t].item()
            loss_counts[t] += int(counts[t])
        for i, utt in enumerate(batch.id):
            local.append({"id": utt, **{t: (int(labels[t][i]), probs[t][i].tolist()) for t in tasks}})
    rows = gather_object(local)
    totals = gather_object([(loss_sums, loss_counts)])
    sums = {t: torch.tensor(sum(s[t] for s, _ in totals)) for t in tasks}
    counts = {t: torch.tensor(sum(c[t] for _, c in totals)) for t in tasks}
    stats = {"loss": float(joint_loss(sums, counts, weights or {})), "rows": rows}
    for task in tasks:
        labelled = [r[task] for r in rows if r[task][0] != IGNORE_INDEX]
        if labelled:
            stats[task] = classification_report(
                [max(range(len(p)), key=p.__getitem__) for _, p in labelled],
                [ref for ref, _ in labelled], encoder_labels(encoders[task]), task,
            )
    return stats


# What validation reports per task, and which of those it also averages over the tasks.
TASK_METRICS = ("accuracy", "macro_f1", "unweighted_accuracy")
MEAN_METRICS = ("accuracy", "macro_f1")


def validation_metrics(tasks) -> list[str]:
    """The scores validation reports (:func:`flat_stats`, besides the loss) for ``tasks``:
    the ones ``best_metric`` may name.

    >>> validation_metrics(["intent"])
    ['intent_accuracy', 'intent_macro_f1', 'intent_unweighted_accuracy', 'mean_accuracy', 'mean_macro_f1']
    """
    return ([f"{task}_{key}" for task in TASKS if task in tasks for key in TASK_METRICS]
            + [f"mean_{key}" for key in MEAN_METRICS])


def file_train_logger(path):
    """SpeechBrain's ``FileTrainLogger`` writing to ``path``.

    Its module warns on import that without torchvision it "cannot save figures": that is
    its sample logger, which nothing here uses (the figures here are matplotlib's), so
    every run printed a false alarm. Only that line is dropped.
    """
    logging.getLogger("speechbrain.utils.train_logger").addFilter(_not_torchvision_warning)
    from speechbrain.utils.train_logger import FileTrainLogger

    return FileTrainLogger(path)


def _not_torchvision_warning(record: logging.LogRecord) -> bool:
    return "torchvision is not available" not in record.getMessage()


def flat_stats(stats: dict) -> dict:
    """``{"loss", "<task>_accuracy", "<task>_macro_f1", ..., "mean_accuracy", "mean_macro_f1"}``
    (:func:`validation_metrics` and the loss)."""
    flat = {"loss": stats["loss"]}
    for task in TASKS:
        if task in stats:
            for key in TASK_METRICS:
                flat[f"{task}_{key}"] = stats[task][key]
    for key in MEAN_METRICS:
        values = [stats[t][key] for t in TASKS if t in stats]
        if values:
            flat[f"mean_{key}"] = sum(values) / len(values)
    return flat


def _group_lr(optimizer, name) -> float:
    lrs = [g["lr"] for g in optimizer.param_groups if g.get("name") == name]
    return lrs[0] if lrs else 0.0


def evaluate_manifest(accelerator, model, manifest, encoders, hparams, desc="eval",
                      batching=None) -> dict:
    """:func:`evaluate` over one manifest (or a list), batched by ``batching`` (default
    ``eval_batching``) and sharded between processes; each task's report also holds its
    accuracy per speaker (``by_speaker``) when the manifest names speakers."""
    dataset, rows = D.load_split(manifest, encoders)
    loader = D.make_loader(dataset, rows, batching or hparams["eval_batching"], False,
                           hparams["seed"], shard=_shard(accelerator))
    stats = evaluate(accelerator, model, loader, encoders, desc=desc)
    _add_accuracy_by_speaker(stats, {row["id"]: row.get("speaker") or "" for row in rows})
    return stats


def load_best(hparams, accelerator: Accelerator):
    """``(model, label encoders, checkpoint)``: the run's best checkpoint (``best_metric``)
    loaded into a model on the accelerator's device."""
    encoders = D.load_label_encoders(hparams["save_folder"], hparams.get("tasks", TASKS))
    model = build_model(hparams, encoders)
    checkpointer = AtomicCheckpointer(
        hparams["save_folder"], recoverables={"encoder": model.encoder, "heads": model.heads}
    )
    best = checkpointer.recover_if_possible(max_key=hparams.get("best_metric", "mean_accuracy"))
    if best is None:
        raise FileNotFoundError(f"{hparams['save_folder']}: no checkpoint to test")
    return model.to(accelerator.device), encoders, best


def test(hparams, accelerator: Accelerator | None = None) -> dict:
    """Score the best checkpoint on each manifest in ``hparams["test_manifests"]``.

    Writes ``test_metrics.json``, per-row ``predictions_<name>.csv`` and confusion-matrix
    PNGs into ``output_folder`` and returns the metrics. On a checkpoint with class
    biases (:mod:`multitask.class_bias`) a calibrated task's figures also hold
    ``without_class_bias``.

    Batches follow ``test_batching`` when set, else ``eval_batching``. ``{batch_size: 1}``
    scores each clip alone, as :meth:`MultitaskClassifier.classify_file` does: an
    encoder without an attention mask (group norm, as wav2vec2-base) sees a batch's
    padding, so batched figures are not quite the ones a user of the model gets.
    """
    accelerator = accelerator or make_accelerator(hparams)
    model, encoders, best = load_best(hparams, accelerator)
    batching = hparams.get("test_batching") or hparams["eval_batching"]
    results = {"checkpoint": os.path.basename(best.path), "checkpoint_meta": best.meta,
               "batching": dict(batching)}
    out = hparams["output_folder"]
    calibrated = read_class_bias(out, best)
    for name, manifest in (hparams.get("test_manifests") or {}).items():
        stats = evaluate_manifest(accelerator, model, manifest, encoders, hparams,
                                  desc=f"test {name}", batching=batching)
        if calibrated:
            add_figures_without_bias(stats, calibrated, lambda task: encoder_labels(encoders[task]))
        predictions = stats.pop("rows")
        shown = ", ".join(display_path(path) for path in manifest_paths(manifest))
        results[name] = {"manifest": shown, **stats}
        if accelerator.is_main_process:
            _write_predictions(os.path.join(out, f"predictions_{name}.csv"), predictions, encoders)
            for task in encoders:
                if task in stats:
                    plot_confusion_matrix(
                        stats[task]["confusion_matrix"], encoder_labels(encoders[task]),
                        os.path.join(out, f"confusion_{name}_{task}.png"),
                        title=f"{task} — {name} ({stats[task]['num_examples']} utterances)",
                    )
        accelerator.print(f"test {name}: " + " | ".join(
            f"{k} {v:.4f}" for k, v in flat_stats(stats).items()))
    if accelerator.is_main_process:
        with open(os.path.join(out, "test_metrics.json"), "w", encoding="utf-8") as fout:
            json.dump(results, fout, indent=2, default=_json_default)
    return results


def _add_accuracy_by_speaker(stats: dict, speakers: dict) -> None:
    """``stats[task]["by_speaker"]`` for each scored task of :func:`evaluate`'s ``stats``,
    when ``speakers`` (row id to speaker) names any; rows without one count as "(none)"."""
    if not any(speakers.values()):
        return
    for task in [t for t in TASKS if t in stats]:
        labelled = [(row["id"], *row[task]) for row in stats["rows"] if row[task][0] != IGNORE_INDEX]
        if labelled:
            stats[task]["by_speaker"] = accuracy_by_group(
                [max(range(len(probs)), key=probs.__getitem__) for _, _, probs in labelled],
                [ref for _, ref, _ in labelled],
                [speakers[utt] or "(none)" for utt, _, _ in labelled])


def _write_predictions(path, rows, encoders) -> None:
    """One CSV line per utterance: reference, prediction and its probability per task."""
    tasks = list(encoders)
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["id", *[f"{t}_{k}" for t in tasks for k in ("ref", "pred", "prob")]])
        for row in sorted(rows, key=lambda r: r["id"]):
            cells = [row["id"]]
            for task in tasks:
                ref, probs = row[task]
                names = encoder_labels(encoders[task])
                pred = max(range(len(probs)), key=probs.__getitem__)
                cells += [names[ref] if ref != IGNORE_INDEX else "", names[pred], f"{probs[pred]:.4f}"]
            writer.writerow(cells)


def _shard(accelerator) -> tuple[int, int]:
    return accelerator.process_index, accelerator.num_processes


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return value.item()
    return str(value)
