"""The demo's results: ``metrics.json`` (a fixed contract) and ``report.md``.

``make demo`` trains on the synthetic corpus and scores the model on the joint IVR
test (voices held out of both training corpora, half of the phrasings held out of
training, both labels on every utterance). This module turns the training run's
``test_metrics.json`` and the feature baseline's scores into the two files people
read: ``metrics.json`` for machines (and the README), ``report.md`` for people.
"""

from __future__ import annotations

import json
import os
import shutil

from .card import describe_test_batching, score_text
from .curves import CURVES_FILE

CONTRACT_TASK_KEYS = {
    "intent": ("accuracy", "macro_f1"),
    "emotion": ("accuracy", "unweighted_accuracy", "macro_f1"),
}


def demo_metrics(test_metrics: dict, test_name: str, train_seconds: float, total_seconds: float,
                 baseline: dict | None = None) -> dict:
    """The ``results/demo/metrics.json`` contract, from ``test_metrics.json``.

    Example
    -------
    >>> scores = {"joint": {"intent": {"accuracy": 0.9, "macro_f1": 0.8, "unweighted_accuracy": 0.9},
    ...                     "emotion": {"accuracy": 0.7, "macro_f1": 0.6, "unweighted_accuracy": 0.7}}}
    >>> m = demo_metrics(scores, "joint", 60.0, 90.0)
    >>> m["intent"], m["test_set"]
    ({'accuracy': 0.9, 'macro_f1': 0.8}, 'joint')
    """
    scored = test_metrics[test_name]
    metrics = {
        task: {key: scored[task][key] for key in keys} for task, keys in CONTRACT_TASK_KEYS.items()
    }
    metrics.update(test_set=test_name, train_seconds=round(train_seconds, 1),
                   total_seconds=round(total_seconds, 1))
    if _utterances(scored):
        metrics["test_utterances"] = _utterances(scored)
    metrics["checkpoint"] = test_metrics.get("checkpoint")
    if baseline and test_name in baseline:
        metrics["baseline"] = {
            task: {key: baseline[test_name][task][key] for key in keys}
            for task, keys in CONTRACT_TASK_KEYS.items() if task in baseline[test_name]
        }
    return metrics


def _utterances(scored: dict) -> int:
    """The clips a test set holds: the most any of its tasks was scored on (0: unknown).

    >>> _utterances({"intent": {"num_examples": 420}, "emotion": {"num_examples": 420}})
    420
    """
    return max((scored[task].get("num_examples", 0) for task in CONTRACT_TASK_KEYS
                if isinstance(scored.get(task), dict)), default=0)


def _host_line(host: dict | None) -> list[str]:
    """The machine a report's times were measured on (none for a report without one).

    >>> _host_line({"cpu": "AMD EPYC", "torch_threads": 2, "matmul_gflops_at_start": 45.2,
    ...             "matmul_gflops_at_end": 51.0})
    ['On AMD EPYC, 2 threads: fp32 matrix multiply at 45.2 GFLOP/s at the start, 51.0 at the end (times scale inversely with it).']
    """
    if not host:
        return []
    return [f"On {host['cpu']}, {host['torch_threads']} threads: fp32 matrix multiply at "
            f"{host['matmul_gflops_at_start']} GFLOP/s at the start, "
            f"{host['matmul_gflops_at_end']} at the end (times scale inversely with it)."]


