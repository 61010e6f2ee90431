"""A training run's last step: per-class biases fitted on labelled calls.

``class_bias_tasks: [emotion]`` and ``class_bias_calls: calls.csv`` in a recipe's
hparams make :func:`calibrate` (run after :func:`multitask.train.fit`) fit, for each
task named, one additive bias per class on the best checkpoint's logits, by
class-balanced cross-entropy on the calls' labelled clips
(:func:`multitask.calibration.fit_class_bias`), and write it into the head's last
bias, so the test, the export and every later load carry it. The demo offers it for
the emotion head, trained on studio sentences and used on telephone calls (off by
default; ``hparams/demo.yaml`` says what it measured and why it is off).

The calls must be in-domain and held out: voices of no test manifest, each class with
``class_bias_min_per_class`` clips or more, and a ``speaker`` column naming 2 voices or
more, by which the fit is cross-validated (is the bias a property of the calls' channel
and wording, or of their few voices?). :func:`check_calls` refuses others before
training.

The record, ``class_bias.json`` in the run's output folder, names the checkpoint it was
written into and the weights file's hash before and after, so rerunning the recipe
never adds the bias twice (nor misses it after a run killed in between). It holds the
bias, the cross-validation, and each validation manifest's figures without and with
the bias; :func:`multitask.train.test` adds the test figures without it, and the
model card says the bias is there.

A run folder trained for more epochs after its calibration resumes from its latest
checkpoint, which carries the biases if it was the best: calibrate a new run instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter

import torch

from .calibration import (
    class_bias_cross_validation,
    fit_class_bias,
    log_probs_of,
)
from .card import display_path
from .manifest import manifest_paths, read_manifests, rows_digest, single_task_copy
from .settings import check_count

RECORD = "class_bias.json"
HEADS_FILE = "heads.ckpt"  # the heads' parameter file in a checkpoint folder


class ClassBiasError(ValueError):
    """Calls, a model or an output folder that per-class biases cannot be fitted on or
    written to; the message names the file or folder."""


def settings(hparams) -> dict | None:
    """``{"tasks", "calls", "min_per_class"}`` from the hparams, None when no task is named."""
    tasks = hparams.get("class_bias_tasks") or []
    if isinstance(tasks, str) or not isinstance(tasks, list | tuple):
        raise ClassBiasError(f"class_bias_tasks must be a list of tasks, e.g. [emotion], not "
                             f"{tasks!r}")
    tasks = list(tasks)
    if not tasks:
        return None
    calls = hparams.get("class_bias_calls")
    if not calls:
        raise ClassBiasError(f"class_bias_tasks {tasks} needs class_bias_calls: a manifest of "
                             "labelled, held-out calls to fit the biases on")
    unknown = sorted(set(tasks) - set(hparams.get("tasks") or tasks))
    if unknown:
        raise ClassBiasError(f"class_bias_tasks {unknown}: not among this run's tasks "
                             f"{hparams.get('tasks')}")
    minimum = hparams.get("class_bias_min_per_class", 10)
    check_count(minimum, "class_bias_min_per_class", ClassBiasError)
    return {"tasks": tasks, "calls": str(calls), "min_per_class": minimum}


def read_record(output_folder, checkpoint) -> dict | None:
    """The run's record if it is complete and its biases are in ``checkpoint``'s weights
    (its name and its heads file's hash match: a checkpoint of a later training, though
    named alike, does not), else None."""
    record = _read_any(output_folder)
    if (not record or record.get("pending")
            or record.get("checkpoint") != os.path.basename(checkpoint.path)):
        return None
    heads = os.path.join(checkpoint.path, HEADS_FILE)
    if not os.path.isfile(heads) or _sha256(heads) != record.get("heads_sha256_after"):
        return None
    return record


def scores(log_probs: torch.Tensor, targets: torch.Tensor, names, task, recall=False) -> dict:
    """Accuracy, unweighted accuracy and macro-F1 of ``log_probs``'s decisions (with
    ``recall``, also each class's recall: None for a class ``targets`` lacks). With a
    bias subtracted from a calibrated model's, the figures it had before calibration."""
    from .metrics import classification_report

    report = classification_report(log_probs.argmax(1).tolist(), targets.tolist(), names, task)
    figures = {key: report[key] for key in ("accuracy", "unweighted_accuracy", "macro_f1")}
    if recall:
        figures["recall"] = {name: c["recall"] if c["support"] else None
                             for name, c in report["per_class"].items()}
    return figures


