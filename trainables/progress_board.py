"""The Ray channel that carries progress within a trial from its rank 0 to the sweep's driver.

Workers may run on any node of a cluster, so progress travels through Ray, never through files
on the driver's disk: the sweep starts one ``ProgressBoard`` actor on its own node; each trial's
rank 0 puts its latest ``StepProgress`` there (fire and forget: a lost record costs nothing); the
sweep takes what arrived since it last looked. ``ProgressChannel`` is what a trial's workers
get (in their train loop config): the board's handle, the trial's id and the interval.

    board = start_board()                                   # the sweep, once
    run_trial(config, progress=ProgressChannel(board, trial_id, every_s=30))
    board.take.remote()                                     # the sweep, at its cadence
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from contract.progress import StepProgress

__all__ = ["BOARD_NAME", "ProgressBoard", "ProgressChannel", "find_board", "start_board"]

log = logging.getLogger(__name__)

# Named, so that Tune callbacks (pickled with the experiment state, and restored by a resumed
# sweep) find the board of the driver that runs now. Names are per Ray namespace, and every
# driver gets a namespace of its own: two sweeps on one cluster have two boards.
BOARD_NAME = "scalesweep-progress"


class ProgressBoard:
    """Latest progress record per trial since the sweep last took them."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}

    def put(self, trial_id: str, record: dict[str, Any]) -> None:
        self._latest[trial_id] = record

    def take(self) -> dict[str, dict[str, Any]]:
        latest, self._latest = self._latest, {}
        return latest


def start_board() -> Any:
    """The sweep's board, on this node and reserving no CPU (an actor handle)."""
    node = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(ProgressBoard)
        .options(
            name=BOARD_NAME,
            get_if_exists=True,
            num_cpus=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        )
        .remote()
    )


def find_board() -> Any | None:
    """The board of this driver's sweep, or None when there is none."""
    try:
        return ray.get_actor(BOARD_NAME)
    except ValueError:
        return None


@dataclass(frozen=True)
class ProgressChannel:
    """Where one trial's rank 0 sends its progress, and how often."""

    board: Any  # a ProgressBoard actor handle
    trial_id: str
    every_s: float

    def send(self, progress: StepProgress) -> None:
        """Never raises: progress is a view, and a trial must not fail for it."""
        try:
            self.board.put.remote(self.trial_id, progress.to_dict())
        except Exception as err:  # a board gone with its sweep, a serialisation error
            log.debug("progress record not sent: %s", err)
