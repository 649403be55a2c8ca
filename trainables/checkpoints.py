"""Checkpoints of a trial on Ray Train: every epoch's row reported, the training state saved
with it when one is due, and read back when the workers restart."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import torch
from ray.train import Checkpoint

from contract.config import TrialConfig
from contract.rows import EpochRow
from trainables.loop import FineTuneRecipe, LoopCallbacks

__all__ = ["RayCheckpointer", "latest_state"]

STATE_FILE = "training_state.pt"
REPORTED_KEY = "reported_rows"


def latest_state() -> dict[str, Any] | None:
    """The training state saved with this run's latest checkpoint (after a worker or driver
    failure), or None on a first start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


class RayCheckpointer(LoopCallbacks):
    """Reports each epoch's row to Ray Train, with a checkpoint of the training state every
    ``train.checkpoint_every_epochs`` epochs (and after the last).

    Every row reported so far is saved with each checkpoint, and reported again first when the
    trial restarts from it (``replay``): a row can reach the checkpoint but not Tune (the sweep
    stopped in between), and replaying leaves no epoch missing; the sweep's ledger ignores the
    rows it already holds.
    """

    def __init__(self, trial: TrialConfig, state: dict[str, Any] | None, **trial_fields: Any):
        """``state``: the latest checkpoint's (its saved rows are taken out of it)."""
        self.trial = trial
        self.reported: list[dict[str, Any]] = state.pop(REPORTED_KEY, []) if state else []
        self.trial_fields = trial_fields  # what only the driver knows: retries, placement

    def replay(self) -> None:
        for record in self.reported:
            ray.train.report(record)

    def on_epoch(self, row: EpochRow, recipe: FineTuneRecipe) -> None:
        record = dataclasses.replace(row, **self.trial_fields).to_dict()
        self.reported.append(record)
        every, epochs = self.trial.train.checkpoint_every_epochs, self.trial.train.epochs
        if not every or (row.epoch % every and row.epoch != epochs):
            ray.train.report(record)
            return
        state = recipe.state_dict()  # a collective: every rank takes part
        # Rank 0 holds the same weights as every rank (DDP), and every rank's RNG state.
        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report(record)
            return
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state | {REPORTED_KEY: self.reported}, Path(directory) / STATE_FILE)
            ray.train.report(record, checkpoint=Checkpoint.from_directory(directory))
