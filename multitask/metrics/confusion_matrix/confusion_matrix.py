"""Confusion matrix for single-label classification: an ``evaluate`` metric script.

``evaluate.load(<this folder>)`` copies it into its modules cache and imports it
offline; its input checks live in :mod:`multitask.metrics._inputs`. Load it through
:func:`multitask.metrics.load_metric`.
"""

import datasets
import evaluate
import numpy as np

# Shared with the other metric scripts; the package is installed wherever they run.
from multitask.metrics._inputs import check_inputs, confusion

_DESCRIPTION = """\
Confusion matrix C, where C[i, j] is the number of examples whose reference is
class labels[i] and whose prediction is class labels[j]: rows are references,
columns are predictions, the diagonal holds the correct predictions. Rows and
columns cover the whole label set, so classes absent from the input appear as
zero rows/columns and matrices from different batches line up.
"""

_KWARGS_DESCRIPTION = """\
Parameters
----------
predictions : sequence of int
    Predicted class ids, one per example.
references : sequence of int
    Reference (gold) class ids, same length as ``predictions``.
labels : sequence of int, optional
    The label set, in row/column order. Every prediction and reference must be one
    of these ids.
num_classes : int, optional
    Shorthand for ``labels=range(num_classes)``. Pass at most one of ``labels`` and
    ``num_classes``; with neither, the label set is the ids seen in the input.
normalize : {None, "true", "pred", "all"}, default None
    None: integer counts. "true": divide each row by its sum (rows are references;
    the diagonal becomes per-class recall). "pred": divide each column by its sum.
    "all": divide by the number of examples. Zero rows/columns stay 0.

Returns
-------
dict
    ``{"confusion_matrix": numpy.ndarray}`` of shape ``(K, K)``; int64 counts, or
    float64 if ``normalize`` is set.

Raises
------
ValueError
    Empty input, length mismatch, non-integer ids, an id outside the label set, or
    an unknown ``normalize``.
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


class ConfusionMatrix(evaluate.Metric):
    """Counts of (reference, prediction) pairs over the whole label set.

    Parameters of ``compute``: see ``_KWARGS_DESCRIPTION`` (``predictions``,
    ``references``, ``labels`` / ``num_classes``, ``normalize``).

    Examples
    --------
    Rows are references, columns predictions; class 2 is absent but still gets a row:

    >>> from multitask.metrics import load_metric
    >>> cm = load_metric("confusion_matrix")
    >>> cm.compute(predictions=[0, 1, 1, 1], references=[0, 1, 1, 0], num_classes=3)
    {'confusion_matrix': array([[1, 1, 0],
           [0, 2, 0],
           [0, 0, 0]])}
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
            reference_urls=["https://en.wikipedia.org/wiki/Confusion_matrix"],
        )

    def _compute(self, predictions, references, labels=None, num_classes=None, normalize=None):
        if normalize not in (None, "true", "pred", "all"):
            raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
        predictions, references, labels = check_inputs(
            predictions, references, labels, num_classes
        )
        counts = confusion(predictions, references, labels)
        if normalize is None:
            return {"confusion_matrix": counts}
        if normalize == "true":
            total = counts.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            total = counts.sum(axis=0, keepdims=True)
        else:
            total = counts.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            matrix = np.where(total > 0, counts / total, 0.0)
        return {"confusion_matrix": matrix}
