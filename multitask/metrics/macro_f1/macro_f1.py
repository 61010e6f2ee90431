"""Macro-averaged F1 for single-label classification: an ``evaluate`` metric script.

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
Macro-F1: the unweighted mean over classes of the per-class F1 score,
F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c), treating each class one-vs-rest.

Absent-class convention: the mean runs over the classes of the label set that occur
in the references or in the predictions. A class with no references and no
predictions has an undefined F1 (0/0) and is left out of the average, so scoring a
small batch that happens to miss a class neither rewards nor punishes the model for
it. A class that is predicted but never referenced, or referenced but never
predicted, has F1 = 0 and does count. This equals scikit-learn's
``f1_score(average="macro", labels=<classes present in references or predictions>)``
(and its default ``labels=None``). Per-class precision and recall that are 0/0 are
reported as 0.0 (scikit-learn's ``zero_division=0``).
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
    ``{"macro_f1": float}``; with ``return_per_class`` also ``"labels"``,
    ``"precision"``, ``"recall"``, ``"f1"`` (lists of float), ``"support"`` (number
    of references per class) and ``"predicted"`` (number of predictions per class).
    A class with ``support == predicted == 0`` is excluded from ``macro_f1``.

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


class MacroF1(evaluate.Metric):
    """Unweighted mean of per-class F1 over the classes present in references or predictions.

    Parameters of ``compute``: see ``_KWARGS_DESCRIPTION`` (``predictions``,
    ``references``, ``labels`` / ``num_classes``, ``return_per_class``).

    Examples
    --------
    Class 2 is in the label set but absent from this batch, so it is not averaged:

    >>> from multitask.metrics import load_metric
    >>> f1 = load_metric("macro_f1")
    >>> f1.compute(predictions=[0, 1, 1, 1], references=[0, 1, 1, 0], num_classes=3)
    {'macro_f1': 0.7333333333333334}
    >>> out = f1.compute(predictions=[0, 1, 1, 1], references=[0, 1, 1, 0], num_classes=3,
    ...                  return_per_class=True)
    >>> out["f1"], out["support"], out["predicted"]
    ([0.6666666666666666, 0.8, 0.0], [2, 2, 0], [1, 3, 0])
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

    def _compute(
        self, predictions, references, labels=None, num_classes=None, return_per_class=False
    ):
        predictions, references, labels = check_inputs(
            predictions, references, labels, num_classes
        )
        counts = confusion(predictions, references, labels)
        tp = np.diag(counts).astype(np.float64)
        support = counts.sum(axis=1)
        predicted = counts.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(predicted > 0, tp / predicted, 0.0)
            recall = np.where(support > 0, tp / support, 0.0)
            denom = support + predicted  # = 2 TP + FP + FN
            f1 = np.where(denom > 0, 2.0 * tp / denom, 0.0)
        present = denom > 0  # never empty: the input is non-empty
        result = {"macro_f1": float(f1[present].mean())}
        if return_per_class:
            result.update(
                labels=labels.tolist(),
                precision=precision.tolist(),
                recall=recall.tolist(),
                f1=f1.tolist(),
                support=support.tolist(),
                predicted=predicted.tolist(),
            )
        return result
