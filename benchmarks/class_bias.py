#!/usr/bin/env python3
"""Would a per-class bias, fitted on held-out calls, fix a head's class skew?

The demo's emotion head, trained on studio sentences, heard neutral and happy callers
as other emotions far more often than the reverse (``shift.py``'s ``emotion_recall``).
This benchmark asked whether that skew is a constant offset per class that labelled
calls of *other* voices can measure, without training; it led to the demo's class
biases (``class_bias_tasks``, :mod:`multitask.class_bias`), which training now fits
and writes into the model. On any exported model, calibrated or not, it measures the
skew still there:

1. a model's log-probabilities for every class of one task, on labelled calls (by
   default the demo's held-out calls, spoken by its 4 development timbres) and on a
   test manifest (by default the joint test, 8 timbres heard nowhere);
2. cross-validation by voice on the calls: for every split of their voices into two
   halves, a bias vector (one additive value per class, nothing else) is fitted on one
   half by class-balanced cross-entropy and scored on the other, both ways;
3. the bias fitted on all the calls, applied to the test manifest.

It changes no model; it writes a JSON (``--out``) for a person to read.

    python benchmarks/class_bias.py --model results/demo/model \\
        --out results/bench/class_bias.json

The calls come from ``make demo`` with its class-bias option on
(``results/demo/synth/calls``), from ``recipes/finetune_demo.py``
(``results/finetune/synth/calls``), or directly::

    multitask synth --out results/demo/synth --domain calls \\
        --speakers results/demo/synth/speakers.json \\
        --voices-of results/demo/data/skit_s2i/valid.csv results/demo/data/crema_d/valid.csv

Example
-------
>>> import numpy as np
>>> labels = np.repeat(np.arange(3), 50)
>>> logprobs = np.log(np.full((150, 3), 0.1)); logprobs[np.arange(150), labels] = np.log(0.8)
>>> skewed = logprobs + np.array([0.0, 0.0, -3.0])        # class 2 never wins
>>> before = scores(skewed, labels, ["a", "b", "c"])
>>> before["recall"], before["unweighted_accuracy"]
({'a': 1.0, 'b': 1.0, 'c': 0.0}, 0.6667)
>>> bias = fit_class_bias(torch.tensor(skewed), torch.tensor(labels)).numpy()
>>> scores(skewed + bias, labels, ["a", "b", "c"])["unweighted_accuracy"]
1.0
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np
import torch
from common import write_json

from multitask.calibrate_export import bias_scores as scores
from multitask.calibrate_export import class_log_probs
from multitask.calibration import class_bias_cross_validation, fit_class_bias
from multitask.manifest import ManifestError, single_task_rows

CALLS = "results/demo/synth/calls/calls.csv"
JOINT = "results/demo/synth/joint_test/joint_test.csv"


def labelled_rows(path: str, task: str) -> list[tuple[str, str, str]]:
    """(audio path, label, speaker) of every row of a package manifest that carries
    ``task``'s label (:func:`multitask.manifest.single_task_rows`)."""
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: no such manifest (see this script's docstring for how "
                         "to make the calls; the joint test comes from `make demo`)")
    try:
        rows = single_task_rows(path, task)
    except ManifestError as err:
        raise SystemExit(str(err)) from None
    nameless = [row["id"] for row in rows if not row["speaker"]]
    if nameless:
        raise SystemExit(f"{path}: {len(nameless)} row(s) name no speaker (e.g. {nameless[0]}); "
                         "the bias is cross-validated by voice")
    return [(row["wav"], row[task], row["speaker"]) for row in rows]


def evaluate(classify, names: list[str], task: str, calls, test) -> dict:
    """The cross-validation on ``calls`` and the bias fitted on all of them applied to
    ``test`` (both lists of (path, label, speaker))."""
    index = {name: k for k, name in enumerate(names)}
    unknown = sorted({label for _, label, _ in calls + test} - set(index))
    if unknown:
        raise SystemExit(f"labels {unknown} are not among the model's {task} classes {names}")
    report = {}
    parts = {}
    for part, rows in (("calls", calls), ("test", test)):
        lp, kept, errors = class_log_probs(classify, [r[0] for r in rows], task, names)
        for line in errors:
            print(f"skipped {line}", file=sys.stderr)
        labels = np.array([index[rows[i][1]] for i in kept])
        voices = [rows[i][2] for i in kept]
        parts[part] = (lp, labels, voices)
        report[f"{part}_clips"], report[f"{part}_errors"] = len(kept), errors
    lp, labels, voices = parts["calls"]
    lp_t, labels_t = torch.as_tensor(lp, dtype=torch.float32), torch.as_tensor(labels)
    bias = fit_class_bias(lp_t, labels_t).numpy()
    test_lp, test_labels, _ = parts["test"]
    report.update({
        "classes": names,
        "cross_validation": class_bias_cross_validation(lp_t, labels_t, voices),
        "bias": [round(float(b), 3) for b in bias],
        "test_without": scores(test_lp, test_labels, names),
        "test_with": scores(test_lp + bias, test_labels, names)})
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="+", default=["results/demo/model"],
                        help="exported model folders")
    parser.add_argument("--task", default="emotion")
    parser.add_argument("--calls", default=CALLS, help="labelled calls to fit on (voices unlike the test's)")
    parser.add_argument("--test", default=JOINT, help="the manifest to apply the bias to")
    parser.add_argument("--out", default="results/bench/class_bias.json")
    args = parser.parse_args(argv)
    calls, test = labelled_rows(args.calls, args.task), labelled_rows(args.test, args.task)
    overlap = {s for _, _, s in calls} & {s for _, _, s in test}
    if overlap:
        raise SystemExit(f"{args.calls} and {args.test} share speakers {sorted(overlap)}: "
                         "the bias would be scored on voices it was fitted on")

    from multitask.inference import MultitaskClassifier

    report = {"task": args.task, "calls": os.path.abspath(args.calls),
              "test": os.path.abspath(args.test), "models": {}}
    for model in args.model:
        start = time.time()
        classifier = MultitaskClassifier.from_hparams(
            source=model, savedir=os.path.join(os.path.dirname(args.out) or ".", "class_bias_models",
                                               os.path.basename(os.path.normpath(model))))
        names = list(classifier.labels[args.task])
        # batch_size=1: each clip alone, exactly as classify_file scores it.
        classify = functools.partial(classifier.classify_files, batch_size=1)
        result = evaluate(classify, names, args.task, calls, test)
        result["seconds"] = round(time.time() - start, 1)
        report["models"][os.path.abspath(model)] = result
        cv, before, after = result["cross_validation"], result["test_without"], result["test_with"]
        print(f"{model}: calls, cross-validated by voice, unweighted accuracy "
              f"{cv['without']:.3f} -> {cv['with']:.3f}; test accuracy {before['accuracy']:.3f} -> "
              f"{after['accuracy']:.3f}, macro-F1 {before['macro_f1']:.3f} -> {after['macro_f1']:.3f}")
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
