"""Unweighted accuracy (mean per-class recall): an ``evaluate`` metric script.

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
        predictions, references, labels = check_inputs(
            predictions, references, labels, num_classes
        )
        counts = confusion(predictions, references, labels)
        support = counts.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(support > 0, np.diag(counts) / support, 0.0)
        result = {"unweighted_accuracy": float(recall[support > 0].mean())}
        if return_per_class:
            result.update(labels=labels.tolist(), recall=recall.tolist(), support=support.tolist())
        return result
