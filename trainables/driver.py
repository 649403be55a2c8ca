"""The trial driver: a Tune function that fine-tunes one grid cell with a Ray Train TorchTrainer.

It reserves (almost) nothing itself (``orchestrator.cluster.DRIVER_RESOURCES``: a sliver of a
resource only the head offers); the trainer's workers hold the trial's CPUs/GPUs. Outside
Tune (a test, a REPL) the same function runs the trainer and returns its final metrics.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    ControllerError,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ray.train.torch import TorchConfig, TorchTrainer
from ray.train.v2._internal.constants import (
    COLLECTIVE_TIMEOUT_S_ENV_VAR,
    WORKER_GROUP_START_TIMEOUT_S_ENV_VAR,
)
from ray.train.v2._internal.exceptions import WorkerGroupStartupTimeoutError
from ray.tune.trainable.trainable_fn_utils import _in_tune_session

from orchestrator.config import TrialConfig
from orchestrator.wandb_config import TrialTracking
from trainables.watchdog import ProgressWatchdog

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
REPORTED_KEY = "reported_rows"
# How an out-of-memory error reads once Ray has carried it from the worker: CUDA's, the CPU
# allocator's, Python's, and Ray's memory monitor killing the worker.
_OOM_SIGNS = ("out of memory", "outofmemoryerror", "can't allocate memory", "memoryerror")


def _worker_node_ids() -> str:
    """The Ray node of every worker, in rank order: where the trial's gang was placed."""
    node_id = ray.get_runtime_context().get_node_id()
    if not dist.is_initialized():
        return node_id
    node_ids = [""] * dist.get_world_size()
    dist.all_gather_object(node_ids, node_id)
    return ",".join(node_ids)


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point on every worker: torch.distributed is set up, reports go to Train."""
    from trainables.loop import fit  # heavy imports (transformers) happen in the worker only
    from trainables.tracking import TrialTracker

    config = dict(config)
    tracking = config.pop("tracking", None)  # W&B settings ride along the trial (run_trial)
    # Added to every row: how often run_trial halved the micro-batch after running out of memory.
    extra = {"oom_retries": config.pop("oom_retries", 0), "worker_node_ids": _worker_node_ids()}
    trial = TrialConfig.model_validate(config)
    resume_from = _latest_state()
    # Every row reported so far, saved with each checkpoint. A row can reach the checkpoint but
    # not Tune (the sweep stopped in between): replaying them on a restart leaves no epoch
    # missing; the sweep's writer ignores the ones it already holds.
    reported: list[dict[str, Any]] = resume_from.pop(REPORTED_KEY, []) if resume_from else []
    for row in reported:
        ray.train.report(row)

    with (
        TrialTracker(tracking, trial) as tracker,
        ProgressWatchdog(trial.train.progress_timeout_s) as watchdog,
    ):

        def report(row: dict[str, Any], state: dict[str, Any] | None) -> None:
            watchdog.beat()
            reported.append(row | extra)
            # Rank 0 holds the same state as every rank (DDP): it alone writes the checkpoint.
            if state is None or ray.train.get_context().get_world_rank() != 0:
                ray.train.report(reported[-1])
                return
            with tempfile.TemporaryDirectory() as directory:
                torch.save(state | {REPORTED_KEY: reported}, Path(directory) / STATE_FILE)
                ray.train.report(reported[-1], checkpoint=Checkpoint.from_directory(directory))

        def on_step(counters: dict[str, float]) -> None:
            watchdog.beat(counters)
            tracker.on_step(counters)

        try:
            row = fit(
                trial,
                report=tracker.report(report),
                device=ray.train.torch.get_device(),
                on_step=on_step,
                on_eval_batch=watchdog.beat,
                resume_from=resume_from,
            )
        except Exception as err:
            # The watchdog fired, or a collective op hit the same timeout first.
            if watchdog.stalled():
                raise watchdog.error() from err
            raise
    return row | extra


def _latest_state() -> dict[str, Any] | None:
    """The state saved with the latest checkpoint of this run (after a worker or driver
    failure), or None on a first start."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


