"""The trial driver: a Tune function that fine-tunes one grid cell with a Ray Train TorchTrainer.

It reserves (almost) nothing itself (``orchestrator.cluster.DRIVER_RESOURCES``: a sliver of a
resource only the head offers); the trainer's workers hold the trial's CPUs/GPUs. Outside
Tune (a test, a REPL) the same function runs the trainer and returns its final metrics.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchTrainer
from ray.tune.trainable.trainable_fn_utils import _in_tune_session

from orchestrator.config import TrialConfig
from orchestrator.wandb_config import TrialTracking

STATE_FILE = "training_state.pt"


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
    trial = TrialConfig.model_validate(config)
    placement = {"worker_node_ids": _worker_node_ids()}

    def report(row: dict[str, Any], state: dict[str, Any] | None) -> None:
        # Rank 0 holds the same state as every rank (DDP): it alone writes the checkpoint.
        if state is None or ray.train.get_context().get_world_rank() != 0:
            ray.train.report(row | placement)
            return
        with tempfile.TemporaryDirectory() as directory:
            torch.save(state, Path(directory) / STATE_FILE)
            ray.train.report(row | placement, checkpoint=Checkpoint.from_directory(directory))

    with TrialTracker(tracking, trial) as tracker:
        row = fit(
            trial,
            report=tracker.report(report),
            device=ray.train.torch.get_device(),
            on_step=tracker.on_step,
            resume_from=_latest_state(),
        )
    return row | placement


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
    when ``tracking`` is given: rank 0 logs to it).
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
    loop_config = trial.model_dump(mode="json")
    if tracking:
        loop_config["tracking"] = tracking.model_dump(mode="json")
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=trial.compute.num_workers,
            use_gpu=trial.compute.use_gpu,
            resources_per_worker=trial.compute.worker_resources(),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path or os.path.abspath("ray_results"),
            failure_config=FailureConfig(max_failures=trial.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=trial.train.keep_checkpoints),
            callbacks=callbacks,
            # Train's INFO logs repeat every report; the sweep prints its own progress.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit().return_value
