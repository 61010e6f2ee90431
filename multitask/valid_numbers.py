"""What makes a number usable as a setting: one definition of "a whole number of at least
1" (and of other kinds and ranges), for the recipes' settings, the commands' options and
the Python API's arguments alike.

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
