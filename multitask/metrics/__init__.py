"""Classification metrics, computed through ``evaluate`` with scripts shipped in this package.

Each metric is an ``evaluate.Metric`` script in a folder of its own
(``multitask/metrics/<name>/<name>.py``, numpy only). :func:`load_metric` hands the
folder's absolute path to ``evaluate.load``, which copies the script into its modules
cache (``$HF_HOME/modules/evaluate_modules/metrics/<name>/<hash>/``) and imports it
from there: no Hub lookup, no network, so it works with ``HF_HUB_OFFLINE=1`` and an
empty ``HF_HOME``. The cache directory must be writable.

:func:`classification_report` gathers the numbers an evaluation reports per task and
:func:`plot_confusion_matrix` draws the matrix as a PNG.

Absent classes: a class of the label set that has neither references nor predictions
in the scored data is left out of macro-F1; unweighted accuracy (mean per-class
recall) averages over the classes that have references. Both match scikit-learn
(``f1_score(average="macro")`` over the classes present, ``balanced_accuracy_score``).

Example
-------
>>> report = classification_report([0, 1, 1, 2], [0, 1, 2, 2], ["calm", "happy", "sad"], "emotion")
>>> report["accuracy"], report["unweighted_accuracy"], round(report["macro_f1"], 4)
(0.75, 0.8333333333333334, 0.7778)
>>> report["confusion_matrix"]
[[1, 0, 0], [0, 1, 0], [0, 1, 1]]
>>> report["per_class"]["sad"]
{'precision': 1.0, 'recall': 0.5, 'f1': 0.6666666666666666, 'support': 2}
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "METRIC_NAMES",
    "classification_report",
    "load_metric",
    "macro_f1_over_references",
    "metric_path",
    "plot_confusion_matrix",
]

METRIC_NAMES = ("accuracy", "macro_f1", "unweighted_accuracy", "confusion_matrix")

_METRICS_DIR = Path(__file__).resolve().parent
_cache: dict[str, object] = {}
_cache_lock = threading.Lock()


def metric_path(name: str) -> Path:
    """Absolute path of the folder holding the shipped metric script ``name``.

    Parameters
    ----------
    name : str
        One of :data:`METRIC_NAMES`.

    Returns
    -------
    pathlib.Path
        ``.../multitask/metrics/<name>``, which contains ``<name>.py``.

    Raises
    ------
    ValueError
        ``name`` is not a shipped metric.
    FileNotFoundError
        The script is missing from the installation (package data not installed).

    Examples
    --------
    >>> metric_path("macro_f1").name, (metric_path("macro_f1") / "macro_f1.py").is_file()
    ('macro_f1', True)
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {', '.join(METRIC_NAMES)}")
    folder = _METRICS_DIR / name
    if not (folder / f"{name}.py").is_file():
        raise FileNotFoundError(
            f"metric script {folder / (name + '.py')} is missing: the package was installed "
            "without its package data (metrics/*/*.py)"
        )
    return folder


def load_metric(name: str):
    """Load a shipped metric script with ``evaluate.load(<absolute folder path>)``, once per process.

    The path is absolute, so ``evaluate`` takes its local-script branch and never
    consults the Hub. The module is created with ``keep_in_memory=True``: ``compute``
    writes no Arrow cache files or lock files, so concurrent processes (e.g. several
    Accelerate ranks) do not contend. The loaded module is cached per process and
    reused; every ``compute(predictions=..., references=...)`` call is independent.

    Parameters
    ----------
    name : str
        One of :data:`METRIC_NAMES`: ``"accuracy"``, ``"macro_f1"``,
        ``"unweighted_accuracy"``, ``"confusion_matrix"``.

    Returns
    -------
    evaluate.EvaluationModule
        Call ``.compute(predictions=..., references=..., **kwargs)``; the keyword
        arguments each metric accepts are in its ``.inputs_description``.
        Pass integer class ids: ``evaluate`` casts inputs to int32 before the script
        sees them, so floats would be silently truncated.

    Raises
    ------
    ValueError
        ``name`` is not a shipped metric.

    Examples
    --------
    >>> accuracy = load_metric("accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
    >>> load_metric("accuracy") is accuracy
    True
    """
    folder = metric_path(name)
    key = f"{os.getpid()}:{name}"
    with _cache_lock:
        module = _cache.get(key)
        if module is None:
            import evaluate

            module = evaluate.load(str(folder), keep_in_memory=True)
            _cache[key] = module
    return module


