"""Input checks shared by the metric scripts in this folder.

``evaluate`` copies each metric script into its modules cache and imports it from
there; the scripts import these checks from the installed package instead of
repeating them.
"""

import numpy as np


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


def check_inputs(predictions, references, labels, num_classes):
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


def confusion(predictions, references, labels):
    """Counts ``C[i, j]`` of examples with reference ``labels[i]`` predicted as ``labels[j]``."""
    order = np.argsort(labels, kind="stable")
    pred_idx = order[np.searchsorted(labels, predictions, sorter=order)]
    ref_idx = order[np.searchsorted(labels, references, sorter=order)]
    k = labels.size
    return np.bincount(ref_idx * k + pred_idx, minlength=k * k).reshape(k, k)
