"""Launch a sweep: the one orchestrator module that drives Ray Tune.

One Tune trial per grid cell; each trial runs ``trainables.driver.run_trial``, which fits a
TorchTrainer. A Tune callback streams every report into the experiment directory as it arrives,
so an interrupted or failing sweep keeps everything that finished.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.result import AUTO_RESULT_KEYS
from ray.tune.search import BasicVariantGenerator

from orchestrator.cluster import (
    DRIVER_NODE_RESOURCE,
    DRIVER_RESOURCES,
    HEAD_DRIVER_UNITS,
    Admission,
    Gang,
    check_placeable,
    start_order,
    sweep_capacity,
    trial_gang,
)
from orchestrator.config import TrialConfig
from orchestrator.experiment import ExperimentDir, TrialRecord, summarize_error
from orchestrator.plan import plan_rows
from orchestrator.resource_plan import BENCHMARKED
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.storage import is_uri, storage_root, upload
from orchestrator.wandb_config import TrialTracking
from orchestrator.wandb_views import SweepTracking
from trainables.driver import run_trial

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
_NOT_REPORTED = {*AUTO_RESULT_KEYS, "done", "trial_id", "experiment_tag", "should_checkpoint"}


class ExperimentWriter(tune.Callback):
    """Streams trial starts, per-epoch reports, completions and errors to the experiment dir."""

    def __init__(self, experiment: ExperimentDir, total: int) -> None:
        self.experiment = experiment
        self.total = total
        self.records: dict[str, TrialRecord] = {}
        # When each running trial (re)started, and its wall time before that: a trial's wall
        # time adds up over resumptions, and is saved with every epoch, so a killed driver
        # loses at most the time since the last one.
        self.started: dict[str, tuple[float, float]] = {}
        self.finished_before: set[str] = set()

    def setup(self, **info) -> None:
        # A resumed sweep restores this callback as it was pickled at launch: reload what the
        # interrupted run wrote, so finished trials keep their rows and histories.
        self.records = {r.trial_id: r for r in self.experiment.load_records()}
        self.finished_before = {t for t, r in self.records.items() if r.status == "TERMINATED"}

    def _record(self, trial: Trial) -> TrialRecord:
        if trial.trial_id not in self.records:
            self.records[trial.trial_id] = TrialRecord(trial.trial_id, dict(trial.config))
        return self.records[trial.trial_id]

    def _flush(self, trials: list[Trial]) -> None:
        for trial in trials:
            self._record(trial)
        self.experiment.write_results(list(self.records.values()))

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        if trial.trial_id in self.finished_before:
            return  # its row stands; the trial function returns at once (see _tune_trial)
        resumed = trial.trial_id in self.records
        record = self._record(trial)
        record.status = "RUNNING"
        self.started[trial.trial_id] = (time.monotonic(), record.wall_s or 0.0)
        if not resumed:
            self.experiment.start_trial(record)
        self._flush(trials)
        verb = "resumed" if resumed else "started"
        print(f"  {_label(record)} {verb} ({trial.trial_id})", flush=True)

    def on_trial_result(self, iteration, trials, trial: Trial, result: dict, **info) -> None:
        row = {k: v for k, v in result.items() if k not in _NOT_REPORTED}
        record = self._record(trial)
        if any(row.items() <= held.items() for held in record.history):
            return  # replayed by a restarted trial (see trainables.driver): already recorded
        if record.history and row.get("epoch", 0) <= record.history[-1].get("epoch", 0):
            # The trial restarted from an earlier checkpoint (or from scratch): its new rows
            # replace the ones it is repeating, so each epoch appears once.
            record.history = [h for h in record.history if h["epoch"] < row["epoch"]]
            self.experiment.rewrite_history(trial.trial_id, record.history)
        record.history.append(row)
        self.experiment.append_history(trial.trial_id, row)
        self._update_wall(record)
        self._flush(trials)
        epochs = record.config["train"]["epochs"]
        print(f"  {_label(record)} epoch {row.get('epoch')}/{epochs}: {_score(row)}", flush=True)

    def _finish(self, trials: list[Trial], trial: Trial, status: str, error: str = "") -> None:
        if trial.trial_id in self.finished_before:
            return
        record = self._record(trial)
        record.status, record.error = status, error
        self._update_wall(record)
        self._flush(trials)
        done = sum(r.status in ("TERMINATED", "ERROR") for r in self.records.values())
        outcome = (
            f"error: {error}" if error else _score(record.history[-1] if record.history else {})
        )
        print(
            f"[{done}/{self.total}] {_label(record)} {status} in {record.wall_s:.0f}s — {outcome}"
        )

    def _update_wall(self, record: TrialRecord) -> None:
        if record.trial_id in self.started:
            since, before = self.started[record.trial_id]
            record.wall_s = before + time.monotonic() - since

    def on_trial_complete(self, iteration, trials, trial: Trial, **info) -> None:
        self._finish(trials, trial, "TERMINATED")

    def on_trial_error(self, iteration, trials, trial: Trial, **info) -> None:
        # Tune has just written the traceback locally (its storage copy is synced later).
        error_file = Path(trial.error_file) if trial.error_file else None
        text = error_file.read_text() if error_file and error_file.is_file() else "unknown error"
        self.experiment.write_error(trial.trial_id, text)
        self._finish(trials, trial, "ERROR", summarize_error(text))

    def on_trial_recover(self, iteration, trials, trial: Trial, **info) -> None:
        # Tune runs the trial again (spec: trial_retries); it resumes from its checkpoint.
        record = self._record(trial)
        record.retries += 1
        self._update_wall(record)
        self._flush(trials)
        error_file = Path(trial.error_file) if trial.error_file else None
        text = error_file.read_text() if error_file and error_file.is_file() else "unknown error"
        print(f"  {_label(record)} failed, retry {record.retries}: {summarize_error(text)}")

    def on_experiment_end(self, trials: list[Trial], **info) -> None:
        # Only a completion or an error event finishes a row: a trial still running when the
        # sweep stopped (Ctrl-C) is INTERRUPTED, whatever Tune calls it; `resume` continues it.
        for trial in trials:
            record = self._record(trial)
            if record.status == "RUNNING":
                record.status = "INTERRUPTED"
                self._update_wall(record)
        self._flush(trials)


def _label(record: TrialRecord) -> str:
    return TrialConfig.model_validate(record.config).label()


def _score(row: dict) -> str:
    scores = {k: v for k, v in row.items() if k.startswith("eval_") and k != "eval_time_s"}
    return ", ".join(f"{k}={v:.4f}" for k, v in scores.items()) or "no epochs reported"


def _tune_trial(
    config: dict,
    storage_path: str,
    tracking: TrialTracking | None,
    finished: frozenset[str] = frozenset(),
) -> None:
    """The Tune function: metrics reach Tune per epoch; returning None adds no extra result.

    ``finished``: trials a resumed sweep must not run again. Tune saves its own state every
    few seconds, so after a killed driver it may not know that they had finished.
    """
    if tune.get_context().get_trial_id() in finished:
        return
    run_trial(config, storage_path=storage_path, tracking=tracking)


class GangAdmission(BasicVariantGenerator):
    """Tune's grid, each trial handed to Tune only when its whole gang fits beside the running
    ones (``orchestrator.cluster.Admission``), longest estimated trials first.

    Tune starts every trial it holds as PENDING (its scheduler only picks which goes first), and
    its own ``max_concurrent_trials`` is this same gate, counting trials: so the gate is here.
    A trial not yet handed over holds nothing. Tune saves this object with the experiment, so
    a resumed sweep keeps the same admission and the same running gangs.
    """

    def __init__(self, admission: Admission, seconds: dict[str, float]) -> None:
        super().__init__()
        self._admission = admission
        self._seconds = seconds  # estimated wall time by trial config (JSON), for the order
        self._waiting: list[tuple[Trial, Gang]] | None = None  # None: grid not expanded yet

    def next_trial(self) -> Trial | None:
        if self._waiting is None:
            grid = []
            while (trial := super().next_trial()) is not None:
                # What Tune does as it adds a trial; a waiting trial saved with this object
                # cannot be restored without it (Trial.__setstate__ asserts it).
                trial.create_placement_group_factory()
                grid.append(trial)
            configs = [TrialConfig.model_validate(t.config) for t in grid]
            gangs = [trial_gang(c) for c in configs]
            order = start_order(gangs, [self._seconds.get(c.model_dump_json()) for c in configs])
            self._waiting = [(grid[i], gangs[i]) for i in order]
            self._seconds = {}  # used: Tune pickles this object with every experiment save
        index = self._admission.start_next([(t.trial_id, g) for t, g in self._waiting])
        return None if index is None else self._waiting.pop(index)[0]

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result=result, error=error)
        self._admission.finish(trial_id)

    def is_finished(self) -> bool:
        return super().is_finished() and not self._waiting

    def set_finished(self) -> None:
        # Tune stopping the experiment: start nothing more. (Expanding the grid ends here too,
        # before there is a waiting list.)
        if self._waiting is not None:
            self._waiting.clear()
        super().set_finished()


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
) -> Path:
    """Run every trial of ``spec`` on local Ray (default) or the cluster at ``address``.

    A trial starts when its gang fits ``cluster_file`` at full scale when given (what the
    autoscaler can add), else the cluster's nodes now, beside the running trials; with a URI
    ``storage_path`` trial state goes there too.
    """
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
        check_placeable(spec, capacity)
        print(
            f"sweep {spec.name}: {len(spec.trials)} trials, each started when its gang fits on "
            f"{capacity.describe()}; results -> {experiment.path}",
            file=sys.stderr,
        )
        admission = Admission(capacity, max_running=spec.max_concurrent_trials)
        seconds = {
            row.trial.model_dump_json(): s
            for row in plan_rows(spec)
            if (s := BENCHMARKED.seconds(row)) is not None
        }
        tuner = tune.Tuner(
            _trainable(storage, tracking),
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(
                search_alg=GangAdmission(admission, seconds),
                reuse_actors=True,  # reused trial-driver actors: no new process per trial
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=storage,
                callbacks=[ExperimentWriter(experiment, len(spec.trials))],
                failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
                verbose=0,  # ExperimentWriter prints one line per epoch and per trial
            ),
        )
        tuner.fit()
    finally:
        _finish(spec, experiment, storage, tracking)
    return experiment.path


def resume_sweep(experiment_dir: Path, *, address: str | None = None) -> Path:
    """Continue an interrupted sweep (Ctrl-C, killed driver, lost head node): finished trials
    are kept as they are, unfinished ones resume from their latest checkpoints."""
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
        finished = frozenset(
            r.trial_id for r in experiment.load_records() if r.status == "TERMINATED"
        )
        tuner = tune.Tuner.restore(
            f"{storage}/tune",
            trainable=_trainable(storage, tracking, finished),
            resume_unfinished=True,
            resume_errored=False,  # a trial that failed for a reason would fail again
        )
        tuner.fit()
    finally:
        _finish(spec, experiment, storage, tracking)
    return experiment.path


def _check_data(spec: SweepSpec) -> None:
    """Load every distinct data source once, before Ray starts: a missing column, a label
    outside the label set or an unreachable dataset is a one-line error, not N failed trials."""
    from trainables.data import load_task_data

    sources = {
        t.data.model_dump_json(exclude={"train_fraction", "max_length"}): t.data
        for t in spec.trials
    }
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


def _trainable(storage: str, tracking: SweepTracking, finished: frozenset[str] = frozenset()):
    trial_fn = tune.with_parameters(
        _tune_trial, storage_path=f"{storage}/train", tracking=tracking.trials, finished=finished
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
