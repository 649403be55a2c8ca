"""The trial driver: fine-tunes one trial with a Ray Train TorchTrainer, and its restarts.

``run_trial`` builds the trainer (one worker per ``compute.num_workers``, DDP) and runs it
again when it fails in a way worth another try: from the latest checkpoint after a worker
failure (``train.max_failures`` times), and with half the micro-batch after running out of
memory (``train.oom_retries`` times, never charged to ``max_failures``). Preemptions are Ray
Train's own to retry. Each worker runs ``train_loop_per_worker``: the worker loop with the
progress watchdog, the W&B tracker, the progress sender and the checkpointer plugged in as its
callbacks. A sweep calls this from its Tune function; a test or a REPL can call it with a plain
dict.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import (
    CheckpointConfig,
    ControllerError,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
    WorkerGroupError,
)
from ray.train.torch import TorchConfig, TorchTrainer

from contract.config import TrialConfig, describe_resources
from contract.tracking import TrialTracking
from contract.worker import WorkerInput
from trainables.distributed import all_gather_objects
from trainables.progress_board import ProgressChannel
from trainables.ray_internals import (
    COLLECTIVE_TIMEOUT_S_ENV_VAR,
    WORKER_GROUP_START_TIMEOUT_S_ENV_VAR,
    WorkerGroupStartupTimeoutError,
)

__all__ = ["PlacementTimeoutError", "run_trial", "train_loop_per_worker"]

log = logging.getLogger(__name__)

# How an out-of-memory error reads once Ray has carried it from the worker: CUDA's, the CPU
# allocator's, Python's, and Ray's memory monitor killing the worker.
_OOM_SIGNS = ("out of memory", "outofmemoryerror", "can't allocate memory", "memoryerror")
# A collective op (torch.distributed, Ray Train's own) may wait this much longer than the
# progress watchdog, so that the watchdog fires first and says why (trainables.watchdog).
_COLLECTIVE_GRACE_S = 30
# The train loop config's key, beside the WorkerInput's, of the trial's progress channel: an
# actor handle, which travels pickled (not as JSON) to every worker.
_PROGRESS_KEY = "progress_channel"


class PlacementTimeoutError(RuntimeError):
    """A trial's workers could not all be placed within ``compute.placement_timeout_s``."""


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point on every worker: torch.distributed is set up, reports go to Train.
    ``config`` is a ``WorkerInput`` and the progress channel (or None); returns the last
    epoch's row (``EpochRow.to_dict()``)."""
    # Heavy imports (transformers) happen in the worker only.
    from trainables.checkpoints import RayCheckpointer, latest_state
    from trainables.loop import fit
    from trainables.progress import ProgressSender
    from trainables.tracking import TrialTracker
    from trainables.watchdog import ProgressWatchdog

    config = dict(config)
    channel = config.pop(_PROGRESS_KEY, None)
    worker = WorkerInput.model_validate(config)
    trial, resume_from = worker.trial, latest_state()
    checkpointer = RayCheckpointer(
        trial, resume_from, oom_retries=worker.oom_retries, worker_node_ids=_worker_node_ids()
    )
    checkpointer.replay()
    with (
        ProgressWatchdog(trial.train.progress_timeout_s) as watchdog,
        TrialTracker(worker.tracking, trial) as tracker,
    ):
        try:
            fit(
                trial,
                callbacks=[watchdog, tracker, ProgressSender(channel, trial), checkpointer],
                device=ray.train.torch.get_device(),
                resume_from=resume_from,
            )
        except Exception as err:
            # The watchdog fired, or a collective op hit its timeout first.
            if watchdog.stalled():
                raise watchdog.error() from err
            raise
    return checkpointer.reported[-1] if checkpointer.reported else {}


def _worker_node_ids() -> str:
    """The Ray node of every worker, in rank order: where the trial's gang was placed."""
    return ",".join(all_gather_objects([ray.get_runtime_context().get_node_id()]))


