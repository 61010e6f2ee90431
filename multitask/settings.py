"""What makes a setting usable: the error a setting that cannot work raises
(:class:`SettingError`), the recipes' number settings and their ranges, and one
definition of "a whole number of at least 1" (and of other kinds and ranges) for the
recipes' settings, the commands' options and the Python API's arguments alike.

>>> number_problem(8, whole=True, least=1) is None
True
>>> number_problem(0.5, whole=True, least=1)
'must be a whole number of at least 1, not 0.5'
"""

from __future__ import annotations

import math
import operator


def number_problem(value, whole: bool, least, most=None) -> str | None:
    """Why ``value`` is not a number of its kind (``whole`` or any) from ``least`` to
    ``most`` (None: no upper bound), as "must be ..."; None when it is one. Booleans are not
    numbers here; NumPy's integers are whole numbers.

    >>> number_problem(True, whole=True, least=0)
    'must be a whole number of at least 0, not True'
    >>> number_problem(2.0, whole=False, least=0.0, most=1.0)
    'must be a number from 0.0 to 1.0, not 2.0'
    """
    if isinstance(value, bool):
        number = None
    elif whole:
        try:
            number = operator.index(value)
        except TypeError:
            number = None
    else:
        number = value if isinstance(value, (int, float)) and not math.isnan(value) else None
    if number is None or number < least or (most is not None and number > most):
        kind = "a whole number" if whole else "a number"
        span = f"from {least} to {most}" if most is not None else f"of at least {least}"
        return f"must be {kind} {span}, not {value!r}"
    return None


def check_count(value, name: str, error: type[Exception] = ValueError) -> None:
    """Refuse a count (``top_k``, ``batch_size``, clips per class) that is not a whole
    number of 1 or more, with ``error`` naming it.

    >>> check_count(3, "top_k")
    >>> check_count(0, "top_k")
    Traceback (most recent call last):
    ...
    ValueError: top_k must be a whole number of at least 1, not 0
    """
    problem = number_problem(value, whole=True, least=1)
    if problem:
        raise error(f"{name} {problem}")


# Settings the recipes read as numbers: (whole number or not, smallest, largest or None).
NUMBER_SETTINGS = {
    "seed": (True, 0, None), "number_of_epochs": (True, 1, None), "batch_size": (True, 1, None),
    "warmup_steps": (True, 0, None), "encoder_freeze_steps": (True, 0, None),
    "grad_accumulation": (True, 1, None), "encoder_lr": (False, 0.0, None),
    "head_lr": (False, 0.0, None), "weight_decay": (False, 0.0, None),
    "head_dropout": (False, 0.0, 1.0),
    "rows_per_class": (True, 1, None),  # train_batching's, with batch_size
}


class SettingError(ValueError):
    """A setting a run cannot use (not a number of its kind and range, or of the wrong
    shape); the message names it and where it was set."""


def check_numbers(values, where=None) -> None:
    """Refuse a setting of :data:`NUMBER_SETTINGS` in ``values`` (or ``train_batching``'s
    ``batch_size`` and ``rows_per_class``) that is not a number of its kind and range.
    ``where``: the file ``values`` were read from; None for command-line overrides.

    >>> check_numbers({"number_of_epochs": 5, "head_lr": 1e-3})
    >>> check_numbers({"head_lr": -1})
    Traceback (most recent call last):
    ...
    multitask.settings.SettingError: --head_lr must be a number of at least 0.0, not -1
    """
    batching = values.get("train_batching")
    nested = {f"train_batching.{key}": batching[key] for key in ("batch_size", "rows_per_class")
              if isinstance(batching, dict) and batching.get(key) is not None}
    for key, value in [*((k, values[k]) for k in NUMBER_SETTINGS if k in values),
                       *nested.items()]:
        if value is None or not isinstance(value, (str, int, float)):
            continue  # unset, or a reference or another tag, resolved when the file is loaded
        problem = number_problem(value, *NUMBER_SETTINGS[key.removeprefix("train_batching.")])
        if problem:
            raise SettingError(f"{where}: {key} {problem}" if where else f"--{key} {problem}")
