"""What the trial driver hands each Ray Train worker: the worker loop's input, as one type."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from contract.config import TrialConfig
from contract.tracking import TrialTracking

__all__ = ["WorkerInput"]


class WorkerInput(BaseModel):
    """The trial to train (its micro-batch possibly halved after running out of memory), how
    often that happened, and where rank 0 logs to W&B (None: it does not)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trial: TrialConfig
    oom_retries: Annotated[int, Field(ge=0)] = 0
    tracking: TrialTracking | None = None
