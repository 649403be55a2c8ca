"""Progress records and ETA arithmetic: what a running sweep writes, and what `status` reads."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import orchestrator.storage
from contract.config import TrialConfig
from contract.progress import StepProgress
from orchestrator.cluster import Capacity, NodeType
from orchestrator.experiment import ExperimentDir
from orchestrator.progress import (
    SweepProgress,
    TrialProgress,
    epoch_eta_s,
    format_duration,
    remaining,
    trial_eta_s,
)
from orchestrator.status import admission_eta

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart_experiment"


def step(**changes) -> StepProgress:
    """Epoch 2 of 3, 30 of 100 steps done at 0.5 s a step; an evaluation takes 10 s."""
    fields = {
        "epoch": 2,
        "epochs": 3,
        "epoch_step": 30,
        "steps_per_epoch": 100,
        "step": 130,
        "examples_seen": 4160,
        "train_time_s": 65.0,
        "examples_per_s": 64.0,
        "step_time_s": 0.5,
        "loss": 0.61,
        "eval_time_s": 10.0,
    }
    return StepProgress(**(fields | changes))


def test_trial_eta_is_the_steps_left_plus_an_evaluation_per_epoch_left():
    p = step()
    assert epoch_eta_s(p) == pytest.approx(70 * 0.5 + 10)  # 70 steps, then this epoch's eval
    assert trial_eta_s(p) == pytest.approx(45 + (100 * 0.5 + 10))  # and all of epoch 3


def test_eta_before_the_first_evaluation_counts_none():
    p = step(epoch=1, epoch_step=10, eval_time_s=None)
    assert epoch_eta_s(p) == pytest.approx(90 * 0.5)
    assert trial_eta_s(p) == pytest.approx(45 + 2 * 50)


def test_an_evaluated_epoch_has_nothing_left_of_itself():
    done = step(epoch=2, epoch_step=100, evaluated=True)
    assert epoch_eta_s(done) == 0
    assert trial_eta_s(done) == pytest.approx(100 * 0.5 + 10)
    last = step(epoch=3, epoch_step=100, evaluated=True)
    assert trial_eta_s(last) == 0
    # The last step is done but the evaluation is not: it is still to come.
    assert trial_eta_s(step(epoch=3, epoch_step=100)) == pytest.approx(10)


def test_mid_epoch_evaluations_count_in_the_eta():
    # Every 40 steps: 160 in this epoch (200 is its end: the epoch's own evaluation), then
    # 240 and 280 in epoch 3.
    p = step(eval_every_steps=40)
    assert epoch_eta_s(p) == pytest.approx(70 * 0.5 + (1 + 1) * 10)
    assert trial_eta_s(p) == pytest.approx(170 * 0.5 + (2 + 3) * 10)
    # Sent at step 120, before its own mid-epoch evaluation: that one is still to come.
    at_120 = step(eval_every_steps=40, epoch_step=20, step=120)
    assert epoch_eta_s(at_120) == pytest.approx(80 * 0.5 + (1 + 2) * 10)
    # An evaluated last epoch has nothing left, whatever divides its last step.
    done = step(epoch=3, epoch_step=100, step=300, eval_every_steps=50, evaluated=True)
    assert trial_eta_s(done) == 0


def test_remaining_counts_down_from_the_record_and_stops_at_zero():
    assert remaining(45.0, 15.0) == 30.0
    assert remaining(45.0, 60.0) == 0.0
    assert remaining(None, 1.0) is None


def _trial(workers: int) -> TrialConfig:
    return TrialConfig.model_validate(
        {"compute": {"num_workers": workers, "use_gpu": True, "global_batch_size": 32}}
    )


# A head for the trial drivers and 2 one-GPU nodes at most: two 1-worker trials fit at once,
# a 2-worker trial fits alone.
CLUSTER = Capacity(
    source="test",
    nodes=(("head", {"CPU": 4.0, "trial_driver": 1.0}),),
    node_types=(NodeType("gpu", {"CPU": 4.0, "GPU": 1.0}, 2),),
)


def test_sweep_eta_runs_plans_admission_from_now():
    eta = admission_eta(CLUSTER)
    one, two = _trial(1), _trial(2)
    # Running trials hold their gangs until their ETAs; the longest waiting trial goes first,
    # when its gang fits: 10 s and 40 s running; 30 s starts at 10 (ends 40), 5 s at 40.
    assert eta([(one, 40.0), (one, 10.0)], [(one, 5.0), (one, 30.0)]) == 45.0
    # A 2-worker trial waits for both GPUs: after the 40 s one.
    assert eta([(one, 40.0), (one, 10.0)], [(two, 20.0)]) == 60.0
    assert eta([(one, 12.0)], []) == 12.0
    assert eta([], [(one, 30.0), (one, 5.0)]) == 30.0  # two at once from the start
    assert eta([], []) == 0.0
    # At most one trial at once (the spec's max_concurrent_trials): one after the other.
    assert admission_eta(CLUSTER, max_running=1)([(one, 10.0)], [(one, 5.0)]) == 15.0


def test_durations_read_as_people_write_them():
    assert [format_duration(s) for s in (0.4, 45, 185, 7260)] == ["0s", "45s", "3m05s", "2h01m"]
    assert format_duration(None) == "?" and format_duration(float("inf")) == "?"


def trial_record(trial_id: str = "e592a_00003", **changes) -> TrialProgress:
    return TrialProgress(
        trial_id=trial_id,
        label="bert-tiny·f1·w2·s0",
        updated_at=1_700_000_000.0,
        wall_s=80.0,
        progress=step(**changes),
    )


@pytest.fixture
def experiment(tmp_path) -> ExperimentDir:
    shutil.copytree(FIXTURE, tmp_path / "quickstart")
    return ExperimentDir(tmp_path / "quickstart")


def test_trial_progress_round_trips_through_its_file(experiment):
    record = trial_record()
    experiment.write_progress(record)
    assert experiment.read_progress(record.trial_id) == record
    data = json.loads((experiment.trial_dir(record.trial_id) / "progress.json").read_text())
    # One flat object: the trial's fields, the step's, and the ETAs as of updated_at.
    assert data["epoch_step"] == 30 and data["steps_per_epoch"] == 100 and data["loss"] == 0.61
    assert data["trial_eta_s"] == pytest.approx(105.0) and data["epoch_eta_s"] == 45.0
    assert data["label"] == "bert-tiny·f1·w2·s0" and data["wall_s"] == 80.0


def test_sweep_progress_round_trips_through_its_file(experiment):
    record = SweepProgress(
        state="running",
        started_at=1.0,
        updated_at=2.0,
        elapsed_s=1.0,
        num_trials=8,
        progress_every_s=30.0,
        eta_s=None,
    )
    experiment.write_sweep_progress(record)
    assert experiment.read_sweep_progress() == record


def test_a_missing_or_torn_record_reads_as_none(experiment):
    trial_id = "e592a_00003"
    assert experiment.read_progress(trial_id) is None
    assert experiment.read_progress("no-such-trial") is None
    assert experiment.read_sweep_progress() is None
    path = experiment.trial_dir(trial_id) / "progress.json"
    text = json.dumps(trial_record(trial_id).to_dict())
    for torn in (text[: len(text) // 2], "", "[1, 2]", json.dumps({"trial_id": trial_id})):
        path.write_text(torn)
        assert experiment.read_progress(trial_id) is None, torn
    (experiment.path / "progress.json").write_text('{"state": "running", "started_at"')
    assert experiment.read_sweep_progress() is None


def test_a_record_is_replaced_whole_or_not_at_all(experiment, monkeypatch):
    """Written beside, then renamed over: a crash mid-write leaves the old record readable."""
    old = trial_record(epoch_step=30)
    experiment.write_progress(old)

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(orchestrator.storage.os, "replace", crash)
    with pytest.raises(OSError):
        experiment.write_progress(trial_record(epoch_step=60))
    monkeypatch.setattr(orchestrator.storage.os, "replace", os.replace)
    assert experiment.read_progress(old.trial_id) == old


def test_unknown_fields_of_a_newer_version_are_ignored(experiment):
    data = trial_record().to_dict() | {"gpu_memory_gb": 12.5}
    assert TrialProgress.from_dict(data) == trial_record()
    assert StepProgress.from_dict(step().to_dict() | {"new": 1}) == step()
