"""Launch a sweep: the one orchestrator module that drives Ray Tune.

One Tune trial per grid cell; each trial runs ``trainables.driver.run_trial``, which fits a
TorchTrainer. A Tune callback streams every report into the experiment directory as it arrives,
so an interrupted or failing sweep keeps everything that finished. Between reports, each trial's
rank 0 sends its progress to the sweep's ``ProgressBoard`` actor, which the same callback reads
about every second (``orchestrator.monitor`` writes and shows it); the console is the sweep's
own, in place of Tune's.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.progress_reporter import TrialProgressCallback

from contract.config import TrialConfig
from contract.rows import METRIC_NAMES, EpochRow, score_column
from contract.tracking import TrialTracking
from orchestrator.cluster import (
    DRIVER_NODE_RESOURCE,
    DRIVER_RESOURCES,
    HEAD_DRIVER_UNITS,
    max_concurrent_trials,
    sweep_capacity,
)
from orchestrator.experiment import FAILED, FINISHED, ExperimentDir, Ledger, summarize_error
from orchestrator.monitor import DEFAULT_PROGRESS_EVERY_S, ProgressOptions, SweepMonitor
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.storage import is_uri, storage_root, upload
from orchestrator.wandb.views import SweepTracking
from trainables.driver import run_trial
from trainables.progress_board import ProgressChannel, find_board, start_board

log = logging.getLogger(__name__)

# Passed to every Ray worker process: quiet, offline-aware, and no print patching (Train V2's
# print patch dumps `datasets` fingerprinting bytecode into the logs).
WORKER_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    # Ray Train's controller polls its workers every 2 s by default, and each trial waits on a
    # poll to start, to pass on reports and to finish: seconds of idle per small trial.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
}
# Only on a local instance, which no cloud can preempt: no preemption-watcher actor per trial
# (one more process to start, ~1 CPU-second each on a small machine; see BENCHMARKS.md).
LOCAL_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
# Never WANDB_API_KEY: Ray writes the runtime env in plain text to its session logs
# (runtime_env_agent.log). Local workers inherit the key with the driver's environment; cluster
# nodes need it in their own (a secret).
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "SCALESWEEP_CACHE",
    "WANDB_BASE_URL",
)
# Tune's older output engine, the one that a callback can silence (_NoTuneConsole); read by
# Tune in the process that runs the sweep, while it runs.
_TUNE_OUTPUT = {"RAY_AIR_NEW_OUTPUT": "0"}
# Tune's logger that says where it saved its state, at the end of every sweep (INFO).
_TUNE_LOGGER = "ray.tune.tune"
# How often the sweep's callback looks for progress records (and redraws a live display).
POLL_S = 1.0
# How this run of the driver shows progress (run_sweep and resume_sweep set it). Not an attribute
# of _TuneEvents: Tune pickles its callbacks at launch, and a resumed sweep restores them as they
# were then, whatever options it was resumed with.
_progress_options = ProgressOptions()


class _NoTuneConsole(TrialProgressCallback):
    """Takes the place of Tune's console, and prints nothing: the sweep's console is
    _TuneEvents'. With its older output engine (``_TUNE_OUTPUT``) and ``verbose=0``, Tune prints
    no experiment box, results path or status tables, and adds its per-trial printer (this
    class's base, which prints every failed and every finished trial whatever the verbosity)
    only when the callbacks hold none. Tune's newer engine has no such switch: its reporter
    prints each failed trial at any verbosity. Tune's files stay as they are."""

    def on_trial_result(self, *args, **kwargs) -> None:
        pass

    def on_trial_error(self, *args, **kwargs) -> None:
        pass

    def on_trial_complete(self, *args, **kwargs) -> None:
        pass


class _TuneEvents(tune.Callback):
    """Tune's events, translated for the experiment directory's ``Ledger``, and printed as
    one line per trial start, epoch and end; progress within trials, read from the sweep's
    board, goes to the ``SweepMonitor``."""

    def __init__(self, experiment: ExperimentDir, total: int, concurrency: int = 1) -> None:
        self.experiment = experiment
        self.total = total
        self.concurrency = concurrency

    def setup(self, **info) -> None:
        # Made here, not in __init__: a resumed sweep restores this callback as it was pickled
        # at launch, and the ledger must read what the interrupted run wrote.
        self.ledger = Ledger(self.experiment)
        self.monitor = SweepMonitor(
            self.experiment,
            self.ledger,
            # A sweep launched before progress existed pickled no concurrency.
            concurrency=getattr(self, "concurrency", 1),
            options=_progress_options,
        )
        self.board = find_board()
        self._taking = None  # the board's answer to come (an ObjectRef)
        self._polled = 0.0

    def on_step_end(self, iteration: int, trials: list[Trial], **info) -> None:
        if time.monotonic() - self._polled < POLL_S:
            return
        self._polled = time.monotonic()
        self.monitor.received(self._take())
        self.monitor.tick()

    def _take(self) -> dict:
        """What the board holds, without ever waiting for it (Tune's loop runs in this thread):
        each poll collects the answer to the previous one's request, if it came."""
        if self.board is None:
            return {}
        if self._taking is not None and not ray.wait([self._taking], timeout=0)[0]:
            return {}  # the board is starting, or busy
        taking, self._taking = self._taking, self.board.take.remote()
        try:
            return ray.get(taking) if taking is not None else {}
        except Exception as err:  # the board died: the sweep goes on without progress
            log.warning("progress within trials is off from now on: %s", err)
            self.board = None
            return {}

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        if trial.trial_id in self.ledger.finished_before:
            return  # its row stands; the trial function returns at once (see _tune_trial)
        resumed = self.ledger.start(trial.trial_id, trial.config)
        print(f"  {_label(trial)} {'resumed' if resumed else 'started'} ({trial.trial_id})")
        self.monitor.trial_started(trial.trial_id)

    def on_trial_result(self, iteration, trials, trial: Trial, result: dict, **info) -> None:
        row = EpochRow.from_dict(result)  # Tune's own keys (iteration, time, ...) dropped
        if self.ledger.add_row(trial.trial_id, trial.config, row):
            epochs = trial.config["train"]["epochs"]
            print(f"  {_label(trial)} epoch {row.epoch}/{epochs}: {_scores(row)}", flush=True)

    def on_trial_complete(self, iteration, trials, trial: Trial, **info) -> None:
        if trial.trial_id in self.ledger.finished_before:
            return
        self.ledger.finish(trial.trial_id, trial.config, FINISHED)
        history = self.ledger.records[trial.trial_id].history
        self._print_end(trial, FINISHED, _scores(history[-1]) if history else "no epochs")
        self.monitor.trial_ended(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial: Trial, **info) -> None:
        reason = self.ledger.fail(trial.trial_id, trial.config, _error_text(trial))
        self._print_end(trial, FAILED, f"error: {reason}")
        self.monitor.trial_ended(trial.trial_id)

    def on_trial_recover(self, iteration, trials, trial: Trial, **info) -> None:
        record = self.ledger.retry(trial.trial_id, trial.config)
        reason = summarize_error(_error_text(trial))
        print(f"  {_label(trial)} failed, retry {record.retries}: {reason}")

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        # Only a completion or an error event finishes a row: a trial still running when the
        # sweep stopped (Ctrl-C) is INTERRUPTED, whatever Tune calls it; `resume` continues it.
        self.ledger.end()
        self.monitor.close()  # progress.json says finished (or interrupted); the live display ends

    def _print_end(self, trial: Trial, status: str, outcome: str) -> None:
        wall = self.ledger.records[trial.trial_id].wall_s or 0.0
        done = self.ledger.done()
        print(f"[{done}/{self.total}] {_label(trial)} {status} in {wall:.0f}s — {outcome}")


def _error_text(trial: Trial) -> str:
    # Tune has just written the traceback locally (its storage copy is synced later).
    error_file = Path(trial.error_file) if trial.error_file else None
    return error_file.read_text() if error_file and error_file.is_file() else "unknown error"


def _label(trial: Trial) -> str:
    return TrialConfig.model_validate(trial.config).label()


def _scores(row: EpochRow) -> str:
    scores = {"eval_loss": row.eval_loss}
    scores |= {score_column(m): row.score(m) for m in METRIC_NAMES if row.score(m) is not None}
    return ", ".join(f"{k}={v:.4f}" for k, v in scores.items())


def _tune_trial(
    config: dict,
    storage_path: str,
    tracking: TrialTracking | None,
    finished: frozenset[str] = frozenset(),
    board: Any = None,
    progress_every_s: float = DEFAULT_PROGRESS_EVERY_S,
) -> None:
    """The Tune function: runs the trial with Ray Train, whose reports reach Tune per epoch
    (TuneReportCallback); returning None adds no extra result.

    The run is named after the trial id, so a trial run again (a Tune retry, a resumed sweep)
    finds its own checkpoints, and its W&B run. ``finished``: trials a resumed sweep must not
    run again; Tune saves its own state every few seconds, so after a killed driver it may not
    know that they had finished. ``board``: the sweep's ``ProgressBoard``, where rank 0 sends
    progress every ``progress_every_s`` seconds.
    """
    started_at = time.time()
    context = tune.get_context()
    trial_id = context.get_trial_id()
    if trial_id in finished:
        return
    run_trial(
        config,
        storage_path=storage_path,
        name=f"{context.get_experiment_name()}-{trial_id}",
        callbacks=[TuneReportCallback()],
        tracking=tracking.for_trial(trial_id, started_at) if tracking else None,
        progress=ProgressChannel(board, trial_id, progress_every_s) if board else None,
    )


def _job_env_vars() -> set[str]:
    """Env vars a Ray Job's runtime env already gives every worker: Ray refuses a ray.init
    runtime env that sets one of them again."""
    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    return set((job_config.get("runtime_env") or {}).get("env_vars") or {})


def run_sweep(
    spec: SweepSpec,
    experiment_dir: Path,
    *,
    address: str | None = None,
    cluster_file: Path | None = None,
    progress: ProgressOptions | None = None,
) -> Path:
    """Run every trial of ``spec`` on local Ray (default) or the cluster at ``address``.

    Concurrency follows ``cluster_file`` at full scale when given (what the autoscaler can add),
    else the cluster's nodes now; with a URI ``storage_path`` trial state goes there too.
    ``progress``: how often trials send progress, and how the console shows it.
    """
    global _progress_options
    _progress_options = progress = progress or ProgressOptions()
    experiment = ExperimentDir(experiment_dir)
    _check_data(spec)
    try:
        experiment.create(spec)
    except OSError as err:
        raise SpecError(f"cannot write the experiment directory {experiment.path}: {err}") from None
    tracking = SweepTracking.start(spec, experiment.path)  # W&B summary run; no-op when off
    storage = storage_root(spec.storage_path, experiment.path)
    _init_ray(address)
    try:
        capacity = sweep_capacity(cluster_file, on_cluster=address is not None)
        concurrency = max_concurrent_trials(spec, capacity)
        print(
            f"sweep {spec.name}: {len(spec.trials)} trials, up to {concurrency} at once on "
            f"{capacity.describe()}; results -> {experiment.path}",
            file=sys.stderr,
        )
        tuner = tune.Tuner(
            _trainable(storage, tracking, start_board(), progress.every_s),
            param_space=spec.param_space(),
            # Reused trial-driver actors: no new process (and imports) per trial.
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=storage,
                callbacks=[
                    _NoTuneConsole(),
                    _TuneEvents(experiment, len(spec.trials), concurrency),
                ],
                failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
                verbose=0,  # _TuneEvents prints one line per epoch and per trial
            ),
        )
        with _quiet_tune():
            tuner.fit()
    finally:
        _finish(spec, experiment, storage, tracking)
    return experiment.path


