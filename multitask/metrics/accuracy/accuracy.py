"""Accuracy for single-label classification: an ``evaluate`` metric script.

Self-contained (numpy only) so that ``evaluate.load(<this folder>)`` can copy it into
its modules cache and import it offline. Load it through
:func:`multitask.metrics.load_metric`.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """\
Accuracy: the fraction of examples whose predicted class id equals the reference
class id, (number correct) / (number of examples). Every example counts once, so
frequent classes dominate; see ``unweighted_accuracy`` for the class-balanced mean.
"""

_KWARGS_DESCRIPTION = """\
Parameters
----------
predictions : sequence of int
    Predicted class ids, one per example.
references : sequence of int
    Reference (gold) class ids, same length as ``predictions``.
labels : sequence of int, optional
    The label set. Every prediction and reference must be one of these ids.
num_classes : int, optional
    Shorthand for ``labels=range(num_classes)``. Pass at most one of ``labels`` and
    ``num_classes``; with neither, only non-negativity is checked.

Returns
-------
dict
    ``{"accuracy": float}`` in [0, 1].

Raises
------
ValueError
    Empty input, length mismatch, non-integer ids, or an id outside the label set.
"""

_CITATION = r"""
@article{sokolova2009systematic,
  title   = {A systematic analysis of performance measures for classification tasks},
  author  = {Sokolova, Marina and Lapalme, Guy},
  journal = {Information Processing \& Management},
  volume  = {45},
  number  = {4},
  pages   = {427--437},
  year    = {2009}
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


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the reference.

    Parameters of ``compute``: see ``_KWARGS_DESCRIPTION`` (``predictions``,
    ``references``, optional ``labels`` / ``num_classes`` for range checking).

    Examples
    --------
    >>> from multitask.metrics import load_metric
    >>> load_metric("accuracy").compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'accuracy': 0.75}
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
            reference_urls=["https://doi.org/10.1016/j.ipm.2009.03.002"],
        )

    def _compute(self, predictions, references, labels=None, num_classes=None):
        predictions, references, _ = _check_inputs(predictions, references, labels, num_classes)
        return {"accuracy": float(np.mean(predictions == references))}
