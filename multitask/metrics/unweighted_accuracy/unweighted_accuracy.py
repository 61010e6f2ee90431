"""Unweighted accuracy (mean per-class recall): an ``evaluate`` metric script.

Self-contained (numpy only) so that ``evaluate.load(<this folder>)`` can copy it into
its modules cache and import it offline. Load it through
:func:`multitask.metrics.load_metric`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Unweighted accuracy (UA): the unweighted mean over classes of per-class recall,
recall_c = TP_c / (number of references of class c). The speech-emotion literature
calls it UA or unweighted average recall (UAR), as opposed to weighted accuracy
(WA), i.e. plain accuracy; elsewhere it is balanced accuracy. Chance level is
1 / (number of classes) whatever the class balance.

Absent-class convention: recall is defined only for classes with at least one
reference, so the mean runs over the classes that occur in the references. A class
with no references (whether or not it is predicted) is left out; predicting it is
still penalised through the recall of the classes it was confused with. This equals
scikit-learn's ``balanced_accuracy_score`` (``adjusted=False``).
"""

_KWARGS_DESCRIPTION = """\
Parameters
----------
predictions : sequence of int
    Predicted class ids, one per example.
references : sequence of int
    Reference (gold) class ids, same length as ``predictions``.
labels : sequence of int, optional
    The label set, in the order per-class results are reported. Every prediction
    and reference must be one of these ids.
num_classes : int, optional
    Shorthand for ``labels=range(num_classes)``. Pass at most one of ``labels`` and
    ``num_classes``; with neither, the label set is the ids seen in the input.
return_per_class : bool, default False
    Also return per-class lists, aligned with the label set.

Returns
-------
dict
    ``{"unweighted_accuracy": float}``; with ``return_per_class`` also ``"labels"``,
    ``"recall"`` (0.0 where ``support`` is 0) and ``"support"``.

Raises
------
ValueError
    Empty input, length mismatch, non-integer ids, or an id outside the label set.
"""

_CITATION = r"""
@inproceedings{schuller2009interspeech,
  title     = {The {INTERSPEECH} 2009 Emotion Challenge},
  author    = {Schuller, Bj{\"o}rn and Steidl, Stefan and Batliner, Anton},
  booktitle = {Proc. Interspeech},
  pages     = {312--315},
  year      = {2009}
}
@inproceedings{brodersen2010balanced,
  title     = {The balanced accuracy and its posterior distribution},
  author    = {Brodersen, Kay Henning and Ong, Cheng Soon and Stephan, Klaas Enno
               and Buhmann, Joachim M.},
  booktitle = {Proc. 20th International Conference on Pattern Recognition},
  pages     = {3121--3124},
  year      = {2010}
}
"""


# --- shared validation: keep identical in all four metric scripts (a test checks) ---
def _as_ids(values, name):
    """Return ``values`` as a 1-D int64 array of class ids, or raise ValueError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of class ids, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty: there is nothing to score")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be integer class ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _check_inputs(predictions, references, labels, num_classes):
    """Validate inputs; return ``(predictions, references, labels)`` as int64 arrays.

    ``labels`` comes back as ``range(num_classes)``, the given ``labels``, or (if
    neither was given) the sorted union of the ids seen in the input.
    """
    predictions = _as_ids(predictions, "predictions")
    references = _as_ids(references, "references")
    if predictions.shape != references.shape:
        raise ValueError(
            f"predictions and references differ in length: {predictions.size} vs {references.size}"
        )
    if labels is not None and num_classes is not None:
        raise ValueError("pass either labels or num_classes, not both")
    if num_classes is not None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
            raise ValueError(f"num_classes must be an int, got {num_classes!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        labels = np.arange(num_classes)
    elif labels is not None:
        labels = _as_ids(labels, "labels")
        if np.unique(labels).size != labels.size:
            raise ValueError(f"labels contain duplicates: {labels.tolist()}")
    for arr, name in ((predictions, "predictions"), (references, "references")):
        bad = arr[arr < 0] if labels is None else arr[~np.isin(arr, labels)]
        if bad.size:
            allowed = "non-negative ids" if labels is None else _describe(labels)
            raise ValueError(
                f"{name} contain label id(s) out of range: {np.unique(bad)[:10].tolist()}; "
                f"allowed: {allowed}"
            )
    if labels is None:
        labels = np.union1d(references, predictions)
    return predictions, references, labels


def _describe(labels):
    if np.array_equal(labels, np.arange(labels.size)):
        return f"0..{labels.size - 1} ({labels.size} classes)"
    return str(labels.tolist())


def _confusion(predictions, references, labels):
    """Counts ``C[i, j]`` of examples with reference ``labels[i]`` predicted as ``labels[j]``."""
    order = np.argsort(labels, kind="stable")
    pred_idx = order[np.searchsorted(labels, predictions, sorter=order)]
    ref_idx = order[np.searchsorted(labels, references, sorter=order)]
    k = labels.size
    return np.bincount(ref_idx * k + pred_idx, minlength=k * k).reshape(k, k)


# --- end shared validation ---


class UnweightedAccuracy(evaluate.Metric):
    """Mean per-class recall over the classes that occur in the references.

    Parameters of ``compute``: see ``_KWARGS_DESCRIPTION`` (``predictions``,
    ``references``, ``labels`` / ``num_classes``, ``return_per_class``).

    Examples
    --------
    Recall is 1/2 for class 0 and 2/2 for class 1; class 2 has no references:

    >>> from multitask.metrics import load_metric
    >>> ua = load_metric("unweighted_accuracy")
    >>> ua.compute(predictions=[0, 2, 1, 1], references=[0, 0, 1, 1], num_classes=3)
    {'unweighted_accuracy': 0.75}
    """

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
            format="numpy",
            reference_urls=[
                "https://doi.org/10.21437/Interspeech.2009-103",
                "https://doi.org/10.1109/ICPR.2010.764",
            ],
        )

    def _compute(
        self, predictions, references, labels=None, num_classes=None, return_per_class=False
    ):
        predictions, references, labels = _check_inputs(
            predictions, references, labels, num_classes
        )
        counts = _confusion(predictions, references, labels)
        support = counts.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, np.diag(counts) / support, 0.0)
        result = {"unweighted_accuracy": float(recall[support > 0].mean())}
        if return_per_class:
            result.update(labels=labels.tolist(), recall=recall.tolist(), support=support.tolist())
        return result