def resume_sweep(
    experiment_dir: Path,
    *,
    address: str | None = None,
    progress: ProgressOptions | None = None,
) -> Path:
    """Continue an interrupted sweep (Ctrl-C, killed driver, lost head node): finished trials
    are kept as they are, unfinished ones resume from their latest checkpoints."""
    global _progress_options
    _progress_options = progress = progress or ProgressOptions()
    experiment = ExperimentDir(experiment_dir)
    if not (experiment.path / "spec.yaml").is_file():
        raise SpecError(f"{experiment.path}: not an experiment directory (no spec.yaml)")
    spec = load_spec(experiment.path / "spec.yaml")
    storage = storage_root(spec.storage_path, experiment.path)
    if not tune.Tuner.can_restore(f"{storage}/tune"):
        raise SpecError(f"{experiment.path}: no Tune state to resume under {storage}/tune")
    tracking = SweepTracking.start(spec, experiment.path)
    _init_ray(address)
    try:
        print(f"resuming sweep {spec.name} in {experiment.path}", file=sys.stderr)
        finished = frozenset(r.trial_id for r in experiment.load_records() if r.status == FINISHED)
        tuner = tune.Tuner.restore(
            f"{storage}/tune",
            trainable=_trainable(storage, tracking, start_board(), progress.every_s, finished),
            resume_unfinished=True,
            resume_errored=False,  # a trial that failed for a reason would fail again
        )
        with _quiet_tune():
            tuner.fit()
    finally:
        _finish(spec, experiment, storage, tracking)
    return experiment.path


