"""Rank 0's W&B run of a trial, offline, read back from its `.wandb` file (no Ray, no server)."""

from __future__ import annotations

import time

import pytest
import wandb

import trainables.tracking
from contract.config import TrialConfig
from contract.rows import EvalPoint, Latency
from contract.tracking import TrialTracking, WandbMode
from orchestrator.wandb.offline import find_run_files, read_run
from trainables.loop import Progress, fit
from trainables.tracking import TrialTracker

TRIAL = TrialConfig.model_validate(
    {
        "model": {"from_scratch": True, "tokenizer": "wordpiece", "wordpiece_vocab_size": 300},
        "data": {"source": "synthetic", "synthetic_train_size": 96, "max_length": 32},
        "compute": {"num_workers": 2, "global_batch_size": 16},
        "train": {"epochs": 2, "seed": 4},
    }
)
STEPS_PER_EPOCH, EXAMPLES_PER_STEP = 4, 16


@pytest.fixture
def tracking(tmp_path):
    return TrialTracking(
        mode=WandbMode.offline,
        project="unit",
        group="sweep-1a2b3c",
        tags=["t"],
        log_every_steps=2,
        dir=str(tmp_path),
        sweep="sweep-1a2b3c",
        axes=["compute.num_workers", "train.seed"],
    ).for_trial("abcde_00001", started_at=time.time() - 5)


