"""The sweep's ledger (no Ray): every epoch once, whatever a restart replays or repeats; wall
time over resumptions; unfinished rows interrupted; a resumed sweep keeps what was written."""

from __future__ import annotations

import pytest

from contract.rows import EvalPoint, Latency
from orchestrator.experiment import ExperimentDir, Ledger
from orchestrator.spec import load_spec

TRIAL = "t_00000"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def row(epoch_row):
    """Epoch ``epoch`` of a trial whose accuracy grows by 0.1 an epoch, unless given."""

    def make(epoch: int, accuracy: float | None = None, **fields):
        accuracy = 0.5 + epoch / 10 if accuracy is None else accuracy
        return epoch_row(epoch=epoch, eval_accuracy=accuracy, train_time_s=float(epoch), **fields)

    return make


@pytest.fixture
def sweep(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: w\ndata: {source: synthetic}\nmodel: {from_scratch: true}\n")
    spec = load_spec(space)
    experiment = ExperimentDir(tmp_path / "experiment")
    experiment.create(spec)
    return experiment, spec.trials[0].model_dump(mode="json")


def _epochs(experiment: ExperimentDir) -> list[tuple[int, float]]:
    return [(h.epoch, h.eval_accuracy) for h in experiment.read_history(TRIAL)]


def test_a_replayed_row_already_recorded_is_ignored(sweep, row):
    experiment, config = sweep
    ledger = Ledger(experiment)
    ledger.start(TRIAL, config)
    assert ledger.add_row(TRIAL, config, row(1, checkpoint_path="/c/1"))
    assert not ledger.add_row(TRIAL, config, row(1))  # the replay carries no checkpoint path
    assert _epochs(experiment) == [(1, 0.6)]


def test_a_repeated_epoch_with_new_values_replaces_the_old_rows(sweep, row):
    # A restart from the epoch-1 checkpoint retrains epoch 2 (and the rows after it).
    experiment, config = sweep
    ledger = Ledger(experiment)
    ledger.start(TRIAL, config)
    for epoch in (1, 2, 3):
        ledger.add_row(TRIAL, config, row(epoch))
    assert ledger.add_row(TRIAL, config, row(2, accuracy=0.9, restarts=1))
    assert _epochs(experiment) == [(1, 0.6), (2, 0.9)]
    ledger.end()
    table = experiment.read_results()
    assert table["epochs_completed"].tolist() == [2]
    assert table["status"].tolist() == ["INTERRUPTED"]  # it was running when the sweep stopped
    assert table["best_accuracy"].tolist() == [0.9]


def test_wall_time_adds_up_over_resumptions_and_finished_trials_stay(sweep, row):
    experiment, config = sweep
    clock = Clock()
    ledger = Ledger(experiment, clock=clock)
    ledger.start(TRIAL, config)
    clock.now += 30
    ledger.add_row(TRIAL, config, row(1))
    clock.now += 5  # killed here: the last write was at the epoch
    resumed = Ledger(experiment, clock=clock)  # a resumed sweep reads what was written
    assert resumed.records[TRIAL].wall_s == 30
    assert resumed.start(TRIAL, config)  # resumed, not new
    clock.now += 20
    resumed.add_row(TRIAL, config, row(2))
    resumed.finish(TRIAL, config, "TERMINATED")
    row = experiment.read_results().iloc[0]
    assert (row["status"], row["trial_wall_s"], row["epochs_completed"]) == ("TERMINATED", 50, 2)
    assert Ledger(experiment).finished_before == {TRIAL}


def test_a_failure_saves_the_traceback_and_one_line(sweep):
    experiment, config = sweep
    ledger = Ledger(experiment)
    ledger.start(TRIAL, config)
    traceback = (
        "Traceback (most recent call last):\n  File 'x'\n"
        "ray.train.WorkerGroupError: training failed\n"
        "OSError: cannot load model 'nope': not found\n"
    )
    assert ledger.fail(TRIAL, config, traceback) == "OSError: cannot load model 'nope': not found"
    assert (experiment.trial_dir(TRIAL) / "error.txt").read_text() == traceback
    table = experiment.read_results()
    assert table["status"].tolist() == ["ERROR"]
    # The columns every trial reports are there, empty, before any epoch.
    assert "eval_loss" in table and table["eval_loss"].isna().all()


def test_a_torn_last_history_line_is_left_out(sweep, row):
    experiment, config = sweep
    ledger = Ledger(experiment)
    ledger.start(TRIAL, config)
    ledger.add_row(TRIAL, config, row(1))
    with open(experiment.trial_dir(TRIAL) / "history.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a driver killed mid-write
    assert [r.epoch for r in Ledger(experiment).records[TRIAL].history] == [1]
    # The next epoch goes after the whole lines: the torn one is gone.
    ledger = Ledger(experiment)
    ledger.start(TRIAL, config)
    ledger.add_row(TRIAL, config, row(2))
    assert [r.epoch for r in experiment.read_history(TRIAL)] == [1, 2]


def test_an_interruption_during_a_flush_is_the_state_that_stays(sweep, row, monkeypatch):
    # A signal handler calls end() while results.csv is being written: the write under way
    # must not put the RUNNING row back.
    experiment, config = sweep
    ledger = Ledger(experiment)
    ledger.start(TRIAL, config)
    write = experiment.write_results
    calls = []

    def interrupted_write(records):
        calls.append([r.status for r in records])
        if len(calls) == 1:
            ledger.end()  # the signal arrives mid-write
        return write(records)

    monkeypatch.setattr(experiment, "write_results", interrupted_write)
    ledger.add_row(TRIAL, config, row(1))
    assert calls == [["RUNNING"], ["INTERRUPTED"]]
    assert experiment.read_results()["status"].tolist() == ["INTERRUPTED"]


def test_no_results_file_before_a_trial_starts(sweep):
    experiment, _ = sweep
    Ledger(experiment).end()  # stopped before any trial started
    assert not experiment.results_csv.exists() and Ledger(experiment).records == {}


def test_results_carry_the_final_rows_latency_columns_and_convergence(sweep, row):
    experiment, config = sweep
    ledger = Ledger(experiment, clock=Clock())
    ledger.start(TRIAL, config)
    ledger.add_row(TRIAL, config, row(1))
    latency = (Latency(batch_size=1, p50_ms=2.0, p95_ms=3.0, p99_ms=4.0, batches=64),)
    point = EvalPoint(
        epoch=2.0, step=8, examples_seen=200, train_time_s=2.0, eval_loss=0.6, scores={}
    )
    ledger.add_row(
        TRIAL, config, row(2, latency=latency, eval_points=(point,), steps_to_converge=8)
    )
    table = experiment.read_results()
    assert table.loc[0, "latency_p95_ms_b1"] == 3.0 and table.loc[0, "latency_batches_b1"] == 64
    assert table.loc[0, "steps_to_converge"] == 8
    assert "eval_points" not in table.columns and "latency" not in table.columns
    assert experiment.read_history(TRIAL)[-1].eval_points == (point,)
