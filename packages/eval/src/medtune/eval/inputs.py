"""Checks shared by every public scoring function: lists, not strings; text, or a clear error naming the index."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, Literal

Missing = Literal["empty", "error"]


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, numbers.Real) and not isinstance(value, bool | numbers.Integral):
        return math.isnan(float(value))
    # pandas.NA and similar sentinels: neither equal to themselves nor usable as text
    return type(value).__name__ in ("NAType", "NaTType")


def as_text(value: Any, name: str, index: int, missing: Missing) -> str:
    """Return one entry as text: numbers as the dataset readers write them, None/NaN per `missing`."""
    if isinstance(value, str):
        return value
    if _is_missing(value):
        if missing == "empty":
            return ""
        raise ValueError(
            f"{name} at index {index} is {value!r}; every question needs a ground-truth {name[:-1]} "
            "as text. Fill it in or leave that question out of all the lists."
        )
    if isinstance(value, bool):  # bool first: it is also an Integral
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    raise TypeError(
        f"{name} at index {index} is a {type(value).__name__} ({value!r:.60}); pass text (a str) or a "
        "number for each entry."
    )


def as_text_list(values: Any, name: str, *, missing: Missing) -> list[str]:
    """Return `values` (a list, tuple or other non-string sequence) as a list of text entries.

    `missing="empty"` turns None/NaN into "" (an empty prediction); `missing="error"` raises a
    ValueError naming the index (a question without a ground truth cannot be scored).
    """
    if isinstance(values, str | bytes):
        raise TypeError(
            f"{name} must be a list with one entry per question, not a single string ({values!r:.60}); "
            f"wrap it in a list: [{values!r:.40}]."
        )
    if isinstance(values, Mapping) or not isinstance(values, Iterable):
        raise TypeError(
            f"{name} must be a list with one entry per question; got {type(values).__name__} {values!r:.60}."
        )
    return [as_text(value, name, index, missing) for index, value in enumerate(values)]


def check_lengths(**columns: list) -> None:
    """Raise a ValueError naming each column's length unless all have the same, non-zero length."""
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) != 1:
        parts = [f"{n} {name.replace('_', ' ')}" for name, n in lengths.items()]
        got = ", ".join(parts[:-1]) + " and " + parts[-1]
        raise ValueError(
            f"Got {got}; they must have the same length, one entry per question, in the same order."
        )
    if not next(iter(lengths.values())):
        raise ValueError("There are no predictions to score; pass at least one question.")
