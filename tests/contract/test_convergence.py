"""When a trial's evaluations reached a level: the arithmetic the trials and the analysis share."""

from __future__ import annotations

import math

import pytest

from contract.convergence import converged_level, first_reaching, reaches
from contract.rows import EvalPoint


def point(step: int, accuracy: float | None, loss: float = 0.5) -> EvalPoint:
    scores = {} if accuracy is None else {"accuracy": accuracy}
    return EvalPoint(
        epoch=step / 10,
        step=step,
        examples_seen=32 * step,
        train_time_s=0.25 * step,
        eval_loss=loss,
        scores=scores,
    )


# A learning curve: 0.50, 0.62, 0.70, 0.74, 0.73, 0.76 at steps 5, 10, ... 30.
CURVE = [point(5 * (i + 1), a) for i, a in enumerate((0.50, 0.62, 0.70, 0.74, 0.73, 0.76))]


@pytest.mark.parametrize(
    ("final", "fraction", "higher", "level"),
    [
        (0.76, 0.95, True, 0.722),  # 95 % of 0.76
        (0.8, 1.0, True, 0.8),
        (-0.2, 0.95, True, -0.21),  # a negative correlation: 5 % of its size below it
        (0.4, 0.95, False, 0.42),  # a loss: 5 % above it
    ],
)
def test_converged_level(final, fraction, higher, level):
    assert converged_level(final, fraction, higher_is_better=higher) == pytest.approx(level)


def test_the_first_point_at_or_past_the_level_gives_steps_examples_and_seconds():
    level = converged_level(0.76, 0.95)  # 0.722
    reached = first_reaching(CURVE, "accuracy", level)
    assert (reached.step, reached.examples_seen, reached.train_time_s) == (20, 640, 5.0)
    assert first_reaching(CURVE, "accuracy", 0.70).step == 15  # "at" counts: 0.70 >= 0.70
    # The final point always reaches its own converged level.
    assert first_reaching(CURVE, "accuracy", converged_level(0.76, 1.0)).step == 30


def test_a_level_never_reached_is_none_not_zero():
    assert first_reaching(CURVE, "accuracy", 0.8) is None
    assert first_reaching([], "accuracy", 0.5) is None
    assert first_reaching(CURVE, "f1", 0.1) is None  # not scored: never reached


def test_points_are_read_in_training_order_and_loss_falls():
    shuffled = [CURVE[3], CURVE[0], CURVE[5], CURVE[2], CURVE[1], CURVE[4]]
    assert first_reaching(shuffled, "accuracy", 0.7).step == 15
    losses = [point(s, None, loss) for s, loss in ((1, 0.7), (2, 0.6), (3, 0.45), (4, 0.4))]
    assert first_reaching(losses, "loss", 0.5, higher_is_better=False).step == 3


def test_missing_and_nan_values_never_reach():
    assert not reaches(None, 0.0)
    assert not reaches(math.nan, 0.0)
    assert reaches(0.5, 0.5) and not reaches(0.5, 0.4, higher_is_better=False)