def write_report(out_dir, test_metrics: dict, metrics: dict, train_folder, datasheet=None,
                 baseline: dict | None = None, predictions: list | None = None,
                 best_metric: str = "mean_accuracy") -> str:
    """Write ``report.md`` with the results tables; copy the training curves and the
    confusion-matrix PNGs beside it. ``best_metric`` is the run's, which chose the
    checkpoint."""
    lines = ["# Demo report", "",
             f"Model checkpoint `{test_metrics.get('checkpoint')}`; training took "
             f"{metrics['train_seconds']:.0f} s, the whole demo {metrics['total_seconds']:.0f} s.",
             *_host_line(metrics.get("host")), ""]
    lines += ["## Results", "",
              "| test set (utterances) | system | intent acc | intent macro-F1 | emotion acc | emotion UA | emotion macro-F1 |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, scored in test_metrics.items():
        if not isinstance(scored, dict) or not ({"intent", "emotion"} & set(scored)):
            continue
        shown = f"{name} ({_utterances(scored)})" if _utterances(scored) else name
        lines.append(_row(shown, "multitask wav2vec2", scored))
        uncalibrated = {task: scored[task]["without_class_bias"] for task in CONTRACT_TASK_KEYS
                        if "without_class_bias" in scored.get(task, {})}
        if uncalibrated:
            lines.append(_row(shown, "the same, without class biases", uncalibrated))
        if baseline and name in baseline:
            lines.append(_row(shown, "feature baseline (MLP)", baseline[name]))
    lines += ["", "`joint` is the real IVR case: banking queries spoken with emotion by voices held "
              "out of both training corpora, half of them in phrasings never seen in training. "
              "`intent` and `emotion` are the held-out splits of each corpus. The feature "
              "baseline is the project's original approach: per-utterance means of MFCC, "
              "zero-crossing rate, RMS, chroma and mel features fed to a small classifier, "
              "trained on the same splits."
              + (" " + describe_test_batching(test_metrics["batching"])
                 if test_metrics.get("batching") else ""), ""]
    lines += _class_bias_lines(metrics.get("class_bias"))
    lines += _by_voice(test_metrics)
    curves = os.path.join(train_folder, CURVES_FILE)
    if os.path.isfile(curves):
        shutil.copy(curves, os.path.join(out_dir, CURVES_FILE))
        lines += ["## Training", "", "Losses and validation scores per epoch; the dotted line "
                  f"marks the checkpoint kept (the best `{best_metric}` on validation), which "
                  "the tests above score.", "", f"![training curves]({CURVES_FILE})", ""]
    figures = []
    for png in sorted(os.listdir(train_folder)):
        if png.startswith("confusion_") and png.endswith(".png"):
            shutil.copy(os.path.join(train_folder, png), os.path.join(out_dir, png))
            figures.append(png)
    if figures:
        lines += ["## Confusion matrices", ""]
        lines += [f"![{png[:-4]}]({png})" for png in figures]
        lines.append("")
    if predictions:
        lines += ["## Reloaded export, a few predictions", "",
                  "| file | intent | p | emotion | p |", "| --- | --- | --- | --- | --- |"]
        for p in predictions:
            if "error" in p:
                lines.append(f"| {p.get('file')} | error: {p['error']} | | | |")
            else:
                lines.append(f"| {os.path.basename(p['file'])} | {p['intent']} | {p['intent_prob']:.2f} "
                             f"| {p['emotion']} | {p['emotion_prob']:.2f} |")
        lines.append("")
    if datasheet:
        lines += [f"The data: see the generator's datasheet, `{os.path.basename(datasheet)}`.", ""]
    path = os.path.join(out_dir, "report.md")
    with open(path, "w", encoding="utf-8") as fout:
        fout.write("\n".join(lines))
    return path


def class_bias_summary(record: dict | None, test_metrics: dict, test_name: str) -> dict | None:
    """For ``metrics.json``: each calibrated task's biases, what they were fitted on, their
    cross-validation by voice and ``test_name``'s figures without them.

    >>> record = {"calls": "calls/calls.csv", "calls_voices": ["a", "b"], "tasks": {"emotion": {
    ...     "classes": ["x", "y"], "bias": [0.0, 0.5], "calls_clips": {"x": 9, "y": 9},
    ...     "cross_validation": {"without": 0.5, "with": 0.6, "folds": [], "skipped": []},
    ...     "validation": {"without": {"accuracy": 0.8}, "with": {"accuracy": 0.7}}}}}
    >>> scored = {"joint": {"emotion": {"without_class_bias": {"accuracy": 0.4}}}}
    >>> summary = class_bias_summary(record, scored, "joint")["emotion"]
    >>> summary["bias"], summary["cross_validation"], summary["test_without"]
    ({'x': 0.0, 'y': 0.5}, {'without': 0.5, 'with': 0.6}, {'accuracy': 0.4})
    """
    if not record:
        return None
    summary = {}
    for task, entry in record["tasks"].items():
        summary[task] = {
            "bias": dict(zip(entry["classes"], entry["bias"], strict=True)),
            "calls": record["calls"], "calls_voices": record["calls_voices"],
            "calls_clips": sum(entry["calls_clips"].values()),
            "cross_validation": {key: entry["cross_validation"][key] for key in ("without", "with")},
            "validation": entry["validation"],
            "test_without": test_metrics.get(test_name, {}).get(task, {}).get("without_class_bias"),
        }
    return summary


def _class_bias_lines(summary: dict | None) -> list[str]:
    lines = []
    for task, entry in (summary or {}).items():
        cv = entry["cross_validation"]
        lines += [f"The {task} head's logits carry per-class biases, fitted after training on "
                  f"{entry['calls_clips']} held-out calls (`{entry['calls']}`, voices "
                  f"{', '.join(entry['calls_voices'])}): "
                  + ", ".join(f"{name} {value:+.2f}" for name, value in entry["bias"].items())
                  + f". Fitted on some of those voices, they moved the others' unweighted "
                  f"accuracy from {score_text(cv['without'])} to {score_text(cv['with'])}"
                  + _validation_clause(task, entry["validation"]) + ". The table's rows "
                  "\"without class biases\" are the same model's figures before them.", ""]
    return lines


def _validation_clause(task: str, validation: dict | None) -> str:
    if not validation:
        return ""
    return (f"; the {task} validation accuracy from "
            f"{score_text(validation['without']['accuracy'])} to "
            f"{score_text(validation['with']['accuracy'])}")


def _by_voice(test_metrics: dict) -> list[str]:
    """A table per test set of its accuracy in each voice (speaker), where it has them.

    >>> scored = {"joint": {"intent": {"by_speaker": {"ann": {"num_examples": 4, "accuracy": 0.5}}},
    ...                     "emotion": {"by_speaker": {"ann": {"num_examples": 4, "accuracy": 0.25}}}}}
    >>> print("\\n".join(_by_voice(scored)[6:]))
    | voice | utterances | intent acc | emotion acc |
    | --- | --- | --- | --- |
    | ann | 4 | 0.500 | 0.250 |
    <BLANKLINE>
    """
    lines = []
    for name, scored in test_metrics.items():
        if not isinstance(scored, dict):
            continue
        tasks = [t for t in CONTRACT_TASK_KEYS if "by_speaker" in scored.get(t, {})]
        if not tasks:
            continue
        if not lines:
            lines += ["## By voice", "", "In the demo's corpus every test voice is unseen in "
                      "training; how far they spread says more about the next caller than "
                      "their mean does.", ""]
        voices = sorted({v for t in tasks for v in scored[t]["by_speaker"]})
        lines += [f"`{name}`:", "", "| voice | utterances | "
                  + " | ".join(f"{t} acc" for t in tasks) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in tasks) + " |"]
        for voice in voices:
            cells = [scored[t]["by_speaker"].get(voice) for t in tasks]
            count = max(c["num_examples"] for c in cells if c)
            lines.append(f"| {voice} | {count} | "
                         + " | ".join(f"{c['accuracy']:.3f}" if c else "–" for c in cells) + " |")
        lines.append("")
    return lines


def _row(test_name, system, scored) -> str:
    def cell(task, key):
        return f"{scored[task][key]:.3f}" if task in scored else "–"

    return (f"| {test_name} | {system} | {cell('intent', 'accuracy')} | {cell('intent', 'macro_f1')} "
            f"| {cell('emotion', 'accuracy')} | {cell('emotion', 'unweighted_accuracy')} "
            f"| {cell('emotion', 'macro_f1')} |")


def write_json(path, data) -> None:
    with open(path, "w", encoding="utf-8") as fout:
        json.dump(data, fout, indent=2)