@contextmanager
def _quiet_tune() -> Iterator[None]:
    """Tune without its console output (see _NoTuneConsole), while the sweep runs."""
    before = {k: os.environ.get(k) for k in _TUNE_OUTPUT}
    tune_logger = logging.getLogger(_TUNE_LOGGER)
    level = tune_logger.level
    os.environ.update(_TUNE_OUTPUT)
    tune_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        tune_logger.setLevel(level)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_data(spec: SweepSpec) -> None:
    """Load every distinct data source once, before Ray starts: a missing column, a label
    outside the label set or an unreachable dataset is a one-line error, not N failed trials."""
    from trainables.data import load_task_data

    sources = {t.data.source_key(): t.data for t in spec.trials}
    for data in sources.values():
        try:
            load_task_data(data)
        except (OSError, ValueError) as err:
            raise SpecError(f"{spec.path}: data: {str(err).strip().splitlines()[0]}") from None


def _init_ray(address: str | None) -> None:
    env = WORKER_ENV | ({} if address else LOCAL_ENV)
    env |= {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env = {k: v for k, v in env.items() if k not in _job_env_vars()}
    # Worker logs stay in Ray's session log folder: the console gets one line per epoch and
    # per trial, and each failed trial's traceback is saved in its trial folder.
    ray.init(
        address=address or "local",
        runtime_env={"env_vars": env},
        log_to_driver=False,
        # A local instance is its own head: it offers the resource trial drivers run on.
        resources=None if address else {DRIVER_NODE_RESOURCE: HEAD_DRIVER_UNITS},
    )


def _trainable(
    storage: str,
    tracking: SweepTracking,
    board: Any,
    progress_every_s: float,
    finished: frozenset[str] = frozenset(),
):
    trial_fn = tune.with_parameters(
        _tune_trial,
        storage_path=f"{storage}/train",
        tracking=tracking.trials,
        finished=finished,
        board=board,
        progress_every_s=progress_every_s,
    )
    return tune.with_resources(trial_fn, DRIVER_RESOURCES)


def _finish(spec: SweepSpec, experiment: ExperimentDir, storage: str, tracking) -> None:
    ray.shutdown()
    tracking.finish()  # results table and scaling charts; before the upload takes the dir
    if is_uri(spec.storage_path):
        upload(experiment.path, storage)
    statuses = experiment.read_results()["status"]
    unfinished = len(spec.trials) - statuses.isin(["TERMINATED", "ERROR"]).sum()
    if unfinished:
        print(
            f"sweep interrupted with {unfinished} trial(s) unfinished; continue it with:\n"
            f"  scalesweep resume {experiment.path}",
            file=sys.stderr,
        )