def add_figures_without_bias(stats: dict, record: dict, names_of) -> None:
    """``stats[task]["without_class_bias"]`` for each calibrated task of an evaluation's
    ``stats`` (:func:`multitask.train.evaluate`, rows still in it) on the calibrated
    checkpoint: what the test would have scored without the biases. ``names_of(task)``:
    the task's class names in index order."""
    for task, entry in record["tasks"].items():
        rows = [row for row in stats["rows"] if row[task][0] >= 0]
        if task in stats and rows:
            log_probs, targets = log_probs_of(rows, task)
            stats[task]["without_class_bias"] = scores(
                log_probs - torch.tensor(entry["bias"]), targets, names_of(task), task)


def calibrate(hparams, accelerator) -> dict | None:
    """Fit and write the biases into the best checkpoint (see the module's docstring);
    returns the record, or None when ``class_bias_tasks`` is empty."""
    from .checkpoints import rewrite_recoverable
    from .head_labels import encoder_labels
    from .train import evaluate_manifest, load_best

    options = settings(hparams)
    out = hparams["output_folder"]
    if options is None:
        if not _read_any(out):
            return None
        _, _, best = load_best(hparams, accelerator)
        carried = read_record(out, best)
        if carried:  # fitted by an earlier run of this folder with the option on
            accelerator.print(f"WARNING: {best.path.name} carries class biases for "
                              f"{sorted(carried['tasks'])} ({RECORD}), though class_bias_tasks "
                              "is now empty; the test and the export keep them")
        return carried
    calls = options["calls"]
    speakers = check_calls(hparams)
    model, encoders, best = load_best(hparams, accelerator)
    heads_file = best.paramfiles["heads"]
    digest = _sha256(heads_file)
    previous = _read_any(out)
    calls_digest = rows_digest(read_manifests(calls))
    if previous and previous.get("checkpoint") == best.path.name:
        fitted = (previous.get("calls_digest"), sorted(previous.get("tasks") or {}))
        if fitted != (calls_digest, sorted(options["tasks"])) and not previous.get("pending"):
            raise ClassBiasError(
                f"{best.path}: its class biases were fitted for {fitted[1]} on "
                f"{previous.get('calls')} as it was then, not for {sorted(options['tasks'])} "
                f"on {calls} as it is now; calibrate a new training run instead")
        if digest == previous.get("heads_sha256_after"):
            accelerator.print(f"class biases already in {best.path.name}")
            return previous
        if previous.get("pending") and digest != previous.get("heads_sha256_before"):
            # Killed after the weights were rewritten, before the record was completed.
            return _finish(out, previous, digest, accelerator)
        if not previous.get("pending"):
            raise ClassBiasError(
                f"{heads_file}: changed since its class biases were written ({RECORD}); "
                "calibrate a new training run instead")

    valid_stats = evaluate_manifest(accelerator, model, hparams["valid_manifests"], encoders,
                                    hparams, desc="calibrate: validation")
    record = {"checkpoint": best.path.name, "calls": display_path(calls),
              "calls_digest": calls_digest,
              "calls_voices": sorted(set(speakers.values())), "pending": True,
              "min_per_class": options["min_per_class"], "heads_sha256_before": digest,
              "tasks": {}}
    for task in options["tasks"]:
        names = encoder_labels(encoders[task])
        # The task's labels only: calls may carry other labels the model does not have
        # (a fine-tuned model's new intents, say).
        task_calls = os.path.join(out, f"class_bias_calls_{task}.csv")
        if accelerator.is_main_process:
            single_task_copy(calls, task, task_calls)
        accelerator.wait_for_everyone()
        rows = evaluate_manifest(accelerator, model, task_calls, encoders, hparams,
                                 desc=f"calibrate: {task} calls")["rows"]
        log_probs, targets = log_probs_of(rows, task)
        # Rounded as recorded, so that every figure below is the written bias's.
        rounded = [round(float(b), 4) for b in fit_class_bias(log_probs, targets)]
        bias = torch.tensor(rounded)
        counts = torch.bincount(targets, minlength=len(names)).tolist()
        valid_rows = [row for row in valid_stats["rows"] if row[task][0] >= 0]
        valid = log_probs_of(valid_rows, task) if valid_rows else None
        record["tasks"][task] = {
            "classes": names,
            "bias": rounded,
            "calls_clips": dict(zip(names, counts, strict=True)),
            "cross_validation": class_bias_cross_validation(
                log_probs, targets, [speakers[row["id"]] for row in rows]),
            # None: no validation row carries the task.
            "validation": valid and {"without": scores(*valid, names, task),
                                     "with": scores(valid[0] + bias, valid[1], names, task)},
        }
    for task, entry in record["tasks"].items():
        head = model.heads[task]
        for index, value in enumerate(entry["bias"]):
            head.offset_logits(torch.arange(head.num_classes) == index, value)
    if accelerator.is_main_process:
        _write(out, record)
        rewrite_recoverable(best, "heads", model.heads)
    accelerator.wait_for_everyone()
    for task, entry in record["tasks"].items():
        cv = entry["cross_validation"]
        accelerator.print(f"{task}: class biases {entry['bias']} written into {best.path.name}; "
                          f"held-out voices' unweighted accuracy {cv['without']} -> {cv['with']}")
    return _finish(out, record, _sha256(heads_file), accelerator)


