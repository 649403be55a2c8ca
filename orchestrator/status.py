"""Where a sweep stands: per trial its state, epoch, step, metric and ETA; for the sweep its
counts, best metric, elapsed time, ETA and the GPU-hours spent (no Ray).

The same ``SweepStatus`` serves the running sweep (built from its ledger and the progress it
just received) and ``scalesweep status`` (built from the experiment directory alone, so it
works after the sweep, or while it runs elsewhere).

    status = read_status(ExperimentDir("experiments/quickstart"))
    print(render_status(status))
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from contract.config import TrialConfig
from contract.progress import StepProgress
from orchestrator.cluster import Capacity, ClusterError, simulate, trial_gang
from orchestrator.experiment import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    ExperimentDir,
    TrialRecord,
)
from orchestrator.plan import PlanRow, plan_rows
from orchestrator.progress import (
    SWEEP_FINISHED,
    SWEEP_INTERRUPTED,
    SWEEP_RUNNING,
    TrialProgress,
    format_duration,
    remaining,
)
from orchestrator.resource_plan import BENCHMARKED, measured_throughput
from orchestrator.spec import SpecError, load_spec

__all__ = [
    "PENDING",
    "EtaModel",
    "SweepStatus",
    "TrialEstimates",
    "TrialStatus",
    "admission_eta",
    "progress_line",
    "read_status",
    "render_status",
    "status_line",
    "sweep_status",
]

PENDING = "PENDING"
# A running sweep rewrites progress.json at least every progress interval; a record this many
# intervals old (and at least STALE_MIN_S) means its driver stopped without saying so.
STALE_INTERVALS, STALE_MIN_S = 3, 60.0
# `status` shows every trial up to this many; beyond, the running, failed and a few others.
SCREEN_TRIALS = 20


def _key(config: Mapping) -> str:
    return TrialConfig.model_validate(config).model_dump_json()


class TrialEstimates:
    """How long each trial of the spec takes, by ``plan``'s model (``Throughput``): from this
    sweep's finished trials once there are some, else from BENCHMARKS.md's figures."""

    def __init__(self, experiment: ExperimentDir) -> None:
        self.experiment = experiment
        try:
            spec = load_spec(experiment.path / "spec.yaml")
            self.rows: list[PlanRow] = plan_rows(spec)  # parameter counts, training examples
        except (OSError, SpecError):  # e.g. the data files are on the cluster only
            self.rows = []
        self._by_key = {r.trial.model_dump_json(): r for r in self.rows}
        self.throughput = BENCHMARKED
        self.refresh()

    def refresh(self) -> None:
        """Re-read this sweep's finished trials (after one ends)."""
        try:
            measured = measured_throughput(self.experiment.path)
        except (OSError, KeyError, ValueError):  # no results.csv yet, or an older layout
            measured = BENCHMARKED
        self.throughput = measured if measured is not BENCHMARKED else BENCHMARKED

    @property
    def source(self) -> str:
        if self.throughput is BENCHMARKED:
            return "BENCHMARKS.md figures"
        return f"{len(self.throughput.measurements)} finished trial(s) of this sweep"

    def seconds(self, config: Mapping) -> float | None:
        row = self._by_key.get(_key(config))
        return self.throughput.seconds(row) if row else None

    def pending(self, started: Iterable[Mapping]) -> list[tuple[TrialConfig, float | None]]:
        """(trial, estimated seconds) of every trial of the spec that has not started, in
        grid order."""
        left = Counter(_key(c) for c in started)
        pending = []
        for row in self.rows:
            key = row.trial.model_dump_json()
            if left[key]:
                left[key] -= 1
                continue
            pending.append((row.trial, self.throughput.seconds(row)))
        return pending


# The sweep's ETA from (trial, seconds left) of the running trials and (trial, seconds) of those
# still to run.
EtaModel = Callable[[list[tuple[TrialConfig, float]], list[tuple[TrialConfig, float]]], float]


def admission_eta(capacity: Capacity, max_running: int | None = None) -> EtaModel:
    """The sweep's ETA as ``plan`` computes its makespan (``cluster.simulate``: each trial
    starts when its gang fits beside the running ones), with the running trials holding their
    gangs until their ETAs."""

    def eta(running: list[tuple[TrialConfig, float]], queued: list[tuple[TrialConfig, float]]):
        return simulate(
            capacity,
            [(trial_gang(trial), seconds) for trial, seconds in queued],
            running=[(trial_gang(trial), seconds) for trial, seconds in running],
            max_running=max_running,
        ).makespan_s

    return eta


