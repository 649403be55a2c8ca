"""SIGINT and SIGTERM stop a sweep alike: the rows read INTERRUPTED at once (SIGKILL may come
3 s after SIGTERM), the resume command is printed, Tune is asked to stop; a second signal
stops at once; the exit code is 128 + the signal (130, 143). No Ray is started here."""

from __future__ import annotations

import os
import signal

import pytest

from orchestrator import cli
from orchestrator.errors import Interrupted
from orchestrator.experiment import ExperimentDir, Ledger
from orchestrator.spec import load_spec
from orchestrator.sweep import _Sweep

TRIAL = "t_00000"


@pytest.fixture
def running(tmp_path):
    """A sweep's directory with one trial running, and the _Sweep that drives it."""
    space = tmp_path / "space.yaml"
    space.write_text("name: w\ndata: {source: synthetic}\nmodel: {from_scratch: true}\n")
    spec = load_spec(space)
    experiment = ExperimentDir(tmp_path / "experiment", home=f"file://{tmp_path}/home")
    experiment.create(spec)
    sweep = _Sweep(experiment, len(spec.trials))
    sweep.ledger = Ledger(experiment)
    sweep.ledger.start(TRIAL, spec.trials[0].model_dump(mode="json"))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    yield sweep
    sweep.release()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _statuses(sweep: _Sweep) -> list[str]:
    home = ExperimentDir(sweep.experiment.path)  # what reached the home: read it back
    assert home.home
    return home.read_results()["status"].tolist()


def test_sigterm_interrupts_the_rows_at_once_then_tune_stops(running, capsys):
    stops = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: stops.append(signum))  # as Tune does
    running.catch_signals()
    with running.tune_running():
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # this class handles SIGINT
        signal.raise_signal(signal.SIGTERM)
        assert stops == [signal.SIGUSR1]  # Tune ends its step, saves its state, stops
        assert _statuses(running) == ["INTERRUPTED"]
        home_csv = running.experiment.path.parent / "home" / "results.csv"
        assert "INTERRUPTED" in home_csv.read_text()
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    err = capsys.readouterr().err
    assert f"scalesweep resume file://{running.experiment.path.parent}/home" in err
    with pytest.raises(Interrupted) as stopped:
        running.raise_if_stopped()
    assert stopped.value.exit_code == 143


def test_a_second_ctrl_c_stops_at_once_and_the_rows_stay_interrupted(running, capsys):
    signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    running.catch_signals()
    with running.tune_running():
        signal.raise_signal(signal.SIGINT)
        running.ledger.records[TRIAL].status = "RUNNING"  # as if Tune had started it again
        with pytest.raises(Interrupted) as stopped:
            signal.raise_signal(signal.SIGINT)
    assert stopped.value.exit_code == 130
    assert _statuses(running) == ["INTERRUPTED"]
    assert capsys.readouterr().err.count("scalesweep resume") == 1


def test_a_signal_before_tune_runs_stops_at_once(running):
    # Whatever SIGINT did before (Python's KeyboardInterrupt, or ignored: pytest started in
    # the background by a shell), the sweep's handler answers it, then gives it back.
    before = signal.getsignal(signal.SIGINT)
    running.catch_signals()
    with pytest.raises(Interrupted) as stopped:
        signal.raise_signal(signal.SIGINT)
    assert stopped.value.exit_code == 130
    assert _statuses(running) == ["INTERRUPTED"]
    running.release()
    assert signal.getsignal(signal.SIGINT) == before


def test_sigterm_during_any_command_exits_143(tmp_path, monkeypatch, capsys):
    def terminated(experiment):
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(cli, "_print_results", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["results", str(tmp_path)]) == 143
    assert capsys.readouterr().err == "interrupted\n"
    assert signal.getsignal(signal.SIGTERM) is before


def test_ctrl_c_during_any_command_exits_130(tmp_path, monkeypatch):
    def interrupted(experiment):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_print_results", interrupted)
    assert cli.main(["results", str(tmp_path)]) == 130
