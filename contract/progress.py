"""Where a running trial stands within its epochs: what rank 0 sends the sweep between reports.

A trial reports one ``EpochRow`` per epoch; between two of them, rank 0 sends a ``StepProgress``
every progress interval (``trainables.progress``), summed over all workers, through a Ray actor
that the sweep polls. The sweep turns it into the trial's progress line and its
``trials/<id>/progress.json`` (``orchestrator.progress``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["StepProgress"]


@dataclass(frozen=True, kw_only=True)
class StepProgress:
    """A trial's position and speed, over all its workers, as rank 0 measured it."""

    epoch: int  # the epoch under way, 1-based (at an epoch's end: the epoch just finished)
    epochs: int  # epochs the trial trains in all
    epoch_step: int  # optimizer steps done in this epoch
    steps_per_epoch: int
    step: int  # optimizer steps done over all epochs (as restored from a checkpoint)
    examples_seen: int  # training examples over all epochs, all workers
    train_time_s: float  # training seconds over all epochs, this one so far
    examples_per_s: float  # since the previous record, all workers
    step_time_s: float  # seconds per optimizer step since the previous record
    loss: float | None  # mean training loss since the previous record
    eval_time_s: float | None = None  # the latest evaluation's seconds (None: none yet)
    eval_every_steps: int = 0  # a mid-epoch evaluation every this many steps (0: none)
    evaluated: bool = False  # sent at the epoch's end: its evaluation is done too

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepProgress:
        """From ``to_dict``; keys this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
