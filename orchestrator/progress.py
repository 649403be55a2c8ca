"""A running sweep's progress records, and the arithmetic of its ETAs (no Ray).

<dir>/progress.json                 ``SweepProgress``: the sweep's state, elapsed time, ETA
<dir>/trials/<trial_id>/progress.json  ``TrialProgress``: the trial's latest ``StepProgress``

The sweep rewrites both (atomically, through ``ExperimentDir``) at every progress interval and
as trials start and end; ``scalesweep status`` reads them back. Times are Unix times of the
machine that runs the sweep; ETAs are seconds from ``updated_at``, so a reader subtracts the age
of the record (``remaining``).

ETA of a trial: the steps left in its epochs at the latest seconds per step, plus the
evaluations left (one per epoch, and the mid-epoch ones) at the latest evaluation's time
(``trial_eta_s``). The sweep's ETA is
``plan``'s makespan model run from now (``orchestrator.status.admission_eta``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contract.progress import StepProgress

__all__ = [
    "SWEEP_FINISHED",
    "SWEEP_INTERRUPTED",
    "SWEEP_RUNNING",
    "SweepProgress",
    "TrialProgress",
    "epoch_eta_s",
    "format_duration",
    "remaining",
    "trial_eta_s",
]

# The states of a sweep (a trial's are its results.csv status: TERMINATED, ERROR, ...).
SWEEP_RUNNING, SWEEP_FINISHED, SWEEP_INTERRUPTED = "running", "finished", "interrupted"


def epoch_eta_s(p: StepProgress) -> float:
    """Seconds until the epoch under way is trained and evaluated (0 once it is evaluated)."""
    if p.evaluated:
        return 0.0
    epoch_end = p.step - p.epoch_step + p.steps_per_epoch
    evaluations = 1 + _mid_epoch_evaluations(p, epoch_end)
    return (epoch_end - p.step) * p.step_time_s + evaluations * (p.eval_time_s or 0.0)


def trial_eta_s(p: StepProgress) -> float:
    """Seconds until the trial's last epoch is evaluated: the steps left at the latest step
    time, and the evaluations left (each epoch's, and the mid-epoch ones every
    ``eval_every_steps``) at the latest evaluation's time."""
    epochs_left = p.epochs - p.epoch + (0 if p.evaluated else 1)
    last_step = p.step - p.epoch_step + p.steps_per_epoch * (p.epochs - p.epoch + 1)
    evaluations = epochs_left + _mid_epoch_evaluations(p, last_step)
    return (last_step - p.step) * p.step_time_s + evaluations * (p.eval_time_s or 0.0)


def _mid_epoch_evaluations(p: StepProgress, last_step: int) -> int:
    """Mid-epoch evaluations still to come up to ``last_step``: at every multiple of
    ``eval_every_steps`` from ``p.step`` (sent before its own evaluation) on, but none on an
    epoch's last step (the epoch's own evaluation stands for it)."""
    every = p.eval_every_steps
    if not every:
        return 0
    lcm = math.lcm(every, p.steps_per_epoch)
    before = p.step - 1  # multiples in (before, last_step]
    return (last_step // every - before // every) - (last_step // lcm - before // lcm)


def remaining(eta_s: float | None, since_s: float) -> float | None:
    """An ETA ``since_s`` seconds after it was computed (never below 0)."""
    return None if eta_s is None else max(0.0, eta_s - since_s)


def format_duration(seconds: float | None) -> str:
    """``45s``, ``3m05s``, ``2h07m``; ``?`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = round(max(0.0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


@dataclass(frozen=True, kw_only=True)
class TrialProgress:
    """A running trial's latest position, as the sweep received it from rank 0."""

    trial_id: str
    label: str
    updated_at: float  # Unix time the sweep received it
    wall_s: float  # the trial's wall time then, over all its runs (start-up included)
    progress: StepProgress

    @property
    def epoch_eta_s(self) -> float:
        return epoch_eta_s(self.progress)

    @property
    def trial_eta_s(self) -> float:
        return trial_eta_s(self.progress)

    def to_dict(self) -> dict[str, Any]:
        """One flat JSON object: the ``StepProgress`` fields and ETAs beside the trial's."""
        return {
            "trial_id": self.trial_id,
            "label": self.label,
            "updated_at": self.updated_at,
            "wall_s": self.wall_s,
            **self.progress.to_dict(),
            "epoch_eta_s": self.epoch_eta_s,
            "trial_eta_s": self.trial_eta_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialProgress:
        """From ``to_dict`` (the ETAs are derived again); raises KeyError or TypeError when
        a field is missing or of the wrong kind."""
        return cls(
            trial_id=str(data["trial_id"]),
            label=str(data["label"]),
            updated_at=float(data["updated_at"]),
            wall_s=float(data["wall_s"]),
            progress=StepProgress.from_dict(data),
        )


@dataclass(frozen=True, kw_only=True)
class SweepProgress:
    """The sweep's own record: whether it runs, since when, and when it ends."""

    state: str  # running | finished | interrupted
    started_at: float  # Unix time the sweep was first launched
    updated_at: float  # Unix time of this record
    elapsed_s: float  # the driver's wall time over all its runs (launch and resumes) until then
    num_trials: int
    progress_every_s: float  # the progress interval: records are this fresh while it runs
    eta_s: float | None = None  # seconds until the last trial ends, as of updated_at

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepProgress:
        """From ``to_dict``; KeyError, TypeError or ValueError for a missing or wrong field."""
        eta = data.get("eta_s")
        return cls(
            state=str(data["state"]),
            started_at=float(data["started_at"]),
            updated_at=float(data["updated_at"]),
            elapsed_s=float(data["elapsed_s"]),
            num_trials=int(data["num_trials"]),
            progress_every_s=float(data["progress_every_s"]),
            eta_s=None if eta is None else float(eta),
        )
