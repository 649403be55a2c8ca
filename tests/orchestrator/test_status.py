"""`scalesweep status` and the sweep's live progress, from experiment directories (no Ray)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from contract.config import TrialConfig
from contract.progress import StepProgress
from orchestrator.cli import main
from orchestrator.cluster import Capacity
from orchestrator.experiment import FINISHED, RUNNING, ExperimentDir, Ledger
from orchestrator.monitor import PlainConsole, ProgressOptions, SweepMonitor
from orchestrator.progress import SweepProgress, TrialProgress
from orchestrator.status import TrialEstimates, read_status, render_status, status_line
from orchestrator.storage import LocalStore, open_store

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart_experiment"
NOW = 1_800_000_000.0


@pytest.fixture
def experiment(tmp_path) -> ExperimentDir:
    shutil.copytree(FIXTURE, tmp_path / "quickstart")
    return ExperimentDir(tmp_path / "quickstart")


def step(**changes) -> StepProgress:
    fields = dict(
        epoch=2,
        epochs=3,
        epoch_step=40,
        steps_per_epoch=125,
        step=165,
        examples_seen=5280,
        train_time_s=20.0,
        examples_per_s=300.0,
        step_time_s=0.1,
        loss=0.55,
        eval_time_s=2.0,
    )
    return StepProgress(**(fields | changes))


def mid_sweep(
    experiment: ExperimentDir, *, age_s: float = 2.0, state: str = "running", now: float = NOW
):
    """The fixture as it stood mid-sweep: 5 trials done, the 6th running (mid-epoch 2), 2 not
    started; the sweep's record written ``age_s`` before ``now``, the trial's 4 s before that."""
    records = experiment.load_records()
    records[5].status, records[5].history, records[5].wall_s = RUNNING, records[5].history[:1], 30
    experiment.write_results(records[:6])
    experiment.rewrite_history(records[5].trial_id, records[5].history)
    updated = now - age_s
    experiment.write_progress(
        TrialProgress(
            trial_id=records[5].trial_id,
            label=records[5].label,
            updated_at=updated - 4,
            wall_s=26.0,
            progress=step(),
        )
    )
    experiment.write_sweep_progress(
        SweepProgress(
            state=state,
            started_at=updated - 200,
            updated_at=updated,
            elapsed_s=200.0,
            num_trials=8,
            progress_every_s=30.0,
            eta_s=300.0,
        )
    )
    return records


def test_a_finished_sweep_says_so_and_points_to_results_and_analyze(experiment):
    status = read_status(experiment, now=NOW)
    assert status.state == "finished" and status.finished == 8 and status.eta_s == 0
    assert status.best == (pytest.approx(0.729), "bert-tiny·f1·w1·s0")
    screen = render_status(status, "experiments/quickstart")
    assert "sweep quickstart: finished, 8 trials" in screen
    assert "scalesweep results experiments/quickstart" in screen
    assert "scalesweep analyze experiments/quickstart" in screen
    assert screen.count("TERMINATED") == 8


def test_cpu_hours_are_wall_time_times_the_gang(experiment):
    status = read_status(experiment, now=NOW)
    table = experiment.read_results()
    cpus = table["compute.num_workers"] * table["cpus_per_worker"]
    assert status.cpu_hours == pytest.approx((table["trial_wall_s"] * cpus).sum() / 3600)
    assert status.gpu_hours == 0


def test_a_running_sweep_shows_each_trial_and_the_sweep_eta(experiment):
    records = mid_sweep(experiment)
    estimates = TrialEstimates(experiment)
    status = read_status(experiment, estimates=estimates, now=NOW)
    assert (status.finished, status.running, status.pending, status.failed) == (5, 1, 2, 0)
    assert status.elapsed_s == pytest.approx(202.0)  # 200 s recorded, 2 s ago
    running = next(t for t in status.trials if t.state == RUNNING)
    assert running.progress == step() and running.epochs_done == 1
    # Epoch 2: 85 steps x 0.1 s + 2 s eval; epoch 3: 12.5 s + 2 s; less the record's 6 s age.
    assert running.eta_s == pytest.approx(85 * 0.1 + 2 + 12.5 + 2 - 6)
    assert running.wall_s == pytest.approx(26 + 6)
    # The sweep's ETA as it recorded it, counted down; each pending trial's time by plan's
    # model, measured on the 5 finished trials of this sweep.
    assert status.eta_s == pytest.approx(300.0 - 2)
    assert estimates.source == "5 finished trial(s) of this sweep"
    pending = [estimates.seconds(r.config) for r in records[6:]]
    assert all(s and s > 0 for s in pending)
    assert [t.eta_s for t in status.trials if t.state == "PENDING"] == pytest.approx(pending)
    screen = render_status(status, "DIR")
    counts = "8 trials (5 finished, 0 failed, 1 running, 2 pending)"
    assert f"sweep quickstart: running, {counts}" in screen
    row = next(line for line in screen.splitlines() if line.startswith(records[5].label))
    assert "RUNNING" in row and "2/3" in row and "40/125 (32%)" in row and "0.5500" in row
    assert "scalesweep analyze" not in screen


def test_a_sweep_whose_driver_stopped_writing_is_called_stale(experiment):
    mid_sweep(experiment, age_s=1000.0)
    status = read_status(experiment, now=NOW)
    assert status.stale and status.eta_s is None
    assert status.elapsed_s == 200.0  # not counting the silence
    screen = render_status(status, "DIR")
    assert "no update for 16m40s" in screen and "scalesweep resume DIR" in screen


def test_an_interrupted_sweep_says_how_to_continue(experiment):
    mid_sweep(experiment, state="interrupted")
    screen = render_status(read_status(experiment, now=NOW), "DIR")
    assert "sweep quickstart: interrupted" in screen and "scalesweep resume DIR" in screen


def test_status_command_prints_one_screen(experiment, capsys):
    assert main(["status", str(experiment.path)]) == 0
    assert "finished, 8 trials" in capsys.readouterr().out
    assert main(["status", str(experiment.path / "trials")]) == 2
    assert "not an experiment directory" in capsys.readouterr().err


# The machine the quickstart ran on: 2 CPUs, and the trial drivers' resource.
LAPTOP = Capacity(source="local", nodes=(("head", {"CPU": 2.0, "trial_driver": 1.0}),))


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_the_monitor_writes_records_and_prints_lines(experiment, capsys):
    """A sweep resumed with one trial left: it starts, reports progress, ends."""
    records = experiment.load_records()
    last = records[-1]
    experiment.write_results(records[:-1])
    clock = Clock()
    ledger = Ledger(experiment, clock=clock)
    monitor = SweepMonitor(
        experiment,
        ledger,
        options=ProgressOptions(every_s=5),
        capacity=LAPTOP,
        clock=clock,
        console=PlainConsole(),
    )
    assert experiment.read_sweep_progress().state == "running"
    ledger.start(last.trial_id, last.config)
    monitor.trial_started(last.trial_id)
    assert "[sweep] 7/8 done, 1 running, 0 pending" in capsys.readouterr().out

    clock.now += 10
    monitor.received({last.trial_id: step().to_dict(), "gone_00009": step().to_dict()})
    written = experiment.read_progress(last.trial_id)
    assert written.progress == step() and written.updated_at == clock.now
    assert written.wall_s == pytest.approx(10)
    assert experiment.read_progress("gone_00009") is None  # not a running trial of the ledger
    line = capsys.readouterr().out
    assert f"{last.label} epoch 2/3 step 40/125 (32%), 300 ex/s, loss 0.5500" in line
    assert "trial ETA 25s" in line

    clock.now += 1
    monitor.received({last.trial_id: step(epoch_step=125, evaluated=True).to_dict()})
    assert capsys.readouterr().out == ""  # an epoch's end has the sweep's own line
    clock.now += 5
    monitor.tick()  # an interval since the last write: the sweep's record is rewritten
    sweep = experiment.read_sweep_progress()
    # Epoch 3 left (125 steps x 0.1 s, a 2 s evaluation), counted from the record 5 s ago.
    assert sweep.updated_at == clock.now and sweep.eta_s == pytest.approx(12.5 + 2 - 5)

    for row in last.history:
        ledger.add_row(last.trial_id, last.config, row)
    ledger.finish(last.trial_id, last.config, FINISHED)
    monitor.trial_ended(last.trial_id)
    assert capsys.readouterr().out == ""  # the last trial: the sweep's end says it all
    final = monitor.close()
    assert final.state == "finished"
    assert experiment.read_sweep_progress().state == "finished"
    assert "[sweep finished] 8/8 done" in capsys.readouterr().out


def test_quiet_keeps_the_records_and_drops_the_lines(experiment, capsys):
    console = PlainConsole(quiet=True)
    record = TrialProgress(trial_id="t", label="x", updated_at=NOW, wall_s=1.0, progress=step())
    console.trial_progress(record)
    assert capsys.readouterr().out == ""


def test_status_line_is_compact(experiment):
    mid_sweep(experiment)
    line = status_line(read_status(experiment, now=NOW))
    assert line.startswith("[sweep] 5/8 done, 1 running, 2 pending · best accuracy 0.7290")
    assert "3m22s elapsed, ETA" in line and "CPU-h" in line
    assert "\n" not in line


def test_estimates_match_trials_by_their_whole_config(experiment):
    estimates = TrialEstimates(experiment)
    records = experiment.load_records()
    assert len(estimates.rows) == 8
    assert estimates.pending(r.config for r in records) == []
    left = estimates.pending(r.config for r in records[:6])
    assert [trial.label() for trial, _ in left] == [r.label for r in records[6:]]
    config = json.loads(json.dumps(records[0].config))  # as Tune hands it back
    assert estimates.seconds(config) == estimates.seconds(records[0].config)
    assert TrialConfig.model_validate(config).label() == records[0].label


def test_the_live_display_shows_running_trials_under_the_status_line(experiment):
    from rich.console import Console

    from orchestrator.monitor import LiveConsole

    records = mid_sweep(experiment, age_s=0.0)
    status = read_status(experiment, now=NOW)
    progress = {records[5].trial_id: experiment.read_progress(records[5].trial_id)}
    console = Console(width=130, record=True, force_terminal=False)
    console.print(LiveConsole._render(status, progress))
    text = console.export_text()
    row = next(line for line in text.splitlines() if line.startswith(records[5].label))
    assert "2/3" in row and "40/125" in row and "300" in row and "0.5500" in row
    assert text.rstrip().splitlines()[-1].startswith("[sweep] 5/8 done, 1 running, 2 pending")
    # Nothing running: the status line alone.
    finished = read_status(ExperimentDir(FIXTURE), now=NOW)
    console = Console(width=130, record=True)
    console.print(LiveConsole._render(finished, {}))
    assert console.export_text().startswith("[sweep finished] 8/8 done")


def test_status_reads_a_sweep_at_its_uri_from_another_machine(tmp_path, s3, monkeypatch, capsys):
    """A sweep whose home is a bucket, seen from a laptop: every record goes there as written."""
    home = f"{s3.uri}/sweeps/quickstart"
    remote = open_store(home)
    for name in LocalStore(FIXTURE).names():
        remote.write(name, (FIXTURE / name).read_bytes())
    shutil.copytree(FIXTURE, tmp_path / "head")
    records = mid_sweep(ExperimentDir(tmp_path / "head", home=home), now=time.time())
    monkeypatch.setenv("SCALESWEEP_CACHE", str(tmp_path / "laptop"))
    assert main(["status", home]) == 0
    screen = capsys.readouterr().out
    assert "sweep quickstart: running, 8 trials (5 finished, 0 failed, 1 running" in screen
    row = next(line for line in screen.splitlines() if line.startswith(records[5].label))
    assert "RUNNING" in row and "40/125 (32%)" in row
