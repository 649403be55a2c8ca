"""The running sweep's progress: records written to the experiment directory, and the console.

The sweep's Tune callback hands ``SweepMonitor`` its events (a trial started or ended) and,
about every second, the progress records that trials' rank 0 sent since (``StepProgress``,
through the sweep's Ray actor). The monitor writes each into ``trials/<id>/progress.json``,
keeps ``progress.json`` (the sweep's record) fresh, and shows both on the console:

- on a terminal, a live display (``rich``): one row per running trial with a bar, the step,
  examples/s, loss and ETAs, under the sweep's status line; the sweep's own lines (trial
  started, epoch, ended) scroll above it;
- elsewhere (a log file, a pipe, ``ray job logs``), plain lines: one per trial per progress
  interval, and the sweep's status line whenever a trial starts or ends.

No Ray here: the callback does the polling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contract.config import TrialConfig
from contract.progress import StepProgress
from orchestrator.cluster import Capacity
from orchestrator.experiment import FAILED, FINISHED, RUNNING, ExperimentDir, Ledger
from orchestrator.progress import (
    SWEEP_FINISHED,
    SWEEP_INTERRUPTED,
    SWEEP_RUNNING,
    SweepProgress,
    TrialProgress,
    format_duration,
    remaining,
)
from orchestrator.status import (
    SweepStatus,
    TrialEstimates,
    admission_eta,
    progress_line,
    status_line,
    sweep_status,
)

__all__ = [
    "DEFAULT_PROGRESS_EVERY_S",
    "LiveConsole",
    "PlainConsole",
    "ProgressOptions",
    "SweepMonitor",
]

DEFAULT_PROGRESS_EVERY_S = 30.0


@dataclass(frozen=True)
class ProgressOptions:
    """How a sweep reports progress within its trials."""

    every_s: float = DEFAULT_PROGRESS_EVERY_S  # progress records (and lines) this often
    quiet: bool = False  # no progress lines or live display; the sweep's own lines stay
    live: bool | None = None  # a live display; None: when stdout is a terminal


class PlainConsole:
    """Lines, for logs and pipes: one per trial per interval; the sweep's as trials start/end."""

    live = False  # redrawn every poll (else only written to as things happen)

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet

    def trial_progress(self, record: TrialProgress) -> None:
        # An epoch's end has its own line (the sweep's "epoch n/N: ...").
        if not self.quiet and not record.progress.evaluated:
            print(progress_line(record, now=record.updated_at), flush=True)

    def sweep_changed(self, status: SweepStatus) -> None:
        print(status_line(status), flush=True)

    def refresh(self, status: SweepStatus, progress: Mapping[str, TrialProgress]) -> None:
        pass

    def close(self, status: SweepStatus) -> None:
        pass


class LiveConsole(PlainConsole):
    """A live display on a terminal (``rich``): running trials under the sweep's status line.

    Everything printed meanwhile (the sweep's lines) scrolls above it: the display redirects
    this process's stdout and stderr while it is up. Worker logs never reach this console (the
    sweep runs with ``log_to_driver=False``), so nothing else writes between its frames.
    """

    live = True

    def __init__(self) -> None:
        super().__init__(quiet=True)
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.live = Live(
            console=self.console,
            auto_refresh=False,  # refreshed by the sweep's poll, about once a second
            redirect_stdout=True,
            redirect_stderr=True,
            transient=True,
        )
        self.live.start()

    @staticmethod
    def is_terminal() -> bool:
        from rich.console import Console

        console = Console()
        return console.is_terminal and not console.is_dumb_terminal

    def refresh(self, status: SweepStatus, progress: Mapping[str, TrialProgress]) -> None:
        self.live.update(self._render(status, progress), refresh=True)

    def close(self, status: SweepStatus) -> None:
        self.live.stop()

    @staticmethod
    def _render(status: SweepStatus, progress: Mapping[str, TrialProgress]) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.time()
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for column in ("trial", "epoch", "", "step", "ex/s", "loss", "epoch ETA", "trial ETA"):
            table.add_column(column, justify="left" if column in ("trial", "") else "right")
        for trial in status.trials:
            if trial.state != RUNNING:
                continue
            record = progress.get(trial.trial_id)
            if record is None:
                table.add_row(trial.label, f"0/{trial.epochs}", Text("starting", style="dim"))
                continue
            p, age = record.progress, now - record.updated_at
            table.add_row(
                trial.label,
                f"{p.epoch}/{p.epochs}",
                ProgressBar(total=p.steps_per_epoch, completed=p.epoch_step, width=24),
                f"{p.epoch_step}/{p.steps_per_epoch}",
                f"{p.examples_per_s:,.0f}",
                "-" if p.loss is None else f"{p.loss:.4f}",
                format_duration(remaining(record.epoch_eta_s, age)),
                format_duration(remaining(record.trial_eta_s, age)),
            )
        line = Text(status_line(status), style="bold")
        return Group(table, line) if table.row_count else line


