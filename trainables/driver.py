"""The trial driver: a Tune function that fine-tunes one grid cell with a Ray Train TorchTrainer.

It reserves (almost) nothing itself; the trainer's workers hold the trial's CPUs/GPUs. Outside
Tune (a test, a REPL) the same function runs the trainer and returns its final metrics.
"""

from __future__ import annotations

import os
from typing import Any

import ray.train
import ray.train.torch
from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.tune.trainable.trainable_fn_utils import _in_tune_session

from orchestrator.config import TrialConfig

# What a Tune trial reserves for the driver itself: a token amount, since a 0-resource request
# is rejected and a whole CPU would starve the trainer's workers on small machines.
DRIVER_RESOURCES = {"cpu": 0, "memory": 1 << 20}


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Ray Train entry point on every worker: torch.distributed is set up, reports go to Train."""
    from trainables.loop import fit  # heavy imports (transformers) happen in the worker only

    return fit(
        TrialConfig.model_validate(config),
        report=ray.train.report,
        device=ray.train.torch.get_device(),
    )


def run_trial(config: dict[str, Any], *, storage_path: str | None = None) -> dict[str, Any]:
    """Fine-tune one trial config (a plain dict) with ``num_workers`` DDP workers.

    Inside Tune, each epoch's metrics reach Tune through TuneReportCallback, and the run is
    named after the trial id so a restarted trial finds its own checkpoints.
    """
    trial = TrialConfig.model_validate(config)
    callbacks = []
    name = None
    if _in_tune_session():
        from ray import tune
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
        context = tune.get_context()
        name = f"{context.get_experiment_name()}-{context.get_trial_id()}"
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=trial.model_dump(mode="json"),
        scaling_config=ScalingConfig(
            num_workers=trial.compute.num_workers,
            use_gpu=trial.compute.use_gpu,
            resources_per_worker=trial.compute.worker_resources(),
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path or os.path.abspath("ray_results"),
            failure_config=FailureConfig(max_failures=trial.train.max_failures),
            callbacks=callbacks,
            # Train's INFO logs repeat every report; the sweep prints its own progress.
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit().return_value
