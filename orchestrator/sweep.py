"""Launch a sweep: the one orchestrator module that drives Ray Tune.

One Tune trial per grid cell; each trial runs ``trainables.driver.run_trial``, which fits a
TorchTrainer. A Tune callback streams every report into the experiment directory as it arrives,
so an interrupted or failing sweep keeps everything that finished.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS

from orchestrator.config import TrialConfig
from orchestrator.experiment import ExperimentDir, TrialRecord, summarize_error
from orchestrator.spec import SpecError, SweepSpec
from trainables.driver import DRIVER_RESOURCES, run_trial

log = logging.getLogger(__name__)

# Passed to every Ray worker process: quiet, offline-aware, and no print patching (Train V2's
# print patch dumps `datasets` fingerprinting bytecode into the logs).
WORKER_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}
FORWARDED_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "SCALESWEEP_CACHE")
_NOT_REPORTED = {*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag", "should_checkpoint"}


def max_concurrent_trials(spec: SweepSpec, cluster: Mapping[str, float]) -> int:
    """How many trials may run at once so that any mix of them fits: the cluster's capacity
    divided by the largest gang. Raises SpecError for a trial the cluster can never place."""
    limit = math.inf
    for trial in spec.trials:
        for resource, amount in trial.compute.trial_resources().items():
            available = cluster.get(resource, 0)
            if amount > available:
                workers = trial.compute.num_workers
                raise SpecError(
                    f"trial {trial.label()} needs {amount:g} {resource} at once ({workers} "
                    f"workers x {amount / workers:g}) but the cluster has {available:g}; lower "
                    f"compute.num_workers or compute.cpus_per_worker, or add nodes"
                )
            limit = min(limit, available // amount)
    if spec.max_concurrent_trials:
        limit = min(limit, spec.max_concurrent_trials)
    return max(1, int(min(limit, len(spec.trials))))


class ExperimentWriter(tune.Callback):
    """Streams trial starts, per-epoch reports, completions and errors to the experiment dir."""

    def __init__(self, experiment: ExperimentDir, total: int) -> None:
        self.experiment = experiment
        self.total = total
        self.records: dict[str, TrialRecord] = {}
        self.started: dict[str, float] = {}

    def _record(self, trial: Trial) -> TrialRecord:
        if trial.trial_id not in self.records:
            self.records[trial.trial_id] = TrialRecord(trial.trial_id, dict(trial.config))
        return self.records[trial.trial_id]

    def _flush(self, trials: list[Trial]) -> None:
        for trial in trials:
            self._record(trial)
        self.experiment.write_results(list(self.records.values()))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        record = self._record(trial)
        record.status, record.history = "RUNNING", []
        self.started[trial.trial_id] = time.monotonic()
        self.experiment.start_trial(record)
        self._flush(trials)
        print(f"  {_label(record)} started ({trial.trial_id})", flush=True)

    def on_trial_result(self, iteration, trials, trial: Trial, result: dict, **info) -> None:
        row = {k: v for k, v in result.items() if k not in _NOT_REPORTED}
        record = self._record(trial)
        record.history.append(row)
        self.experiment.append_history(trial.trial_id, row)
        epochs = record.config["train"]["epochs"]
        print(f"  {_label(record)} epoch {row.get('epoch')}/{epochs}: {_score(row)}", flush=True)

    def _finish(self, trials: list[Trial], trial: Trial, status: str, error: str = "") -> None:
        record = self._record(trial)
        record.status, record.error = status, error
        record.wall_s = time.monotonic() - self.started.get(trial.trial_id, time.monotonic())
        self._flush(trials)
        done = sum(r.status in ("TERMINATED", "ERROR") for r in self.records.values())
        outcome = (
            f"error: {error}" if error else _score(record.history[-1] if record.history else {})
        )
        print(
            f"[{done}/{self.total}] {_label(record)} {status} in {record.wall_s:.0f}s — {outcome}"
        )

    def on_trial_complete(self, iteration, trials, trial: Trial, **info) -> None:
        self._finish(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial: Trial, **info) -> None:
        # Tune has just written the traceback locally (its storage copy is synced later).
        error_file = Path(trial.error_file) if trial.error_file else None
        text = error_file.read_text() if error_file and error_file.is_file() else "unknown error"
        self.experiment.write_error(trial.trial_id, text)
        self._finish(trials, trial, "ERROR", summarize_error(text))

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        for trial in trials:
            record = self._record(trial)
            if record.status in ("PENDING", "RUNNING"):
                record.status = trial.status
        self._flush(trials)


def _label(record: TrialRecord) -> str:
    return TrialConfig.model_validate(record.config).label()


def _score(row: dict) -> str:
    scores = {k: v for k, v in row.items() if k.startswith("eval_") and k != "eval_time_s"}
    return ", ".join(f"{k}={v:.4f}" for k, v in scores.items()) or "no epochs reported"


def _tune_trial(config: dict, storage_path: str) -> None:
    """The Tune function: metrics reach Tune per epoch; returning None adds no extra result."""
    run_trial(config, storage_path=storage_path)


def run_sweep(spec: SweepSpec, experiment_dir: Path, *, address: str | None = None) -> Path:
    """Run every trial of ``spec`` on local Ray (default) or the cluster at ``address``."""
    experiment = ExperimentDir(experiment_dir)
    experiment.create(spec)
    env = WORKER_ENV | {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    # Worker logs stay in Ray's session log folder: the console gets one line per epoch and
    # per trial, and each failed trial's traceback is saved in its trial folder.
    ray.init(address=address or "local", runtime_env={"env_vars": env}, log_to_driver=False)
    try:
        concurrency = max_concurrent_trials(spec, ray.cluster_resources())
        print(
            f"sweep {spec.name}: {len(spec.trials)} trials, up to {concurrency} at once; "
            f"results -> {experiment.path}",
            file=sys.stderr,
        )
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, storage_path=str(experiment.path / "train")),
            DRIVER_RESOURCES,
        )
        tuner = tune.Tuner(
            trainable,
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str(experiment.path),
                callbacks=[ExperimentWriter(experiment, len(spec.trials))],
                verbose=0,  # ExperimentWriter prints one line per epoch and per trial
            ),
        )
        tuner.fit()
    finally:
        ray.shutdown()
    return experiment.path