def run_trial(
    config: dict[str, Any],
    *,
    storage_path: str | None = None,
    name: str | None = None,
    callbacks: Sequence[Any] = (),
    tracking: TrialTracking | None = None,
    progress: ProgressChannel | None = None,
) -> dict[str, Any]:
    """Fine-tune one trial config (a plain dict) with ``num_workers`` DDP workers; the last
    epoch's row (``EpochRow.to_dict()``).

    ``name`` must be the same on every run of the trial (a sweep derives it from the trial id),
    so that a restarted trial finds its own checkpoints under ``storage_path``; ``callbacks``
    are Ray Train callbacks (a sweep passes Tune's report callback); with ``tracking`` rank 0
    logs the trial to W&B; with ``progress`` rank 0 sends progress within each epoch there.
    """
    trial = TrialConfig.model_validate(config)
    run_config = RunConfig(
        name=name,
        storage_path=storage_path or os.path.abspath("ray_results"),
        # Worker failures and out-of-memory errors are retried here, each by its own budget;
        # Ray Train retries only preemptions (max_preemption_failures, unlimited by default).
        # A placement that times out is not retried: compute.placement_timeout_s is the wait.
        failure_config=FailureConfig(max_failures=0, controller_failure_limit=0),
        checkpoint_config=CheckpointConfig(num_to_keep=trial.train.keep_checkpoints),
        callbacks=list(callbacks),
        # Train's INFO logs repeat every report; the sweep prints its own progress.
        logging_config=LoggingConfig(log_level="WARNING"),
    )
    oom_retries = failures = 0
    while True:
        worker = WorkerInput(trial=trial, oom_retries=oom_retries, tracking=tracking)
        try:
            loop_config = worker.model_dump(mode="json") | {_PROGRESS_KEY: progress}
            return _fit(trial, loop_config, run_config)
        except WorkerGroupError as err:
            smaller = trial.compute.with_half_micro_batch()
            if _out_of_memory(err):
                if oom_retries == trial.train.oom_retries or not smaller:
                    raise
                log.warning(
                    "%s ran out of memory with micro-batch %d: retrying with %d",
                    trial.label(),
                    trial.compute.micro_batch(),
                    smaller.micro_batch(),
                )
                trial = trial.model_copy(update={"compute": smaller})
                oom_retries += 1
            elif failures < trial.train.max_failures:
                failures += 1
                log.warning(
                    "%s failed (%s): restarting its workers from the latest checkpoint (%d of %d)",
                    trial.label(),
                    err,
                    failures,
                    trial.train.max_failures,
                )
            else:
                raise


def _fit(trial: TrialConfig, loop_config: dict[str, Any], run_config: RunConfig) -> dict:
    """One TorchTrainer run; a gang that cannot be placed in time is an error saying why."""
    progress_timeout = trial.train.progress_timeout_s
    collective_timeout = progress_timeout and math.ceil(progress_timeout) + _COLLECTIVE_GRACE_S
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=trial.compute.num_workers,
            use_gpu=trial.compute.use_gpu,
            resources_per_worker=trial.compute.worker_resources(),
        ),
        torch_config=TorchConfig(timeout_s=collective_timeout)
        if collective_timeout
        else TorchConfig(),
        run_config=run_config,
    )
    # Train's controller reads these from the environment it inherits from here: the wait to
    # place the gang, and to pass Train's own barriers (in ray.train.report).
    timeouts = {WORKER_GROUP_START_TIMEOUT_S_ENV_VAR: str(trial.compute.placement_timeout_s)}
    if collective_timeout:
        timeouts[COLLECTIVE_TIMEOUT_S_ENV_VAR] = str(collective_timeout)
    with _environment(timeouts):
        try:
            return trainer.fit().return_value
        except ControllerError as err:
            if isinstance(err.controller_failure, WorkerGroupStartupTimeoutError):
                raise PlacementTimeoutError(_placement_message(trial)) from None
            raise


def _placement_message(trial: TrialConfig) -> str:
    compute = trial.compute
    asked = compute.worker_resources()
    free, total = ray.available_resources(), ray.cluster_resources()
    return (
        f"could not place {compute.num_workers} worker(s) of {describe_resources(asked)} each "
        f"within {compute.placement_timeout_s:g} s (compute.placement_timeout_s); free now: "
        + ", ".join(f"{free.get(k, 0):g} of {total.get(k, 0):g} {k}" for k in asked)
    )


def _out_of_memory(err: TrainingFailedError) -> bool:
    """Whether a worker failed for lack of (GPU or host) memory."""
    failures = getattr(err, "worker_failures", {}).values()
    if any(isinstance(f, torch.OutOfMemoryError | MemoryError) for f in failures):
        return True
    text = " ".join(str(x) for x in (err, *failures)).lower()
    return any(sign in text for sign in _OOM_SIGNS)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