@dataclass(frozen=True)
class TrialStatus:
    trial_id: str
    label: str
    state: str  # TERMINATED, ERROR, RUNNING, INTERRUPTED, PENDING
    epochs: int
    epochs_done: int
    progress: StepProgress | None = None  # a running trial's latest, if any arrived
    metric: float | None = None  # the latest epoch's primary metric
    eta_s: float | None = None  # seconds until it ends (pending: by the schedule)
    wall_s: float | None = None
    error: str = ""


@dataclass(frozen=True)
class SweepStatus:
    name: str
    metric: str  # the primary metric
    state: str  # running | finished | interrupted | unknown
    num_trials: int
    trials: list[TrialStatus] = field(default_factory=list)
    elapsed_s: float | None = None
    eta_s: float | None = None
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    best: tuple[float, str] | None = None  # (metric, trial label)
    eta_source: str = ""
    age_s: float | None = None  # how old the newest progress record is
    stale: bool = False  # says "running", but its driver stopped writing

    def count(self, *states: str) -> int:
        return sum(t.state in states for t in self.trials)

    @property
    def finished(self) -> int:
        return self.count(FINISHED)

    @property
    def failed(self) -> int:
        return self.count(FAILED)

    @property
    def running(self) -> int:
        return self.count(RUNNING)

    @property
    def pending(self) -> int:
        return self.count(PENDING, INTERRUPTED)


def sweep_status(
    *,
    name: str,
    metric: str,
    num_trials: int,
    records: Iterable[TrialRecord],
    progress: Mapping[str, TrialProgress],
    walls: Mapping[str, float],
    estimates: TrialEstimates | None,
    state: str,
    elapsed_s: float | None,
    now: float,
    eta_model: EtaModel | None = None,
    eta_s: float | None = None,
    stale: bool = False,
    age_s: float | None = None,
) -> SweepStatus:
    """The status of a sweep from its trials' records, the latest progress of running ones and
    their wall times now (``walls``, by trial id); ``now`` is a Unix time. While it runs (and
    is not ``stale``) its ETA comes from ``eta_model``, else it is ``eta_s`` (as recorded)."""
    records = list(records)
    trials: list[TrialStatus] = []
    running: list[tuple[TrialConfig, float | None]] = []  # seconds each has left
    queued: list[tuple[TrialConfig, float | None]] = []  # seconds each trial still to run takes
    best: tuple[float, str] | None = None
    gpu = cpu = 0.0
    for record in records:
        trial = TrialConfig.model_validate(record.config)
        history = record.history
        scores = [s for s in (r.score(metric) for r in history) if s is not None]
        if scores and (best is None or max(scores) > best[0]):
            best = (max(scores), trial.label())
        wall = walls.get(record.trial_id, record.wall_s)
        gang = trial.compute.trial_resources()
        gpu += (wall or 0.0) * gang.get("GPU", 0) / 3600
        cpu += (wall or 0.0) * gang.get("CPU", 0) / 3600
        latest = progress.get(record.trial_id) if record.status == RUNNING else None
        guess = estimates.seconds(record.config) if estimates else None
        eta = None
        if record.status == RUNNING:
            if latest is not None:
                eta = remaining(latest.trial_eta_s, now - latest.updated_at)
            elif guess is not None and guess > (wall or 0.0):  # starting: plan's estimate
                eta = guess - (wall or 0.0)
            running.append((trial, eta))
        elif record.status == INTERRUPTED:  # a resumed sweep runs it again
            queued.append((trial, guess))
        trials.append(
            TrialStatus(
                trial_id=record.trial_id,
                label=trial.label(),
                state=record.status,
                epochs=trial.train.epochs,
                epochs_done=len(history),
                progress=latest.progress if latest else None,
                metric=history[-1].score(metric) if history else None,
                eta_s=eta,
                wall_s=wall,
                error=record.error,
            )
        )
    not_started = max(0, num_trials - len(records))
    pending = estimates.pending(r.config for r in records)[:not_started] if estimates else []
    queued += pending
    trials += [
        TrialStatus(
            trial_id="",
            label=trial.label(),
            state=PENDING,
            epochs=trial.train.epochs,
            epochs_done=0,
            eta_s=seconds,
        )
        for trial, seconds in pending
    ]
    trials += [  # trials the spec cannot name here (its data files are elsewhere)
        TrialStatus(trial_id="", label="-", state=PENDING, epochs=0, epochs_done=0)
        for _ in range(not_started - len(pending))
    ]
    if state == SWEEP_FINISHED:
        eta_s = 0.0
    elif state != SWEEP_RUNNING or stale:
        eta_s = None
    elif eta_model is not None:
        eta_s = _eta(eta_model, running, queued, unknown=not_started - len(pending))
    return SweepStatus(
        name=name,
        metric=metric,
        state=state,
        num_trials=num_trials,
        trials=trials,
        elapsed_s=elapsed_s,
        eta_s=eta_s,
        gpu_hours=gpu,
        cpu_hours=cpu,
        best=best,
        eta_source=estimates.source if estimates else "",
        age_s=age_s,
        stale=stale,
    )


