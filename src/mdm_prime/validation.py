"""Argument checks shared by the library: one wording for every integer, number and choice it refuses.

Each function returns the value it accepts and raises before any work otherwise:

* :func:`check_int` — an ``int`` (``bool`` refused) within bounds, else
  ``ValueError("{name} must be an int >= {low}{note}, got {value!r}")``.
* :func:`check_positive_int` — ``TypeError`` for a non-int, then ``ValueError("{name} must be >= 1")``
  (the model and sub-tokenizer constructors).
* :func:`check_number` — an ``int`` or ``float`` (``bool`` and NaN refused; infinities only where the
  bounds hold them) within bounds, else ``ValueError("{name} must be a number in [0, 1), got ...")``.
* :func:`check_choice` — one of a few options, else ``ValueError("{name} must be one of (...)")``.

``note`` is appended to the requirement (``" (or None)"``, ``" (0: all)"``); ``what`` replaces it
where a caller's wording is part of its contract (``TrainConfig``'s "a positive integer").
``type_error=True`` splits a refusal in two: a ``TypeError`` naming the type for a value of the wrong
kind, a ``ValueError`` stating only the range for one out of range.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

__all__ = ["check_int", "check_positive_int", "check_number", "check_choice", "is_int", "is_number"]


def _bounds(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """``">= 1"``, ``"> 0"``, ``"<= 9"``, ``"in [0, 1)"`` or ``""`` (no bound)."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _within(value, low, high, low_open: bool = False, high_open: bool = False) -> bool:
    if low is not None and not (value > low if low_open else value >= low):
        return False
    return high is None or (value < high if high_open else value <= high)


def _phrase(noun: str, bounds: str) -> str:
    return " ".join(part for part in (noun, bounds) if part)


def is_int(value: object, low: int | None = None, high: int | None = None) -> bool:
    """Whether ``value`` is an ``int`` (not a ``bool``) in ``[low, high]`` (``None``: unbounded)."""
    return not isinstance(value, bool) and isinstance(value, int) and _within(value, low, high)


def check_int(
    name: str,
    value: object,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
    note: str = "",
    what: str | None = None,
    type_error: bool = False,
) -> int | None:
    """``value`` if it is an ``int`` (not a ``bool``) in ``[low, high]`` (``None`` too with
    ``allow_none``); else ``ValueError("{name} must be an int >= {low}{note}, got {value!r}")``
    (``"an int in [low, high]"`` with both bounds; ``what`` replaces ``"an int >= low"``).

    ``type_error=True``: a non-int is a ``TypeError("{name} must be an int, got TYPE (VALUE)")`` and an
    int out of range a ``ValueError("{name} must be >= {low}{note}, got {value}")``."""
    if value is None and allow_none:
        return None
    if type_error:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
        if not _within(value, low, high):
            raise ValueError(f"{name} must be {what or _bounds(low, high)}{note}, got {value}")
        return value
    if not is_int(value, low, high):
        raise ValueError(
            f"{name} must be {what or _phrase('an int', _bounds(low, high))}{note}, got {value!r}"
        )
    return value


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an ``int`` >= 1: ``TypeError("{name} must be an int, got TYPE (VALUE)")`` for
    a non-int (``bool`` included), ``ValueError("{name} must be >= 1, got {value}")`` below 1."""
    return check_int(name, value, low=1, type_error=True)


def is_number(
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> bool:
    """Whether ``value`` passes :func:`check_number` with the same arguments."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False
    return (math.isfinite(value) or not finite) and _within(value, low, high, low_open, high_open)


def check_number(
    name: str,
    value: object,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
    note: str = "",
    what: str | None = None,
    type_error: bool = False,
) -> float | int:
    """``value`` if it is an ``int`` or ``float`` (not a ``bool``, not NaN) within the bounds (``None``:
    unbounded; ``*_open``: the bound itself excluded); with ``finite`` (the default) ``±inf`` is refused
    too, else it passes where a bound allows it. Otherwise
    ``ValueError("{name} must be a number in [low, high){note}, got {value!r}")`` (``"a finite number
    > low"`` with one bound, ``"a finite number"`` with none; ``what`` replaces the requirement).

    ``type_error=True``: a non-number (NaN included) is a ``TypeError("{name} must be a number, got
    TYPE (VALUE)")`` and a number out of range a ``ValueError("{name} must be > low, got {value}")``."""
    if is_number(value, low, high, low_open=low_open, high_open=high_open, finite=finite):
        return value
    bounds = _bounds(low, high, low_open, high_open)
    bounded = low is not None and high is not None and math.isfinite(low) and math.isfinite(high)
    if type_error:
        if not is_number(value, finite=False):
            raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
        need = _phrase("finite" if finite and not bounded else "", bounds)
        raise ValueError(f"{name} must be {what or need}{note}, got {value}")
    noun = "a finite number" if finite and not bounded else "a number"
    raise ValueError(f"{name} must be {what or _phrase(noun, bounds)}{note}, got {value!r}")


def check_choice(name: str, value: Any, options: Collection) -> Any:
    """``value`` if it is one of ``options``; else ``ValueError("{name} must be one of {options},
    got {value!r}")`` (pass a tuple: it is printed as given)."""
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value
