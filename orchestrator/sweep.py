"""Launch a sweep: the one orchestrator module that drives Ray Tune.

One Tune trial per grid cell; each trial runs ``trainables.driver.run_trial``, which fits a
TorchTrainer. A Tune callback streams every report into the experiment directory as it arrives
(and into its home, with a URI storage_path), so an interrupted or failing sweep keeps
everything that finished. SIGINT and SIGTERM stop a sweep the same way (``_Sweep``). Between
reports, each trial's rank 0 sends its progress to the sweep's ``ProgressBoard`` actor, which
the same callback reads about every second (``orchestrator.monitor`` writes and shows it); the
console is the sweep's own, in place of Tune's.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.progress_reporter import TrialProgressCallback
from ray.tune.search import BasicVariantGenerator

from contract.config import DataConfig, TrialConfig
from contract.rows import METRIC_NAMES, EpochRow, score_column
from contract.tracking import TrialTracking
from orchestrator.cluster import (
    DRIVER_NODE_RESOURCE,
    DRIVER_RESOURCES,
    HEAD_DRIVER_UNITS,
    Admission,
    Capacity,
    Gang,
    check_placeable,
    check_reachable,
    start_order,
    sweep_capacity,
    trial_gang,
)
from orchestrator.errors import Interrupted
from orchestrator.experiment import FAILED, FINISHED, ExperimentDir, Ledger, summarize_error
from orchestrator.monitor import DEFAULT_PROGRESS_EVERY_S, ProgressOptions, SweepMonitor
from orchestrator.plan import plan_rows
from orchestrator.resource_plan import BENCHMARKED
from orchestrator.spec import SpecError, SweepSpec, load_spec
from orchestrator.storage import is_uri, storage_root, uri_join
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
# Never WANDB_API_KEY or cloud credentials: Ray writes the runtime env in plain text to its
# session logs (runtime_env_agent.log). Local workers inherit them with the driver's environment;
# cluster nodes need their own (a secret for the W&B key; an instance profile, IRSA or a GCP
# service account for the bucket). Where the bucket is (an S3-compatible endpoint) is no secret.
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HOME",
    "SCALESWEEP_CACHE",
    "WANDB_BASE_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)
# Read by Tune in the process that runs the sweep, while it runs: its older output engine, the
# one that a callback can silence (_NoTuneConsole), and no whole traceback per failed trial from
# its controller (_TuneEvents prints one line with the path to the trial's error.txt).
_TUNE_OUTPUT = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}
# Tune's logger that says where it saved its state, at the end of every sweep (INFO).
_TUNE_LOGGER = "ray.tune.tune"
# How often the sweep's callback looks for progress records (and redraws a live display).
POLL_S = 1.0


class _Sweep:
    """The sweep this process runs: its experiment directory, its ledger (made when Tune sets
    up its callbacks), and what SIGINT and SIGTERM do meanwhile.

    The first signal marks the unfinished rows INTERRUPTED at once, says how to resume, and
    asks Tune to stop: it saves its state, then stops the trials (up to 5 s). `ray job stop`
    sends SIGKILL 3 s after SIGTERM, so the rows and the hint go out first. A second signal
    stops at once. Either way the command then exits with 128 + the signal's number.
    """

    current: _Sweep | None = None  # Tune's callback finds the ledger's directory here

    def __init__(
        self,
        experiment: ExperimentDir,
        total: int,
        *,
        progress: ProgressOptions | None = None,
        max_running: int | None = None,
    ) -> None:
        self.experiment = experiment
        self.total = total
        self.progress = progress or ProgressOptions()  # this run's (a resume may change them)
        # What admission places trials on (the spec's max_concurrent_trials too): for the ETA.
        self.capacity: Capacity | None = None
        self.max_running = max_running
        self.ledger: Ledger | None = None
        self.monitor: SweepMonitor | None = None
        self.signum: int | None = None
        self.hinted = False
        self._tune_running = False
        self._handlers: dict[int, object] = {}

    def catch_signals(self) -> None:
        """From now on SIGINT and SIGTERM stop the sweep (call it after ray.init, which sets
        SIGTERM handlers of its own)."""
        _Sweep.current = self
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._handlers.setdefault(signum, signal.getsignal(signum))
            signal.signal(signum, self._on_signal)

    def release(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)
        _Sweep.current = None

    @contextmanager
    def tune_running(self) -> Iterator[None]:
        """While ``Tuner.fit`` runs: Tune's own SIGINT handler is off (the first Ctrl-C stops
        Tune, and then the second one would kill the process with the rows still RUNNING);
        this class stops Tune through the handler Tune keeps for SIGUSR1."""
        before = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        usr1 = signal.getsignal(signal.SIGUSR1)
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self._tune_running = True
        try:
            yield
        finally:
            self._tune_running = False
            signal.signal(signal.SIGUSR1, usr1)
            if before is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = before

    def hint(self) -> None:
        """Say how to resume, once (not for a directory never made)."""
        if not self.hinted and (self.experiment.path / "spec.yaml").is_file():
            self.hinted = True
            print(
                "sweep interrupted; continue it with:\n"
                f"  scalesweep resume {self.experiment.location}",
                file=sys.stderr,
                flush=True,
            )

    def raise_if_stopped(self) -> None:
        if self.signum is not None:
            raise Interrupted(self.signum)

    def _on_signal(self, signum: int, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if self.ledger is not None:
            self.ledger.end()
        if self.ledger is None or self.ledger.done() < self.total:
            self.hint()
        stop_tune = signal.getsignal(signal.SIGUSR1)
        if first and self._tune_running and callable(stop_tune):
            print(f"{signal.Signals(signum).name}: stopping the trials", file=sys.stderr)
            stop_tune(signal.SIGUSR1, frame)  # Tune ends its step, saves its state, stops
            return
        raise Interrupted(signum)


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

    def __init__(self, total: int) -> None:
        self.total = total

    def setup(self, **info) -> None:
        # Made here, from the sweep this process runs: a resumed sweep restores this callback as
        # it was pickled at launch (maybe on another machine), and the ledger must read what the
        # interrupted run wrote.
        sweep = _Sweep.current
        assert sweep is not None, "a sweep runs Tune inside _Sweep"
        self.ledger = sweep.ledger = Ledger(sweep.experiment)
        self.monitor = sweep.monitor = SweepMonitor(
            sweep.experiment,
            self.ledger,
            options=sweep.progress,
            capacity=sweep.capacity,
            max_running=sweep.max_running,
        )
        self.board = find_board()
        self._taking = None  # the board's answer to come (an ObjectRef)
        self._polled = 0.0

    def __getstate__(self) -> dict:
        return {"total": self.total}

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
        error_file = self.ledger.experiment.trial_dir(trial.trial_id) / "error.txt"
        self._print_end(trial, FAILED, f"error: {reason} (traceback: {error_file})")
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


class GangAdmission(BasicVariantGenerator):
    """The sweep's trials, each handed to Tune only when its whole gang fits beside the running
    ones (``orchestrator.cluster.Admission``), longest estimated trials first.

    Tune starts every trial it holds as PENDING (its scheduler only picks which goes first), and
    its own ``max_concurrent_trials`` is this same gate, counting trials: so the gate is here.
    A trial not yet handed over holds nothing. Tune saves this object with the experiment, so
    a resumed sweep keeps the same admission and the same running gangs.
    """

    def __init__(
        self, admission: Admission, seconds: dict[str, float], points: list[dict[str, Any]]
    ) -> None:
        # Every trial is a point: a union of grids is no product Tune could expand itself.
        super().__init__(points_to_evaluate=points)
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
    progress: ProgressOptions | None = None,
) -> ExperimentDir:
    """Run every trial of ``spec`` on local Ray (default) or the cluster at ``address``.

    A trial starts when its gang fits ``cluster_file`` at full scale when given (what the
    autoscaler can add), else the cluster's nodes now, beside the running trials. With a URI
    ``storage_path`` the experiment's home is ``<storage_path>/<directory name>``:
    ``experiment_dir`` is its local working copy. ``progress``: how often trials send their
    progress, and how the console shows it.
    """
    home = storage_root(spec.storage_path, experiment_dir) if is_uri(spec.storage_path) else None
    experiment = ExperimentDir(experiment_dir, home=home)
    _check_hub_data(spec)
    if address:
        check_reachable(address)  # before the directory is made: nothing left behind
    try:
        experiment.create(spec)
    except OSError as err:
        raise SpecError(f"cannot write the experiment directory {experiment.path}: {err}") from None
    _drive(
        spec,
        experiment,
        address,
        lambda sweep, tracking: _new_tuner(spec, sweep, tracking, cluster_file, address),
        progress,
    )
    return experiment


def resume_sweep(
    location: str | Path,
    *,
    address: str | None = None,
    progress: ProgressOptions | None = None,
) -> ExperimentDir:
    """Continue an interrupted sweep (Ctrl-C, SIGTERM, killed driver, lost head node): finished
    trials are kept as they are, unfinished ones resume from their latest checkpoints.

    ``location``: the experiment's URI (from any machine: its files are brought into a local
    working copy), or its local directory. A sweep stopped before Tune saved any state (while
    Ray started) had run nothing: it starts from the top.
    """
    experiment = ExperimentDir.open(location)
    if not (experiment.path / "spec.yaml").is_file():
        raise SpecError(f"{experiment.location}: not an experiment directory (no spec.yaml)")
    spec = load_spec(experiment.path / "spec.yaml")
    if address:
        check_reachable(address)
    if experiment.home is None and is_uri(spec.storage_path):
        # A local copy without its home's name (made by `aws s3 sync`): the spec says where.
        experiment = ExperimentDir(
            experiment.path, home=storage_root(spec.storage_path, experiment.path)
        )
    if experiment.home and not is_uri(str(location)):
        experiment.pull()  # the home is the experiment: it may have moved on (resumed elsewhere)
    tune_state = uri_join(experiment.storage, "tune")
    records = experiment.load_records()
    finished = frozenset(r.trial_id for r in records if r.status == FINISHED)
    if tune.Tuner.can_restore(tune_state):

        def restore(sweep: _Sweep, tracking: SweepTracking) -> tune.Tuner:
            print(f"resuming sweep {spec.name} in {experiment.location}", file=sys.stderr)
            # Admission resumes as it was saved; the ETAs count on the cluster's nodes now.
            sweep.capacity = sweep_capacity(None, on_cluster=address is not None)
            return tune.Tuner.restore(
                tune_state,
                trainable=_trainable(experiment.storage, tracking, sweep.progress, finished),
                resume_unfinished=True,
                resume_errored=False,  # a trial that failed for a reason would fail again
            )

        _drive(spec, experiment, address, restore, progress)
    elif any(r.status in (FINISHED, FAILED) for r in records):
        raise SpecError(f"{experiment.location}: no Tune state to resume under {tune_state}")
    else:
        print(
            f"{experiment.location}: stopped before Tune saved any state, with no trial "
            "finished; running the sweep from the start",
            file=sys.stderr,
        )
        if records:  # trials that started before Tune saved its state: they start again
            experiment.remove_file("results.csv")
        _drive(
            spec,
            experiment,
            address,
            lambda sweep, tracking: _new_tuner(spec, sweep, tracking, None, address),
            progress,
        )
    return experiment


def _new_tuner(
    spec: SweepSpec,
    sweep: _Sweep,
    tracking: SweepTracking,
    cluster_file: Path | None,
    address: str | None,
) -> tune.Tuner:
    experiment = sweep.experiment
    capacity = sweep.capacity = sweep_capacity(cluster_file, on_cluster=address is not None)
    check_placeable(spec, capacity)
    where = experiment.location
    if experiment.home:
        where += f" (local copy: {experiment.path})"
    print(
        f"sweep {spec.name}: {len(spec.trials)} trials, each started when its gang fits on "
        f"{capacity.describe()}; results -> {where}",
        file=sys.stderr,
    )
    admission = Admission(capacity, max_running=spec.max_concurrent_trials)
    seconds = {
        row.trial.model_dump_json(): s
        for row in plan_rows(spec)
        if (s := BENCHMARKED.seconds(row)) is not None
    }
    return tune.Tuner(
        _trainable(experiment.storage, tracking, sweep.progress),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            search_alg=GangAdmission(admission, seconds, spec.points()),
            num_samples=len(spec.trials),  # one per point: the points are the whole sweep
            reuse_actors=True,  # reused trial-driver actors: no new process per trial
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=experiment.storage,
            callbacks=[_NoTuneConsole(), _TuneEvents(len(spec.trials))],
            failure_config=tune.FailureConfig(max_failures=spec.trial_retries),
            verbose=0,  # _TuneEvents prints one line per epoch and per trial
        ),
    )


def _drive(
    spec: SweepSpec,
    experiment: ExperimentDir,
    address: str | None,
    make_tuner: Callable[[_Sweep, SweepTracking], tune.Tuner],
    progress: ProgressOptions | None = None,
) -> None:
    """Start Ray, fit the tuner, and finish: whatever stops the sweep (the end, an error, a
    signal), the rows are flushed, the state saved and the resume command printed."""
    sweep = _Sweep(
        experiment, len(spec.trials), progress=progress, max_running=spec.max_concurrent_trials
    )
    tracking = SweepTracking(experiment.path)  # W&B off, until it starts
    try:
        tracking = SweepTracking.start(spec, experiment.path)  # the summary run, when W&B is on
        _init_ray(address)
        sweep.catch_signals()
        tuner = make_tuner(sweep, tracking)
        with sweep.tune_running(), _quiet_tune():
            tuner.fit()
    finally:
        _finish(spec, sweep, tracking)
    sweep.raise_if_stopped()


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


def _check_hub_data(spec: SweepSpec) -> None:
    """Load every GLUE task that comes from the hub, before Ray starts: unreachable offline, it
    is a one-line error, not N failed trials. (``plan_rows`` has checked every data file.)"""
    from trainables.data import load_task_data

    sources = {t.data.source_key(): t.data for t in spec.trials if _from_hub(t.data)}
    for data in sources.values():
        try:
            load_task_data(data)
        except (OSError, ValueError) as err:
            raise SpecError(f"{spec.path}: data: {str(err).strip().splitlines()[0]}") from None


def _from_hub(data: DataConfig) -> bool:
    return data.source == "glue" and not data.glue_dir


def _init_ray(address: str | None) -> None:
    env = WORKER_ENV | ({} if address else LOCAL_ENV)
    env |= {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    env = {k: v for k, v in env.items() if k not in _job_env_vars()}
    # Worker logs stay in Ray's session log folder: the console gets one line per epoch and
    # per trial, and each failed trial's traceback is saved in its trial folder.
    try:
        ray.init(
            address=address or "local",
            runtime_env={"env_vars": env},
            log_to_driver=False,
            # A local instance is its own head: it offers the resource trial drivers run on.
            resources=None if address else {DRIVER_NODE_RESOURCE: HEAD_DRIVER_UNITS},
        )
    except SystemExit:
        # While it starts, ray.init answers SIGTERM with handlers of its own, which exit.
        raise Interrupted(signal.SIGTERM) from None


def _trainable(
    storage: str,
    tracking: SweepTracking,
    progress: ProgressOptions,
    finished: frozenset[str] = frozenset(),
):
    trial_fn = tune.with_parameters(
        _tune_trial,
        storage_path=uri_join(storage, "train"),
        tracking=tracking.trials,
        finished=finished,
        board=start_board(),  # after ray.init: on this node
        progress_every_s=progress.every_s,
    )
    return tune.with_resources(trial_fn, DRIVER_RESOURCES)


def _finish(spec: SweepSpec, sweep: _Sweep, tracking: SweepTracking) -> None:
    experiment = sweep.experiment
    try:
        if sweep.ledger is not None:
            sweep.ledger.end()  # also when a second signal cut Tune's own ending short
        if sweep.monitor is not None:
            sweep.monitor.close()  # likewise; once only
        ray.shutdown()
        tracking.finish()  # results table and scaling charts
        experiment.sync("wandb")  # W&B's offline run files, and any write the home refused
        finished = 0
        if experiment.results_csv.is_file():
            finished = experiment.read_results()["status"].isin([FINISHED, FAILED]).sum()
        if finished < len(spec.trials):
            sweep.hint()
    finally:
        sweep.release()