def _as_ids(values, name: str, task: str, num_classes: int) -> np.ndarray:
    """Validate a 1-D sequence of integer class ids in ``[0, num_classes)``."""
    arr = np.asarray(values.cpu() if hasattr(values, "cpu") else values)
    if arr.ndim != 1:
        raise ValueError(f"{task}: {name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{task}: {name} is empty: there is nothing to score")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{task}: {name} must be integer class ids, got dtype {arr.dtype}")
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise ValueError(
            f"{task}: {name} contain label id(s) out of range {np.unique(bad)[:10].tolist()}; "
            f"expected 0..{num_classes - 1} for {num_classes} label names"
        )
    return arr.astype(np.int64, copy=False)


def classification_report(
    predictions: Sequence[int],
    references: Sequence[int],
    label_names: Sequence[str],
    task: str,
) -> dict:
    """Accuracy, macro-F1, unweighted accuracy, confusion matrix and per-class scores.

    Every number comes from the shipped ``evaluate`` metrics (:func:`load_metric`),
    computed over the full label set ``range(len(label_names))``.

    Parameters
    ----------
    predictions, references : sequence of int
        Predicted and reference class ids (list, numpy array or CPU/GPU tensor), one
        per example, indexing ``label_names``.
    label_names : sequence of str
        Class names; ``label_names[i]`` is class id ``i``.
    task : str
        Task name (e.g. ``"intent"``, ``"emotion"``); used in error messages and
        stored in the report.

    Returns
    -------
    dict
        ``accuracy`` : float
        ``macro_f1`` : float -- over classes present in references or predictions.
        ``unweighted_accuracy`` : float -- mean per-class recall over classes present
        in the references (UA / balanced accuracy); computed for every task.
        ``confusion_matrix`` : list of list of int -- rows reference, columns
        prediction, in ``label_names`` order.
        ``per_class`` : ``{name: {"precision", "recall", "f1", "support"}}`` for every
        name; 0/0 ratios are reported as 0.0 (scikit-learn's ``zero_division=0``),
        so a class with ``support == 0`` and no predictions shows zeros but is not
        part of ``macro_f1``.
        ``num_examples`` : int
        ``task`` : str, ``label_names`` : list of str -- so the report describes itself.
        All values are plain Python types (JSON-serialisable).

    Raises
    ------
    ValueError
        Empty input, length mismatch, non-integer ids, ids outside
        ``range(len(label_names))``, or empty / duplicate label names.

    Examples
    --------
    >>> r = classification_report([0, 1, 1, 1], [0, 1, 1, 0], ["yes", "no", "maybe"], "intent")
    >>> r["accuracy"], round(r["macro_f1"], 4), r["num_examples"]
    (0.75, 0.7333, 4)
    >>> r["per_class"]["maybe"]
    {'precision': 0.0, 'recall': 0.0, 'f1': 0.0, 'support': 0}
    """
    names = [str(n) for n in label_names]
    if not names:
        raise ValueError(f"{task}: label_names is empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{task}: label_names contain duplicates: {names}")
    k = len(names)
    pred = _as_ids(predictions, "predictions", task, k)
    ref = _as_ids(references, "references", task, k)
    if pred.shape != ref.shape:
        raise ValueError(
            f"{task}: predictions and references differ in length: {pred.size} vs {ref.size}"
        )
    inputs = {"predictions": pred, "references": ref, "num_classes": k}
    accuracy = load_metric("accuracy").compute(**inputs)["accuracy"]
    f1 = load_metric("macro_f1").compute(**inputs, return_per_class=True)
    ua = load_metric("unweighted_accuracy").compute(**inputs)["unweighted_accuracy"]
    matrix = load_metric("confusion_matrix").compute(**inputs)["confusion_matrix"]
    per_class = {
        name: {
            "precision": float(f1["precision"][i]),
            "recall": float(f1["recall"][i]),
            "f1": float(f1["f1"][i]),
            "support": int(f1["support"][i]),
        }
        for i, name in enumerate(names)
    }
    return {
        "accuracy": float(accuracy),
        "macro_f1": float(f1["macro_f1"]),
        "unweighted_accuracy": float(ua),
        "confusion_matrix": np.asarray(matrix).astype(int).tolist(),
        "per_class": per_class,
        "num_examples": int(pred.size),
        "task": str(task),
        "label_names": names,
    }


def macro_f1_over_references(report: dict) -> float:
    """Macro-F1 of a :func:`classification_report` averaged over the labels its
    references hold.

    For a test that holds only part of a model's labels (fine-tuning's extend scores
    the new intents and the parent's apart): a clip given a label the test does not
    hold is a missed recall of its own label, not a class of its own with F1 0 that
    pulls the mean down by the number of labels the test does not hold. When every
    label is referenced it equals ``report["macro_f1"]``.

    >>> report = classification_report([0, 1, 2, 0], [0, 1, 1, 0], ["a", "b", "new"], "intent")
    >>> round(report["macro_f1"], 3), round(macro_f1_over_references(report), 3)
    (0.556, 0.833)
    """
    held = [scores["f1"] for scores in report["per_class"].values() if scores["support"]]
    return sum(held) / len(held)


