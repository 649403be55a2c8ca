"""The EpochRow contract: one type from which every table column and tracked key derives."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import pytest

from contract.rows import (
    METRIC_NAMES,
    REQUIRED_RESULT_FIELDS,
    RESULT_FIELDS,
    EpochRow,
    EvalPoint,
    Latency,
    chance_column,
    latency_column,
    parse_latency_column,
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


POINTS = (
    EvalPoint(
        epoch=1.5,
        step=6,
        examples_seen=96,
        train_time_s=0.5,
        eval_loss=0.69,
        scores={"accuracy": 0.6, "f1": 0.5},
    ),
    EvalPoint(
        epoch=2.0,
        step=8,
        examples_seen=128,
        train_time_s=0.7,
        eval_loss=0.65,
        scores={"accuracy": 0.7},
    ),
)
LATENCY = (
    Latency(batch_size=1, p50_ms=1.5, p95_ms=2.0, p99_ms=3.0, batches=100),
    Latency(batch_size=32, p50_ms=10.0, p95_ms=12.0, p99_ms=15.0, batches=4),
)


def test_latencies_are_typed_and_flattened_into_columns_one_place(epoch_row):
    row = epoch_row(latency=LATENCY, eval_points=POINTS, inference_examples_per_s=50.0)
    record = row.to_dict()
    assert record["latency_p50_ms_b1"] == 1.5 and record["latency_p99_ms_b32"] == 15.0
    assert record["latency_batches_b32"] == 4
    assert "latency" not in record
    assert record["eval_points"][0] == {
        "epoch": 1.5,
        "step": 6,
        "examples_seen": 96,
        "train_time_s": 0.5,
        "eval_loss": 0.69,
        "eval_accuracy": 0.6,
        "eval_f1": 0.5,
    }
    assert EpochRow.from_dict(json.loads(json.dumps(record))) == row
    assert latency_column("p95_ms", 32) == "latency_p95_ms_b32"
    assert parse_latency_column("latency_p95_ms_b32") == ("p95_ms", 32)
    assert parse_latency_column("latency_p95_ms") is None
    assert POINTS[1].score("f1") is None and POINTS[1].score("loss") == 0.65


def test_results_carry_trial_fields_flattened_and_leave_the_points_in_the_history(epoch_row):
    row = epoch_row(latency=LATENCY, eval_points=POINTS, steps_to_converge=6)
    results = row.results()
    assert "eval_points" not in results and "epoch" not in results
    assert results["latency_p95_ms_b1"] == 2.0 and results["steps_to_converge"] == 6
    assert "time_to_target_s" not in results  # never reached, or no target: empty, not 0
    with pytest.raises(ValueError, match="latency"):
        result_fields("latency")  # several columns, read through latency_column


def test_an_old_history_row_loads_with_the_new_fields_empty():
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "quickstart_experiment"
    history = next((fixture / "trials").glob("*/history.jsonl"))
    rows = [EpochRow.from_dict(json.loads(line)) for line in history.read_text().splitlines()]
    assert [r.epoch for r in rows] == [1, 2, 3]
    last = rows[-1]
    assert last.latency == () and last.eval_points == () and last.mfu is None
    assert last.time_to_converge_s is None and last.inference_examples_per_s is None
    assert EpochRow.from_dict(last.to_dict()) == last
