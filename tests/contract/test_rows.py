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


def test_a_row_round_trips_through_json_and_drops_what_is_not_its_own(epoch_row):
    row = epoch_row(eval_f1=None)
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
