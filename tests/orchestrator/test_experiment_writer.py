"""The sweep's Tune callback keeps each trial's history to one row per epoch, whatever Tune
replays or repeats after a restart."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.experiment import ExperimentDir
from orchestrator.spec import load_spec
from orchestrator.sweep import ExperimentWriter


@pytest.fixture
def writer(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("name: w\ndata: {source: synthetic}\nmodel: {from_scratch: true}\n")
    spec = load_spec(space)
    experiment = ExperimentDir(tmp_path / "experiment")
    experiment.create(spec)
    writer = ExperimentWriter(experiment, total=1)
    writer.setup()
    trial = SimpleNamespace(trial_id="t_00000", config=spec.trials[0].model_dump(mode="json"))
    writer.on_trial_start(0, [trial], trial)
    return writer, experiment, trial


def _row(epoch: int, **extra) -> dict:
    return {"epoch": epoch, "eval_accuracy": 0.5 + epoch / 10, "restarts": 0, **extra}


def _epochs(experiment: ExperimentDir) -> list[tuple[int, float]]:
    return [(h["epoch"], h["eval_accuracy"]) for h in experiment.read_history("t_00000")]


def test_a_replayed_row_already_recorded_is_ignored(writer, capsys):
    writer, experiment, trial = writer
    writer.on_trial_result(0, [trial], trial, _row(1, checkpoint_path="/c/1"))
    capsys.readouterr()
    writer.on_trial_result(0, [trial], trial, _row(1))  # the replay carries no checkpoint
    assert _epochs(experiment) == [(1, 0.6)]
    assert capsys.readouterr().out == ""  # not printed twice either


def test_a_repeated_epoch_with_new_values_replaces_the_old_rows(writer):
    # A restart from the epoch-1 checkpoint retrains epoch 2 (and the rows after it).
    writer, experiment, trial = writer
    for epoch in (1, 2, 3):
        writer.on_trial_result(0, [trial], trial, _row(epoch))
    writer.on_trial_result(0, [trial], trial, _row(2, eval_accuracy=0.9, restarts=1))
    assert _epochs(experiment) == [(1, 0.6), (2, 0.9)]
    writer.on_experiment_end([trial])
    assert experiment.read_results()["epochs_completed"].tolist() == [2]