def accuracy_by_group(predictions: Sequence, references: Sequence, groups: Sequence[str]) -> dict:
    """Accuracy within each group (a speaker, a voice), groups in sorted order.

    A test's accuracy averages over its voices; with a handful of unseen voices, how far
    they spread says more about what the next caller gets than the mean does.

    >>> accuracy_by_group([1, 0, 2, 2], [1, 1, 2, 0], ["ann", "ann", "bob", "bob"])
    {'ann': {'num_examples': 2, 'accuracy': 0.5}, 'bob': {'num_examples': 2, 'accuracy': 0.5}}
    """
    if not len(predictions) == len(references) == len(groups):
        raise ValueError(f"accuracy_by_group: {len(predictions)} predictions, "
                         f"{len(references)} references and {len(groups)} groups")
    hits: dict[str, list[int]] = {}
    for pred, ref, group in zip(predictions, references, groups, strict=True):
        hits.setdefault(str(group), []).append(int(pred == ref))
    return {group: {"num_examples": len(h), "accuracy": sum(h) / len(h)}
            for group, h in sorted(hits.items())}


def plot_confusion_matrix(
    matrix,
    label_names: Sequence[str],
    path,
    title: str | None = None,
    normalise: bool = True,
) -> Path:
    """Write a confusion matrix as a PNG: colour by row share, annotate with counts.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend change), so it
    is safe on headless machines and from any thread. The figure grows with the
    number of classes and the longest name, so 14 intents with names like
    ``"unauthorised_transaction"`` stay legible.

    Parameters
    ----------
    matrix : array-like of shape (K, K)
        Counts, rows reference, columns prediction (e.g.
        ``classification_report(...)["confusion_matrix"]``).
    label_names : sequence of str
        K class names, in row/column order.
    path : str or path-like
        Output PNG; parent folders are created.
    title : str, optional
        Figure title; ``"Confusion matrix"`` if omitted.
    normalise : bool, default True
        Colour each cell by its share of the row (reference class), so rare classes
        are as visible as frequent ones; the cell text is always the raw count.
        ``False`` colours by raw count.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        ``matrix`` is not square, does not match ``label_names``, or has negative or
        non-finite entries.

    Examples
    --------
    >>> import os, tempfile
    >>> out = plot_confusion_matrix([[5, 1], [2, 4]], ["neutral", "angry"],
    ...                             os.path.join(tempfile.mkdtemp(), "cm.png"), "emotion")
    >>> out.suffix, out.stat().st_size > 1000
    ('.png', True)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(matrix, dtype=np.float64)
    names = [str(n) for n in label_names]
    k = len(names)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    if counts.shape[0] != k:
        raise ValueError(
            f"confusion matrix is {counts.shape[0]}x{counts.shape[0]} but got {k} label names"
        )
    if k == 0:
        raise ValueError("confusion matrix is empty")
    if not np.all(np.isfinite(counts)) or (counts < 0).any():
        raise ValueError("confusion matrix entries must be finite and non-negative")

    if normalise:
        rows = counts.sum(axis=1, keepdims=True)
        colours = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        vmax, bar_label = 1.0, "share of reference class (row-normalised)"
    else:
        colours = counts
        vmax, bar_label = max(float(counts.max()), 1.0), "count"

    # Size: ~0.55 in per cell, plus room for the longest (rotated) tick label.
    longest = max(len(n) for n in names)
    font = 9 if k <= 10 else 8 if k <= 20 else 6
    cell = 0.55 if k <= 20 else 0.4
    label_room = 0.075 * longest * font / 9 + 0.4
    width = max(4.5, k * cell + label_room + 1.6)  # + colour bar
    height = max(3.8, k * cell + 0.8 * label_room + 1.0)  # rotated labels take ~0.7 of width

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(colours, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    bar.set_label(bar_label, fontsize=font)
    bar.ax.tick_params(labelsize=font)

    ticks = np.arange(k)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(names, rotation=45, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticklabels(names, fontsize=font)
    ax.set_xlabel("predicted", fontsize=font + 1)
    ax.set_ylabel("reference", fontsize=font + 1)
    ax.set_xticks(ticks - 0.5, minor=True)
    ax.set_yticks(ticks - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.8)
    ax.tick_params(which="minor", length=0)

    for i in range(k):
        for j in range(k):
            value = counts[i, j]
            text = f"{value:g}" if value != int(value) else str(int(value))
            if value == 0:
                colour = "0.7"
            else:
                colour = "white" if colours[i, j] > 0.55 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=font - 1)

    total = int(counts.sum()) if np.all(counts == np.round(counts)) else counts.sum()
    ax.set_title(
        f"{title or 'Confusion matrix'}\n(n = {total}; colour: "
        f"{'row share' if normalise else 'count'}, text: count)",
        fontsize=font + 1,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
