"""The EpochRow contract: one type from which every table column and tracked key derives."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from contract.rows import (
    METRIC_NAMES,
    REQUIRED_RESULT_FIELDS,
    RESULT_FIELDS,
    EpochRow,
    chance_column,
    result_fields,
    score_column,
)
from trainables.metrics import METRICS

ROW = dict(
    epoch=2,
    train_loss=0.6,
    eval_loss=0.65,
    eval_accuracy=0.7,
    examples_per_s=100.0,
    tokens_per_s=1000.0,
    epoch_time_s=1.0,
    eval_time_s=0.1,
    train_time_s=2.0,
    examples_seen=200,
    train_tokens=2000,
    lr=0.0,
    worker_pid=1,
    params_total=10,
    params_non_embedding=5,
    train_examples=100,
    global_batch=32,
    per_worker_batch=16,
    accumulation_steps=1,
    restarts=0,
)


def test_a_row_round_trips_through_json_and_drops_what_is_not_its_own():
    row = EpochRow(**ROW)
    record = row.to_dict()
    assert "eval_f1" not in record  # absent scores are left out, not written as null
    tune_result = json.loads(json.dumps(record)) | {"training_iteration": 2, "trial_id": "x"}
    assert EpochRow.from_dict(tune_result) == row


def test_every_metric_has_a_score_and_a_chance_field():
    names = {f.name for f in fields(EpochRow)}
    assert set(METRIC_NAMES) == set(METRICS)  # what trainables.metrics can compute
    for metric in METRIC_NAMES:
        assert {score_column(metric), chance_column(metric)} <= names


def test_results_fields_leave_out_per_epoch_figures():
    assert "epoch" not in RESULT_FIELDS and "lr" not in RESULT_FIELDS
    assert "eval_loss" in REQUIRED_RESULT_FIELDS and "eval_f1" not in REQUIRED_RESULT_FIELDS
    assert set(REQUIRED_RESULT_FIELDS) <= set(RESULT_FIELDS)
    assert result_fields("eval_loss", "train_time_s") == ("eval_loss", "train_time_s")
    with pytest.raises(ValueError, match="eval_los"):
        result_fields("eval_los")


def test_every_field_says_what_it_means():
    for field in fields(EpochRow):
        assert field.metadata["doc"], field.name
