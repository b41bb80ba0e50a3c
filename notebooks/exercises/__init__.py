"""Checkers for the notebooks' exercises, a module per notebook.

Each checker recomputes the right answer from the notebook's own variables (or with ``mtlib``) and prints one
line: ``Correct: ...`` or ``Not yet: ...``. A missing answer and an unfilled scaffold get the same line, so a
notebook's stored output does not depend on whether the scaffold cell ran.
"""

from __future__ import annotations

import numbers

import torch


def correct(text: str) -> None:
    print(f"Correct: {text}")


def not_yet(text: str) -> None:
    print(f"Not yet: {text}")


def raised(error: Exception) -> None:
    """What the learner's function raised, as a hint rather than a traceback."""
    not_yet(f"your function raised {type(error).__name__}: {error}")


def as_number(answer: object) -> float | None:
    """The answer as a float when it is one number (int, float, NumPy scalar, one-element tensor), else None."""
    if isinstance(answer, bool | str):
        return None
    if isinstance(answer, numbers.Real):
        return float(answer)
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        return float(answer)
    try:
        return float(answer)  # NumPy scalars and zero-dimensional arrays
    except (TypeError, ValueError):
        return None