class SweepMonitor:
    """Writes a running sweep's progress records and shows its progress (see module doc)."""

    def __init__(
        self,
        experiment: ExperimentDir,
        ledger: Ledger,
        *,
        options: ProgressOptions,
        capacity: Capacity | None = None,
        max_running: int | None = None,
        clock: Callable[[], float] = time.time,
        console: PlainConsole | None = None,
    ) -> None:
        """``capacity`` and ``max_running``: what the sweep's admission places trials on, for
        its ETA (none without)."""
        self.experiment, self.ledger, self.options, self.clock = experiment, ledger, options, clock
        self.meta = experiment.metadata()
        self.eta_model = admission_eta(capacity, max_running) if capacity else None
        self.closed = False
        self.progress: dict[str, TrialProgress] = {}  # running trials' latest
        self.estimates = TrialEstimates(experiment)
        previous = experiment.read_sweep_progress()  # a resumed sweep goes on counting
        now = clock()
        self.started_at = previous.started_at if previous else now
        self.elapsed_before = previous.elapsed_s if previous else 0.0
        self.run_started = now
        self._written = float("-inf")
        if console is None:
            live = options.live if options.live is not None else LiveConsole.is_terminal()
            console = (
                LiveConsole() if live and not options.quiet else PlainConsole(quiet=options.quiet)
            )
        self.console = console
        self.write(SWEEP_RUNNING)

    def status(self, state: str = SWEEP_RUNNING) -> SweepStatus:
        records = list(self.ledger.records.values())
        walls = {r.trial_id: w for r in records if (w := self.ledger.wall_now(r.trial_id))}
        return sweep_status(
            name=self.meta["name"],
            metric=self.meta["primary_metric"],
            num_trials=self.meta["num_trials"],
            records=records,
            progress=self.progress,
            walls=walls,
            estimates=self.estimates,
            state=state,
            elapsed_s=self.elapsed_before + self.clock() - self.run_started,
            now=self.clock(),
            eta_model=self.eta_model,
        )

    def write(self, state: str = SWEEP_RUNNING) -> SweepStatus:
        """Rewrite the sweep's record (progress.json); the status it records."""
        status = self.status(state)
        now = self.clock()
        self.experiment.write_sweep_progress(
            SweepProgress(
                state=state,
                started_at=self.started_at,
                updated_at=now,
                elapsed_s=status.elapsed_s or 0.0,
                num_trials=self.meta["num_trials"],
                progress_every_s=self.options.every_s,
                eta_s=status.eta_s,
            )
        )
        self._written = now
        return status

    def trial_started(self, trial_id: str) -> None:
        self._changed(self.write())

    def trial_ended(self, trial_id: str) -> None:
        self.progress.pop(trial_id, None)
        self.estimates.refresh()  # one more measured trial for plan's model
        self._changed(self.write())

    def _changed(self, status: SweepStatus) -> None:
        if status.finished + status.failed < status.num_trials:  # else close() says it
            self.console.sweep_changed(status)
        self.console.refresh(status, self.progress)

    def received(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Progress records that arrived (trial id -> ``StepProgress.to_dict()``)."""
        now = self.clock()
        for trial_id, data in records.items():
            record = self.ledger.records.get(trial_id)
            if record is None or record.status != RUNNING:
                continue  # arrived after its trial ended
            progress = TrialProgress(
                trial_id=trial_id,
                label=TrialConfig.model_validate(record.config).label(),
                updated_at=now,
                wall_s=self.ledger.wall_now(trial_id) or 0.0,
                progress=StepProgress.from_dict(data),
            )
            self.progress[trial_id] = progress
            self.experiment.write_progress(progress)
            self.console.trial_progress(progress)

    def tick(self) -> None:
        """About every second: the sweep's record at least every interval, the live display."""
        status = None
        if self.clock() - self._written >= self.options.every_s:
            status = self.write()
        if self.console.live:
            self.console.refresh(status or self.status(), self.progress)

    def close(self) -> SweepStatus | None:
        """The sweep stopped: its record says finished, or interrupted; the console's last line.
        Once only (None after)."""
        if self.closed:
            return None
        self.closed = True
        ended = sum(r.status in (FINISHED, FAILED) for r in self.ledger.records.values())
        state = SWEEP_FINISHED if ended == self.meta["num_trials"] else SWEEP_INTERRUPTED
        status = self.write(state)
        self.console.close(status)
        print(status_line(status), flush=True)
        return status
