"""Checks for the numbers in configurations and options: whole, finite, within range.

Each check raises ``ValueError`` with a one-line message that names the value, so the
configuration dataclasses call them from ``__post_init__`` and every way of setting a
value (command line, Slicer panel, ``run.json``, a model file) is checked alike.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

# NumPy's legacy seeding (np.random.seed) accepts 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def whole(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an int if it is a whole number (not a bool) in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a whole number (got {value!r})")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high} (got {value})")
    return int(value)


def finite(name: str, value: object, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a float if it is a finite number in ``[low, high]`` (ends excluded with ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number (got {value!r})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (got {value})")
    if value < low or value > high or (low_open and value == low) or (high_open and value == high):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be within {interval} (got {value:g})")
    return float(value)


def seed(name: str, value: object) -> int:
    """A random seed: a whole number in ``[0, MAX_SEED]``."""
    return whole(name, value, 0, MAX_SEED)


def one_of(name: str, value: object, allowed: Iterable[object]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))} (got {value!r})")


def flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false (got {value!r})")
