"""Scoring an exported model on labelled audio: what a bank measures before it deploys.

    multitask evaluate --model org/model --test calls.csv [--test more.csv ...] --out eval/ \
        [--revision REV] [--batch-size 1] [--device cpu]

A team with a published model (a folder or a Hub repo id) and labelled recordings of
its own callers (a manifest: ``id, wav, duration`` and an ``intent`` and/or ``emotion``
column, ``speaker`` when known; ``multitask prepare-csv`` makes one) gets, per manifest
and per task the model has and the manifest labels:

* accuracy, macro-F1 and unweighted accuracy (mean recall over the classes the
  manifest holds), each class's precision, recall and F1, and the confusion matrix,
  all from the package's shipped ``evaluate`` metrics (:mod:`multitask.metrics`);
* accuracy per speaker when the manifest names them: with a handful of voices, how
  far they spread says more about the next caller than the mean does;
* ``metrics.json`` (with the model's identity and a digest of the rows scored),
  ``predictions_<test>.csv`` (each clip's reference, prediction and probability),
  ``confusion_<test>_<task>.png`` and ``report.md``, in ``--out``.

Clips are scored as :meth:`MultitaskClassifier.classify_file` scores them: one at a
time by default (``--batch-size 1``; group-norm encoders see a batch's padding, so
batched figures are not quite the ones a caller gets), files over 45 s in windows.
Every manifest is read and checked against the model's labels before any clip is
scored; a clip that cannot be read is reported, named, and left out of the figures,
which say how many clips they are on.

Example
-------
>>> manifest_names(["data/joint/test.csv", "data/crema_d/test.csv"])
['joint_test', 'crema_d_test']
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import sys
from collections import Counter
from pathlib import Path

from .card import display_path
from .export import ExportError, staged_folder
from .manifest import TASKS, ManifestError, corpus_version, read_manifest, rows_digest
from .settings import check_count

SCORED_AT_ONCE = 32  # clips per classify_files call: the progress bar's step
REPORT = "report.md"
METRICS = "metrics.json"


class EvaluationError(ValueError):
    """The model or a manifest cannot be evaluated; the message names which and why."""


def classify_with_progress(classifier, paths: list[str], *, batch_size: int = 1,
                           desc: str = "scoring", progress: bool = True) -> list[dict]:
    """:meth:`MultitaskClassifier.classify_files` over ``paths`` with a progress bar
    (a step per ``SCORED_AT_ONCE`` clips, or per batch when batches are larger); results in
    input order, an ``error`` entry for each file that cannot be read.

    >>> class Counting:
    ...     calls = []
    ...     def classify_files(self, paths, batch_size, top_k):
    ...         self.calls.append(len(paths))
    ...         return [{"file": p} for p in paths]
    >>> model = Counting()
    >>> len(classify_with_progress(model, ["a.wav"] * 70, batch_size=64, progress=False))
    70
    >>> model.calls
    [64, 6]
    """
    from tqdm.auto import tqdm

    results = []
    step = max(SCORED_AT_ONCE, batch_size)  # a call never cuts a batch short
    with tqdm(total=len(paths), desc=desc, unit="clip", disable=not progress) as bar:
        for start in range(0, len(paths), step):
            chunk = paths[start:start + step]
            results += classifier.classify_files(chunk, batch_size=batch_size, top_k=1)
            bar.update(len(chunk))
    return results


def manifest_names(paths) -> list[str]:
    """A file-name-safe name per manifest: its folder and stem (``joint_test``; the stem
    alone when the folder has its name), made unique with a number where two would read
    alike (case aside).

    >>> manifest_names(["a/Test.csv", "b/a/test.csv", "données/appels.csv", "joint/joint.csv"])
    ['a_Test', 'a_test_2', 'données_appels', 'joint']
    """
    names = []
    for path in map(Path, map(os.fspath, paths)):
        named = path.stem if path.parent.name == path.stem else f"{path.parent.name}_{path.stem}"
        base = re.sub(r"[^\w.-]+", "_", named).strip("_") or "test"
        name, number = base, 2
        while name.casefold() in (n.casefold() for n in names):  # one file on any file system
            name, number = f"{base}_{number}", number + 1
        names.append(name)
    return names


def labelled_tasks(rows: list[dict], model_labels: dict, manifest) -> list[str]:
    """The tasks both the model has and ``manifest``'s rows label; every label of them
    must be one the model knows.

    >>> rows = [{"intent": "balance", "emotion": ""}, {"intent": "", "emotion": "sad"}]
    >>> labelled_tasks(rows, {"intent": ["balance", "card"], "emotion": ["sad"]}, "t.csv")
    ['intent', 'emotion']
    >>> labelled_tasks(rows, {"intent": ["card"]}, "t.csv")
    Traceback (most recent call last):
    ...
    multitask.evaluate_export.EvaluationError: t.csv: intent label(s) ['balance'] are not among the model's ['card']
    """
    tasks = [task for task in model_labels if any(row.get(task) for row in rows)]
    if not tasks:
        held = [task for task in TASKS if any(row.get(task) for row in rows)]
        raise EvaluationError(
            f"{manifest}: no row has a label of the model's tasks {list(model_labels)}"
            + (f" (its rows label {held})" if held else " (its rows have no labels)"))
    for task in tasks:
        unknown = sorted({row[task] for row in rows if row.get(task)} - set(model_labels[task]))
        if unknown:
            shown = unknown[:10] + (["..."] if len(unknown) > 10 else [])
            raise EvaluationError(f"{manifest}: {task} label(s) {shown} are not among the "
                                  f"model's {list(model_labels[task])}")
    return tasks


def evaluate_export(source, tests, out, *, revision=None, batch_size: int = 1, device=None,
                    log=None, progress: bool = True) -> dict:
    """Score ``source`` (a folder or a Hub repo id) on each manifest of ``tests`` and
    write the figures to ``out`` (see the module's docstring); returns what
    ``metrics.json`` holds."""
    from .finetune.parent import parent_identity

    log = log or functools.partial(print, file=sys.stderr)
    check_count(batch_size, "--batch-size", EvaluationError)
    tests = [os.fspath(path) for path in tests]
    if not tests:
        raise EvaluationError("give at least one --test manifest")
    given_twice = sorted({path for path in tests
                          if sum(os.path.abspath(p) == os.path.abspath(path) for p in tests) > 1})
    if given_twice:
        raise EvaluationError(f"{given_twice[0]}: given twice as --test")
    manifests = {path: read_manifest(path) for path in tests}
    for path, rows in manifests.items():
        if not rows:
            raise EvaluationError(f"{path}: the manifest has no rows")
        repeated = sorted(i for i, n in Counter(row["id"] for row in rows).items() if n > 1)
        if repeated:
            raise EvaluationError(f"{path}: {len(repeated)} id(s) on more than one row (e.g. "
                                  f"{repeated[0]!r}); each clip is scored once, by its id")
    out = Path(out)
    if out.exists() and not is_evaluation_folder(out):
        raise EvaluationError(f"{out}: exists and holds no earlier evaluation; give a new --out "
                              "(an evaluation folder is replaced whole)")
    classifier = _load(source, revision, device)
    model_labels = {task: list(classifier.labels[task]) for task in classifier.tasks}
    tasks_of = {path: labelled_tasks(rows, model_labels, path) for path, rows in manifests.items()}

    record = {
        "model": parent_identity(source, revision),
        "batching": {"batch_size": batch_size},
        "tests": {},
    }
    unreadable = []
    with staged_folder(out, replace=True) as staging:
        for (path, rows), name in zip(manifests.items(), manifest_names(tests), strict=True):
            entry = _score_manifest(classifier, path, rows, tasks_of[path], model_labels, name,
                                    staging, batch_size, log, progress)
            record["tests"][name] = entry
            if not entry["scored"]:
                unreadable.append(f"{path}: none of its {entry['clips']} clips could be read")
        (staging / METRICS).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        (staging / REPORT).write_text(report_markdown(record), encoding="utf-8")
    if unreadable:  # the other manifests' figures are written; this one has none
        raise EvaluationError("; ".join(unreadable) + f" (the others' figures are in {out})")
    return record


def is_evaluation_folder(folder: Path) -> bool:
    """Whether ``folder`` is one this command wrote: files only (an evaluation writes no
    folder), and a ``metrics.json`` that is an evaluation's record. A demo's or a
    training run's results folder, which holds a ``metrics.json`` too, is not."""
    try:
        record = json.loads((folder / METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and {"model", "batching", "tests"} <= set(record)
            and not any(path.is_dir() for path in folder.iterdir()))


def _score_manifest(classifier, path, rows, tasks, model_labels, name, out, batch_size, log,
                    progress) -> dict:
    """One manifest's ``metrics.json`` entry; its predictions CSV and confusion PNGs go to
    ``out``. Only rows labelled for one of ``tasks`` are scored."""
    from .metrics import accuracy_by_group, classification_report, plot_confusion_matrix

    ignored = sorted({task for row in rows for task in TASKS if row.get(task)} - set(tasks))
    if ignored:
        log(f"{path}: {ignored} labels are not scored (the model has no such head)")
    rows = [row for row in rows if any(row.get(task) for task in tasks)]
    results = classify_with_progress(classifier, [row["wav"] for row in rows],
                                     batch_size=batch_size, desc=f"scoring {name}",
                                     progress=progress)
    skipped = [result["error"] for result in results if "error" in result]
    for line in skipped:
        log(f"skipped {line}")
    scored = [(row, result) for row, result in zip(rows, results, strict=True)
              if "error" not in result]
    entry = {
            "manifest": display_path(path),
            "rows_digest": rows_digest([row for row, _ in scored]),
            "corpus_version": corpus_version(path),
            "clips": len(rows),
            "scored": len(scored),
            "skipped": skipped,
        "scored_in_windows": sum("windows" in result for _, result in scored),
        "labels_not_scored": ignored,
    }
    for task in tasks:
        names = model_labels[task]
        labelled = [(row, result) for row, result in scored if row.get(task)]
        if not labelled:
            entry[task] = {"num_examples": 0, "note": "every labelled clip was skipped"}
            continue
        predictions = [names.index(result[task]["label"]) for _, result in labelled]
        references = [names.index(row[task]) for row, _ in labelled]
        report = classification_report(predictions, references, names, task)
        speakers = [row.get("speaker") or "" for row, _ in labelled]
        if any(speakers):
            report["by_speaker"] = accuracy_by_group(
                predictions, references, [s or "(none)" for s in speakers])
        entry[task] = report
        plot_confusion_matrix(report["confusion_matrix"], names,
                              out / f"confusion_{name}_{task}.png",
                              title=f"{task} — {name} ({report['num_examples']} clips)")
    _write_predictions(out / f"predictions_{name}.csv", scored, tasks)
    log(f"{name}: " + "; ".join(_summary(task, entry[task]) for task in tasks)
        + (f" ({len(skipped)} clip(s) skipped)" if skipped else ""))
    return entry


def report_markdown(record: dict) -> str:
    """``report.md``: a table per test, the spread over speakers and the confusion plots.

    >>> entry = {"manifest": "x/test.csv", "clips": 3, "scored": 2, "skipped": ["a.wav: empty"],
    ...          "scored_in_windows": 0, "intent": {"num_examples": 2, "accuracy": 0.5,
    ...          "macro_f1": 0.333, "unweighted_accuracy": 0.5}}
    >>> text = report_markdown({"model": {"source": "m"}, "batching": {"batch_size": 1},
    ...                         "tests": {"x_test": entry}})
    >>> "| intent | 2 | 0.500 | 0.333 | 0.500 |" in text, "1 clip(s) could not be read" in text
    (True, True)
    """
    model = record["model"]
    shown = model.get("source", "?") + (f" (revision {model['revision']})"
                                        if model.get("revision") else "")
    clips = ("one at a time, as `classify_file` scores them"
             if record["batching"]["batch_size"] == 1
             else f"in batches of {record['batching']['batch_size']}")
    lines = [f"# Evaluation of {shown}", "", f"Clips were scored {clips}.", ""]
    for name, entry in record["tests"].items():
        lines += [f"## {name} (`{entry['manifest']}`)", ""]
        note = f"{entry['scored']} of {entry['clips']} clips scored."
        if entry["skipped"]:
            note += (f" {len(entry['skipped'])} clip(s) could not be read and are not in the "
                     "figures (listed in metrics.json).")
        if entry.get("scored_in_windows"):
            note += f" {entry['scored_in_windows']} clip(s) over 45 s were scored in windows."
        lines += [note, "", "| task | clips | accuracy | macro-F1 | unweighted accuracy |",
                  "| --- | --- | --- | --- | --- |"]
        tasks = [task for task in TASKS if task in entry]
        for task in tasks:
            figures = entry[task]
            if not figures["num_examples"]:
                lines.append(f"| {task} | 0 | – | – | – |")
                continue
            lines.append(f"| {task} | {figures['num_examples']} | {figures['accuracy']:.3f} | "
                         f"{figures['macro_f1']:.3f} | {figures['unweighted_accuracy']:.3f} |")
        lines.append("")
        for task in tasks:
            by_speaker = entry[task].get("by_speaker")
            if by_speaker:
                low = min(by_speaker.items(), key=lambda item: item[1]["accuracy"])
                high = max(by_speaker.items(), key=lambda item: item[1]["accuracy"])
                lines.append(f"- {task} by speaker ({len(by_speaker)} speakers): from "
                             f"{low[1]['accuracy']:.3f} ({low[0]}) to {high[1]['accuracy']:.3f} "
                             f"({high[0]})")
        for task in tasks:
            if entry[task]["num_examples"]:
                lines.append(f"\n![{task} confusion matrix](confusion_{name}_{task}.png)")
        lines.append("")
    return "\n".join(lines) + "\n"


def _summary(task: str, figures: dict) -> str:
    if not figures["num_examples"]:
        return f"{task}: no clip scored"
    return (f"{task} accuracy {figures['accuracy']:.3f}, macro-F1 {figures['macro_f1']:.3f}, "
            f"unweighted {figures['unweighted_accuracy']:.3f} ({figures['num_examples']} clips)")


def _write_predictions(path: Path, scored: list, tasks: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fout:
        writer = csv.writer(fout)
        writer.writerow(["id", "speaker", *[f"{t}_{k}" for t in tasks for k in ("ref", "pred", "prob")]])
        for row, result in scored:
            cells = [row["id"], row.get("speaker", "")]
            for task in tasks:
                cells += [row.get(task, ""), result[task]["label"], f"{result[task]['prob']:.4f}"]
            writer.writerow(cells)


def _load(source, revision, device):
    from .inference import MultitaskClassifier, load_failure

    try:
        return MultitaskClassifier.from_hparams(
            source=os.fspath(source), revision=revision,
            run_opts={"device": device} if device else None)
    except Exception as err:
        raise EvaluationError(load_failure(source, err)) from err


def add_parser(subparsers) -> None:
    """Register ``evaluate`` on an argparse subparsers object."""
    from .cli import add_device_option, positive_int

    parser = subparsers.add_parser(
        "evaluate", help="Score an exported model on your labelled manifests",
        description="Accuracy, macro-F1, unweighted accuracy, per-speaker accuracy and "
                    "confusion matrices of an exported model (folder or Hub repo id) on "
                    "labelled manifests, each clip scored as classify_file scores it (with "
                    "the default --batch-size 1).")
    parser.add_argument("--model", required=True, metavar="SOURCE", help="folder or repo id")
    parser.add_argument("--revision", help="Hub branch, tag or commit")
    parser.add_argument("--test", action="append", required=True, metavar="MANIFEST",
                        help="labelled manifest to score (repeatable)")
    parser.add_argument("--out", required=True, help="folder for metrics.json, report.md, "
                                                      "predictions and confusion plots")
    parser.add_argument("--batch-size", type=positive_int, default=1,
                        help="clips per forward pass (default 1: each clip alone)")
    add_device_option(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    try:
        record = evaluate_export(args.model, args.test, args.out, revision=args.revision,
                                 batch_size=args.batch_size, device=args.device)
    except (EvaluationError, ManifestError, ExportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({name: {task: {key: entry[task].get(key) for key in
                                    ("num_examples", "accuracy", "macro_f1", "unweighted_accuracy")}
                             for task in TASKS if task in entry}
                      for name, entry in record["tests"].items()}, indent=2))
    return 0