class Meter:
    """The loop's running sums of an epoch, as a fixed script: a loss of 0.5 per example,
    10 tokens per example, 16 examples per step, one step per half second."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def totals(self) -> tuple[float, int, int]:
        examples = EXAMPLES_PER_STEP * self.steps
        return 0.5 * examples, examples, 10 * examples

    def seconds(self) -> float:
        return 0.5 * self.steps


@pytest.fixture
def play(epoch_row):
    """Drive a tracker as the loop does: on_step after every step, on_epoch per epoch."""

    def drive(tracker: TrialTracker, epochs: range, accuracies: list[float]) -> None:
        for epoch in epochs:
            before = Progress(
                epoch=epoch - 1,
                examples_seen=(epoch - 1) * STEPS_PER_EPOCH * EXAMPLES_PER_STEP,
                train_time_s=(epoch - 1) * 2.0,
            )
            for i in range(1, STEPS_PER_EPOCH + 1):
                before.step = (epoch - 1) * STEPS_PER_EPOCH + i
                tracker.on_step(before, Meter(i), 1e-3 / i)
            examples = epoch * STEPS_PER_EPOCH * EXAMPLES_PER_STEP
            row = epoch_row(
                epoch=epoch,
                train_loss=0.5,
                eval_loss=0.7,
                eval_accuracy=accuracies[epoch - 1],
                eval_f1=0.6,
                examples_per_s=32.0,
                tokens_per_s=320.0,
                epoch_time_s=2.0,
                train_time_s=epoch * 2.0,
                examples_seen=examples,
                train_tokens=10 * examples,
                lr=0.0,
                params_total=1000,
                params_non_embedding=600,
                train_examples=64,
                global_batch=16,
                per_worker_batch=8,
            )
            tracker.on_epoch(row)

    return drive


def runs(tmp_path):
    wandb.teardown()  # wandb's service writes the run file out after finish() returns
    return [(f, read_run(f.path)) for f in find_run_files(tmp_path / "wandb")]


def test_steps_epochs_config_and_summary_land_in_one_run(tmp_path, tracking, play):
    with TrialTracker(tracking, TRIAL) as tracker:
        play(tracker, range(1, 3), [0.6, 0.55])
    [(file, run)] = runs(tmp_path)
    assert file.offline and run.run_id == "sweep-1a2b3c-abcde_00001" == file.run_id
    assert (run.name, run.group, run.job_type) == (TRIAL.label(), "sweep-1a2b3c", "trial")
    assert set(run.tags) == {"t", "compute.num_workers=2", "train.seed=4"}
    assert run.config["compute"]["num_workers"] == 2
    assert run.config["derived"] == {
        "global_batch": 16,
        "per_worker_batch": 8,
        "micro_batch": 8,
        "accumulation_steps": 1,
        "params_total": 1000,
        "params_non_embedding": 600,
        "train_examples": 64,
    }
    steps = [h for h in run.history if "train/loss" in h]
    assert [h["optimizer_step"] for h in steps] == [2, 4, 6, 8]
    # The window since the last log: 2 steps x 16 examples in 1 s, at 0.5 loss per example.
    for h in steps:
        assert h["train/loss"] == pytest.approx(0.5)
        assert h["train/examples_per_s"] == pytest.approx(32.0)
        assert h["train/tokens_per_s"] == pytest.approx(320.0)
    assert [h["examples_seen"] for h in steps] == [32, 64, 96, 128]
    assert [h["train_time_s"] for h in steps] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    epochs = [h for h in run.history if "eval/accuracy" in h]
    assert [(h["epoch"], h["optimizer_step"], h["eval/accuracy"]) for h in epochs] == [
        (1, 4, 0.6),
        (2, 8, 0.55),
    ]
    assert epochs[0]["epoch/train_loss"] == 0.5 and epochs[0]["eval/loss"] == 0.7
    summary = run.summary
    assert summary["status"] == "finished" and run.exit_code == 0
    assert summary["best_accuracy"] == 0.6 and summary["epochs_completed"] == 2
    assert summary["eval/accuracy"] == 0.55  # the final value, as W&B keeps it
    assert summary["trial_wall_s"] >= 5 and summary["gpu_hours"] == 0
    assert summary["worker_hours"] == pytest.approx(2 * summary["trial_wall_s"] / 3600)


def test_a_restarted_trial_continues_the_same_run(tmp_path, tracking, play):
    with TrialTracker(tracking, TRIAL) as tracker:
        play(tracker, range(1, 2), [0.6, 0.55])
    with TrialTracker(tracking, TRIAL) as tracker:  # restored from the epoch-1 checkpoint
        play(tracker, range(2, 3), [0.6, 0.55])
    logs = runs(tmp_path)
    assert len(logs) == 2  # offline, each start is a file; `wandb sync` replays them in order
    assert (
        {file.run_id for file, _ in logs}
        == {run.run_id for _, run in logs}
        == {"sweep-1a2b3c-abcde_00001"}
    )
    second = logs[1][1]
    assert [h["optimizer_step"] for h in second.history if "train/loss" in h] == [6, 8]
    assert second.summary["epochs_completed"] == 2


def test_a_failing_trial_is_marked_failed(tmp_path, tracking, play):
    with pytest.raises(RuntimeError), TrialTracker(tracking, TRIAL) as tracker:
        play(tracker, range(1, 2), [0.6])
        raise RuntimeError("CUDA out of memory")
    [(_, run)] = runs(tmp_path)
    assert run.exit_code == 1 and run.summary["status"] == "failed"
    assert run.summary["error"] == "RuntimeError: CUDA out of memory"


def test_other_ranks_open_no_run_but_join_every_reduce(tmp_path, tracking, play, monkeypatch):
    reduces = []
    monkeypatch.setattr(trainables.tracking, "rank_and_world", lambda: (1, 2))
    monkeypatch.setattr(
        trainables.tracking, "all_reduce", lambda values, op="sum": reduces.append(op) or values
    )
    with TrialTracker(tracking, TRIAL) as tracker:
        assert tracker.run is None
        play(tracker, range(1, 3), [0.6, 0.55])
    assert reduces == ["sum", "max"] * 4  # the same collectives rank 0 runs at its 4 logs
    assert not (tmp_path / "wandb").exists()


def test_wandb_failures_are_warnings_and_the_trial_trains_on(
    tmp_path, tracking, monkeypatch, capsys
):
    def broken_init(**options):
        raise RuntimeError("quota exceeded")

    monkeypatch.setattr(wandb, "init", broken_init)
    trial = TrialConfig.model_validate(
        TRIAL.model_dump() | {"compute": {"global_batch_size": 16}, "train": {"epochs": 1}}
    )
    with TrialTracker(tracking, trial) as tracker:
        final = fit(trial, callbacks=[tracker], cache_dir=tmp_path / "cache")
    assert final == tracker.rows[-1] and final.epoch == 1
    err = capsys.readouterr().err
    assert (
        "warning: W&B: cannot start run sweep-1a2b3c-abcde_00001 (offline): quota exceeded" in err
    )
    assert not find_run_files(tmp_path / "wandb")


def test_a_logging_error_stops_logging_not_training(tmp_path, tracking, play, monkeypatch, capsys):
    with TrialTracker(tracking, TRIAL) as tracker:
        monkeypatch.setattr(tracker.run, "log", lambda row: 1 / 0)
        play(tracker, range(1, 3), [0.6, 0.55])
        assert not tracker.live
    err = capsys.readouterr().err
    assert err.count("warning: W&B:") == 1 and "division by zero" in err
    [(_, run)] = runs(tmp_path)
    assert run.exit_code == 0 and run.summary["best_accuracy"] == 0.6  # still closed properly


def test_mid_epoch_evaluations_and_the_final_figures_reach_wandb(tmp_path, tracking, epoch_row):
    final = epoch_row(
        eval_accuracy=0.6,
        latency=(Latency(batch_size=1, p50_ms=2.0, p95_ms=3.0, p99_ms=4.0, batches=64),),
        inference_examples_per_s=900.0,
        steps_to_converge=2,
        time_to_converge_s=1.0,
        model_flops_per_s=5e9,
        peak_host_rss_gib=1.5,
    )
    point = EvalPoint(
        epoch=0.5, step=2, examples_seen=32, train_time_s=1.0, eval_loss=0.8, scores={"f1": 0.4}
    )
    with TrialTracker(tracking, TRIAL) as tracker:
        tracker.on_eval(point)
        tracker.on_epoch(final)
    [(_, run)] = runs(tmp_path)
    mid, end = [h for h in run.history if "eval/loss" in h]
    assert (mid["optimizer_step"], mid["eval/f1"], mid["eval/loss"]) == (2, 0.4, 0.8)
    assert (mid["examples_seen"], mid["train_time_s"], mid["epoch"]) == (32, 1.0, 0.5)
    assert end["eval/accuracy"] == 0.6 and end["epoch/model_flops_per_s"] == 5e9
    summary = run.summary
    assert summary["inference/latency_p95_ms_b1"] == 3.0
    assert summary["inference/inference_examples_per_s"] == 900.0
    assert summary["convergence/steps_to_converge"] == 2
    assert summary["utilisation/peak_host_rss_gib"] == 1.5
    assert "convergence/time_to_target_s" not in summary  # no target: nothing, not 0