def _eta(
    model: EtaModel,
    running: list[tuple[TrialConfig, float | None]],
    queued: list[tuple[TrialConfig, float | None]],
    unknown: int,
) -> float | None:
    """``model``'s ETA; a trial whose time is unknown counts as the mean of the others. None
    when no time is known, or when trials cannot be named (``unknown``) or placed."""
    known = [s for _, s in (*running, *queued) if s is not None]
    if unknown or (not known and (running or queued)):
        return None
    mean = sum(known) / len(known) if known else 0.0
    try:
        return model(
            [(t, mean if s is None else s) for t, s in running],
            [(t, mean if s is None else s) for t, s in queued],
        )
    except ClusterError:  # a gang that does not fit this model of the cluster
        return None


def read_status(
    experiment: ExperimentDir, *, estimates: TrialEstimates | None = None, now: float | None = None
) -> SweepStatus:
    """The status of the sweep in ``experiment``, from its files alone (``scalesweep status``).

    ``estimates`` may be kept across calls (``--watch``); raises FileNotFoundError when the
    directory is not an experiment directory.
    """
    now = time.time() if now is None else now
    try:
        meta = experiment.metadata()
    except (OSError, json.JSONDecodeError):
        raise FileNotFoundError(
            f"{experiment.path}: not an experiment directory (no readable experiment.json)"
        ) from None
    try:
        records = experiment.load_records()
    except ValueError:  # results.csv still empty: no trial has started
        records = []
    sweep = experiment.read_sweep_progress()
    state, age, stale, elapsed = _state_of(records, meta["num_trials"]), None, False, None
    if sweep is not None:  # else a sweep from before progress records: no ETA, no elapsed time
        state, age = sweep.state, now - sweep.updated_at
        limit = max(STALE_INTERVALS * sweep.progress_every_s, STALE_MIN_S)
        stale = state == SWEEP_RUNNING and age > limit
        elapsed = sweep.elapsed_s + (age if state == SWEEP_RUNNING and not stale else 0.0)
    live = state == SWEEP_RUNNING and not stale
    progress, walls = {}, {}
    for record in records:
        if live and record.status == RUNNING and (p := experiment.read_progress(record.trial_id)):
            progress[record.trial_id] = p
            walls[record.trial_id] = max(p.wall_s + now - p.updated_at, record.wall_s or 0.0)
    estimates = estimates or TrialEstimates(experiment)
    estimates.refresh()
    return sweep_status(
        name=meta["name"],
        metric=meta["primary_metric"],
        num_trials=meta["num_trials"],
        records=records,
        progress=progress,
        walls=walls,
        estimates=estimates,
        state=state,
        elapsed_s=elapsed,
        now=now,
        eta_s=remaining(sweep.eta_s, age) if sweep else None,  # the sweep's, counted down
        stale=stale,
        age_s=age,
    )


def _state_of(records: list[TrialRecord], num_trials: int) -> str:
    """A directory written before progress records existed: finished when every trial is."""
    ended = sum(r.status in (FINISHED, FAILED) for r in records)
    return SWEEP_FINISHED if ended == num_trials else "unknown"


# ----------------------------------------------------------------------------- rendering


def _hours(status: SweepStatus) -> str:
    """GPU-hours spent; CPU-hours when the trials use no GPU."""
    if status.gpu_hours or not status.cpu_hours:
        return f"{status.gpu_hours:.2f} GPU-h"
    return f"{status.cpu_hours:.2f} CPU-h"


def _best(status: SweepStatus) -> str:
    if status.best is None:
        return f"best {status.metric} -"
    return f"best {status.metric} {status.best[0]:.4f} ({status.best[1]})"


def status_line(status: SweepStatus) -> str:
    """One line: counts, best metric, elapsed, ETA, cost (the console, as trials start and end);
    a sweep that stopped says so in its tag, ``[sweep finished]``, and has no ETA."""
    ended = status.finished + status.failed
    failed = f" ({status.failed} failed)" if status.failed else ""
    running = status.state == SWEEP_RUNNING
    tag = "[sweep]" if running else f"[sweep {status.state}]"
    eta = f", ETA {format_duration(status.eta_s)}" if running else ""
    return (
        f"{tag} {ended}/{status.num_trials} done{failed}, {status.running} running, "
        f"{status.pending} pending · {_best(status)} · {format_duration(status.elapsed_s)} "
        f"elapsed{eta} · {_hours(status)}"
    )