def _finish(out, record: dict, digest: str, accelerator) -> dict:
    record = {**record, "pending": False, "heads_sha256_after": digest}
    if accelerator.is_main_process:
        _write(out, record)
    accelerator.wait_for_everyone()
    return record


def check_calls(hparams) -> dict:
    """Refuse calls that cannot calibrate this run, before it trains: rows without a
    speaker, speakers of a test manifest, a task with fewer than
    ``class_bias_min_per_class`` clips of a class it was trained on. Returns row id ->
    speaker ({} when no task is to be calibrated)."""
    options = settings(hparams)
    if options is None:
        return {}
    calls = options["calls"]
    rows = read_manifests(calls)
    trained = None
    classes = {}
    for task in options["tasks"]:
        classes[task] = _classes(hparams, task)
        if classes[task] is None:  # a new run: its label encoders come from its training rows
            trained = trained or read_manifests(hparams["train_manifests"])
            classes[task] = sorted({row[task] for row in trained if row.get(task)})
    return check_call_rows(rows, calls, classes, options["min_per_class"],
                           hparams.get("test_manifests") or {})


def check_call_rows(rows: list[dict], calls, classes: dict, min_per_class: int,
                    test_manifests: dict, min_name="class_bias_min_per_class") -> dict:
    """Refuse calls (``rows`` of the manifest ``calls``) that cannot fit biases for the
    tasks of ``classes`` (task -> the model's class names): no rows, rows without a
    speaker, labels the model lacks, fewer than 2 voices or fewer than ``min_per_class``
    clips of a class (the setting ``min_name``), voices of a test manifest (``{name:
    manifest(s)}``). Returns row id -> speaker."""
    if not rows:
        raise ClassBiasError(f"{calls}: no calls to fit class biases on")
    nameless = [row["id"] for row in rows if not row.get("speaker")]
    if nameless:
        raise ClassBiasError(f"{calls}: {len(nameless)} row(s) name no speaker (e.g. "
                             f"{nameless[0]}); the class biases are cross-validated by voice")
    for task, names in classes.items():
        counts = Counter(row[task] for row in rows if row.get(task))
        unknown = sorted(set(counts) - set(names))
        if unknown:
            raise ClassBiasError(f"{calls}: {task} label(s) {unknown} are not among the "
                                 f"model's {list(names)}")
        voices = {row["speaker"] for row in rows if row.get(task)}
        if len(voices) < 2:
            raise ClassBiasError(f"{calls}: the {task} calls need 2 speakers or more, to "
                                 f"cross-validate the biases by voice; they have {sorted(voices)}")
        short = {name: counts[name] for name in names if counts[name] < min_per_class}
        if short:
            raise ClassBiasError(f"{calls}: a per-class bias needs at least {min_per_class} "
                                 f"labelled clips of every {task} class ({min_name}); "
                                 f"too few of {short}")
    speakers = {row["id"]: row["speaker"] for row in rows}
    _check_held_out(speakers, test_manifests, calls)
    return speakers


def _classes(hparams, task) -> list[str] | None:
    """The task's classes from the run's saved label encoder (a resumed run, or a
    fine-tuning run, which writes them before training), else None."""
    from .data import label_encoder_path, load_label_encoders

    if not os.path.isfile(label_encoder_path(hparams["save_folder"], task)):
        return None
    return list(load_label_encoders(hparams["save_folder"], [task])[task].lab2ind)


def _check_held_out(speakers: dict, test_manifests: dict, calls) -> None:
    voices = set(speakers.values())
    for name, manifest in test_manifests.items():
        shared = voices & {row.get("speaker") for row in read_manifests(manifest)}
        if shared:
            raise ClassBiasError(
                f"{calls} and the {name} test ({', '.join(manifest_paths(manifest))}) share "
                f"speakers {sorted(shared)}: the test would score biases fitted on its voices")


def _sha256(path) -> str:
    with open(path, "rb") as fin:
        return hashlib.sha256(fin.read()).hexdigest()


def _read_any(out) -> dict | None:
    path = os.path.join(out, RECORD)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fin:
        return json.load(fin)


def _write(out, record: dict) -> None:
    path = os.path.join(out, RECORD)
    staged = path + ".partial"
    with open(staged, "w", encoding="utf-8") as fout:
        json.dump(record, fout, indent=2)
    os.replace(staged, path)