def run_trial(
    config: dict[str, Any],
    *,
    storage_path: str | None = None,
    tracking: TrialTracking | None = None,
) -> dict[str, Any]:
    """Fine-tune one trial config (a plain dict) with ``num_workers`` DDP workers.

    Inside Tune, each epoch's metrics reach Tune through TuneReportCallback, and the run is
    named after the trial id so a restarted trial finds its own checkpoints (and its W&B run,
    when ``tracking`` is given: rank 0 logs to it). After an out-of-memory error the trial runs
    again from its latest checkpoint with half the micro-batch, up to ``train.oom_retries`` times.
    """
    started_at = time.time()
    trial = TrialConfig.model_validate(config)
    callbacks = []
    name = None
    if _in_tune_session():
        from ray import tune
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
        context = tune.get_context()
        name = f"{context.get_experiment_name()}-{context.get_trial_id()}"
        if tracking:
            tracking = tracking.for_trial(context.get_trial_id(), started_at)
    run_config = RunConfig(
        name=name,
        storage_path=storage_path or os.path.abspath("ray_results"),
        # A placement that times out is not retried: compute.placement_timeout_s is the wait.
        failure_config=FailureConfig(
            max_failures=trial.train.max_failures, controller_failure_limit=0
        ),
        checkpoint_config=CheckpointConfig(num_to_keep=trial.train.keep_checkpoints),
        callbacks=callbacks,
        # Train's INFO logs repeat every report; the sweep prints its own progress.
        logging_config=LoggingConfig(log_level="WARNING"),
    )
    oom_retries = 0
    while True:
        loop_config = trial.model_dump(mode="json") | {"oom_retries": oom_retries}
        if tracking:
            loop_config["tracking"] = tracking.model_dump(mode="json")
        try:
            return _fit(trial, loop_config, run_config)
        except TrainingFailedError as err:
            smaller = trial.compute.with_half_micro_batch()
            if oom_retries == trial.train.oom_retries or not _out_of_memory(err) or not smaller:
                raise
            log.warning(
                "%s ran out of memory with micro-batch %d: retrying with %d",
                trial.label(),
                trial.compute.micro_batch(),
                smaller.micro_batch(),
            )
            trial = trial.model_copy(update={"compute": smaller})
            oom_retries += 1


def _fit(trial: TrialConfig, loop_config: dict[str, Any], run_config: RunConfig) -> dict:
    """One TorchTrainer run; a gang that cannot be placed in time is an error saying why."""
    progress_timeout = trial.train.progress_timeout_s
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=trial.compute.num_workers,
            use_gpu=trial.compute.use_gpu,
            resources_per_worker=trial.compute.worker_resources(),
        ),
        # A collective op waits no longer than the watchdog (see trainables.watchdog).
        torch_config=TorchConfig(timeout_s=math.ceil(progress_timeout))
        if progress_timeout
        else TorchConfig(),
        run_config=run_config,
    )
    # Train's controller reads these from the environment it inherits from here: the wait to
    # place the gang, and to pass Train's own barriers (in ray.train.report).
    timeouts = {WORKER_GROUP_START_TIMEOUT_S_ENV_VAR: str(trial.compute.placement_timeout_s)}
    if progress_timeout:
        timeouts[COLLECTIVE_TIMEOUT_S_ENV_VAR] = str(progress_timeout)
    with _environment(timeouts):
        try:
            return trainer.fit().return_value
        except ControllerError as err:
            if isinstance(err.controller_failure, WorkerGroupStartupTimeoutError):
                raise PlacementTimeoutError(_placement_message(trial)) from None
            raise


class PlacementTimeoutError(RuntimeError):
    """A trial's workers could not all be placed within ``compute.placement_timeout_s``."""


def _placement_message(trial: TrialConfig) -> str:
    compute = trial.compute
    asked = compute.worker_resources()
    free, total = ray.available_resources(), ray.cluster_resources()
    return (
        f"could not place {compute.num_workers} worker(s) of "
        + ", ".join(f"{k} {v:g}" for k, v in asked.items())
        + f" each within {compute.placement_timeout_s:g} s (compute.placement_timeout_s); "
        + "free now: "
        + ", ".join(f"{k} {free.get(k, 0):g} of {total.get(k, 0):g}" for k in asked)
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