def _step(p: StepProgress | None) -> str:
    if p is None:
        return "-"
    return f"{p.epoch_step}/{p.steps_per_epoch} ({p.epoch_step / max(1, p.steps_per_epoch):.0%})"


def progress_line(record: TrialProgress, *, now: float | None = None) -> str:
    """A running trial's progress in one line (the console, at every progress interval)."""
    p, age = record.progress, (time.time() if now is None else now) - record.updated_at
    loss = "-" if p.loss is None else f"{p.loss:.4f}"
    return (
        f"  {record.label} epoch {p.epoch}/{p.epochs} step {_step(p)}, "
        f"{p.examples_per_s:,.0f} ex/s, loss {loss}, epoch ETA "
        f"{format_duration(remaining(record.epoch_eta_s, age))}, trial ETA "
        f"{format_duration(remaining(record.trial_eta_s, age))}"
    )


def _headline(status: SweepStatus, where: str) -> list[str]:
    counts = (
        f"{status.finished} finished, {status.failed} failed, {status.running} running, "
        f"{status.pending} pending"
    )
    if status.state == SWEEP_FINISHED:
        took = f" in {format_duration(status.elapsed_s)}" if status.elapsed_s is not None else ""
        return [
            f"sweep {status.name}: finished, {status.num_trials} trials ({counts}){took}, "
            f"{_hours(status)}",
            f"  {_best(status)}",
            f"  next: scalesweep results {where}   (the table)",
            f"        scalesweep analyze {where}   (scaling fits, plots, recommendation)",
        ]
    if status.state == SWEEP_INTERRUPTED or status.stale:
        why = (
            "interrupted"
            if status.state == SWEEP_INTERRUPTED
            else (
                f"running, but no update for {format_duration(status.age_s)}: its driver may "
                "have stopped"
            )
        )
        return [
            f"sweep {status.name}: {why}; {status.num_trials} trials ({counts})",
            f"  {_best(status)} · {format_duration(status.elapsed_s)} elapsed · "
            f"{_hours(status)} so far",
            f"  continue it with: scalesweep resume {where}",
        ]
    return [
        f"sweep {status.name}: {status.state}, {status.num_trials} trials ({counts})",
        f"  {format_duration(status.elapsed_s)} elapsed, ETA {format_duration(status.eta_s)}"
        f" ({status.eta_source}) · {_hours(status)} so far",
        f"  {_best(status)}",
    ]


def _shown(trials: list[TrialStatus]) -> tuple[list[TrialStatus], int]:
    """The trials that fit one screen, and how many are left out."""
    if len(trials) <= SCREEN_TRIALS:
        return trials, 0
    first = [t for t in trials if t.state in (RUNNING, FAILED, INTERRUPTED)]
    finished = [t for t in trials if t.state == FINISHED][-5:]
    pending = [t for t in trials if t.state == PENDING][:3]
    shown = [t for t in trials if t in first or t in finished or t in pending]
    return shown, len(trials) - len(shown)


def render_status(status: SweepStatus, where: str = "DIR") -> str:
    """The status screen: the sweep's headline, then one row per trial."""
    lines = _headline(status, where)
    shown, left_out = _shown(status.trials)
    metric = status.metric[:12]
    table = [("trial", "state", "epoch", "step", metric, "ex/s", "loss", "time", "ETA")]
    for t in shown:
        p = t.progress
        epoch = "-" if t.state == PENDING else f"{t.epochs_done}/{t.epochs}"
        if p:
            epoch = f"{p.epoch}/{p.epochs}"  # the epoch under way
        eta = "-" if t.state != RUNNING and t.state != PENDING else format_duration(t.eta_s)
        if t.state == PENDING and t.eta_s is not None:
            eta = f"~{eta}"
        table.append(
            (
                t.label,
                t.state if t.state != RUNNING or p else "STARTING",
                epoch,
                _step(p) if t.state == RUNNING else "-",
                "-" if t.metric is None else f"{t.metric:.4f}",
                f"{p.examples_per_s:,.0f}" if p and t.state == RUNNING else "-",
                f"{p.loss:.4f}" if p and p.loss is not None and t.state == RUNNING else "-",
                "-" if t.wall_s is None else format_duration(t.wall_s),
                eta,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines.append("")
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table
    ]
    if left_out:
        lines.append(f"... {left_out} more trials: scalesweep results {where} lists every one")
    errors = [t for t in shown if t.state == FAILED and t.error]
    for t in errors[:3]:
        lines.append(f"{t.label}: {t.error[:150]}")
    if status.age_s is not None and status.state == SWEEP_RUNNING and not status.stale:
        pending = "; ~: how long a pending trial takes" if status.pending else ""
        lines.append(f"(as of {format_duration(status.age_s)} ago{pending})")
    return "\n".join(lines)
