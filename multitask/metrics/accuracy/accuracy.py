"""Accuracy for single-label classification: an ``evaluate`` metric script.

``evaluate.load(<this folder>)`` copies it into its modules cache and imports it
offline; its input checks live in :mod:`multitask.metrics._inputs`. Load it through
:func:`multitask.metrics.load_metric`.
"""

import datasets
import evaluate
import numpy as np

# Shared with the other metric scripts; the package is installed wherever they run.
from multitask.metrics._inputs import check_inputs

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
        predictions, references, _ = check_inputs(predictions, references, labels, num_classes)
        return {"accuracy": float(np.mean(predictions == references))}
