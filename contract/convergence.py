"""How soon a trial's evaluations reached a level of its metric: the arithmetic both sides share.

The trial reports, in its final row, when it first reached ``train.convergence_fraction`` of its
final metric and ``train.target``; the analysis asks the same of the same points for any other
target (``scalesweep analyze --target``). One function, so the two always agree. "When" is the
first evaluation at or past the level: evaluations are every ``train.eval_every_steps``
optimizer steps and at each epoch's end, so it is exact to that resolution and never earlier
than the truth (no interpolation between points).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from contract.rows import EvalPoint

__all__ = ["converged_level", "first_reaching", "reaches"]


def converged_level(final: float, fraction: float, *, higher_is_better: bool = True) -> float:
    """The level counted as converged: ``fraction`` of the final value, i.e. within
    ``(1 - fraction) * |final|`` of it on the worse side (so that a negative correlation, or
    a loss, gets a level its own final point reaches)."""
    slack = (1.0 - fraction) * abs(final)
    return final - slack if higher_is_better else final + slack


def reaches(value: float | None, level: float, *, higher_is_better: bool = True) -> bool:
    """Whether ``value`` is at or past ``level``; a missing or NaN value never is."""
    if value is None or math.isnan(value):
        return False
    return value >= level if higher_is_better else value <= level


def first_reaching(
    points: Sequence[EvalPoint], metric: str, level: float, *, higher_is_better: bool = True
) -> EvalPoint | None:
    """The first point (in training order) whose ``metric`` reached ``level``; None: never."""
    ordered = sorted(points, key=lambda p: (p.step, p.examples_seen))
    for point in ordered:
        if reaches(point.score(metric), level, higher_is_better=higher_is_better):
            return point
    return None
