"""Metric modules against values computed by hand from confusion counts and rank formulas."""

import math
import os

import numpy as np
import pytest

from trainables.metrics import METRICS, build_metrics

# TP at 0, 3, 6; FP at 1; FN at 4; TN at 2, 5, 7.
PRED = [1, 1, 0, 1, 0, 0, 1, 0]
REF = [1, 0, 0, 1, 1, 0, 1, 0]


def test_modules_instantiate_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest: proves no hub access is needed
    for name, module in METRICS.items():
        assert set(module().compute(predictions=[0, 1, 1], references=[0, 1, 0])) == {name}


def test_classification_metrics_symmetric_case():
    result = build_metrics(["accuracy", "f1", "matthews_correlation"]).compute(
        predictions=PRED, references=REF
    )
    # acc 6/8; P = R = 3/4 so F1 = 3/4; MCC = (TP*TN - FP*FN) / sqrt(4*4*4*4) = (9 - 1) / 16.
    assert result == pytest.approx({"accuracy": 0.75, "f1": 0.75, "matthews_correlation": 0.5})


def test_classification_metrics_skewed_case():
    result = build_metrics(["f1", "matthews_correlation"]).compute(
        predictions=[1, 1, 1, 0], references=[1, 0, 0, 0]
    )
    # TP 1, FP 2, FN 0, TN 1: P = 1/3, R = 1, F1 = 2PR/(P+R) = 1/2;
    # MCC = (1*1 - 2*0) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 1 / sqrt(3*1*3*1) = 1/3.
    assert result == pytest.approx({"f1": 0.5, "matthews_correlation": 1 / 3})


def test_multiclass_matthews():
    # Confusion (true rows, predicted columns): [[1,0,0],[0,1,1],[0,0,1]]; c=3, s=4,
    # t=(1,2,1), p=(1,1,2): (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (12-5) / sqrt(10*10).
    result = build_metrics(["matthews_correlation"]).compute(
        predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]
    )
    assert result == pytest.approx({"matthews_correlation": 0.7})


def test_undefined_cases_are_zero():
    constant = build_metrics(["f1", "matthews_correlation"]).compute(
        predictions=[0, 0, 0, 0], references=[1, 0, 1, 0]
    )
    assert constant == {"f1": 0.0, "matthews_correlation": 0.0}
    flat = build_metrics(["pearson", "spearmanr"]).compute(
        predictions=[0.5, 0.5, 0.5], references=[1.0, 2.0, 3.0]
    )
    assert flat == {"pearson": 0.0, "spearmanr": 0.0}


def test_pearson_and_spearman():
    # x - mean = (-1.5, -.5, .5, 1.5), y - mean = (-3, -1, 0, 4): r = 11 / sqrt(5 * 26).
    pearson = build_metrics(["pearson"]).compute(
        predictions=np.array([1.0, 2.0, 3.0, 4.0]), references=[2.0, 4.0, 5.0, 9.0]
    )
    assert pearson == pytest.approx({"pearson": 11 / math.sqrt(5 * 26)})
    # Ranks (1,2,3,4) vs (1,3,2,4): sum d^2 = 2, rho = 1 - 6*2 / (4*(16-1)) = 0.8.
    spearman = build_metrics(["spearmanr"]).compute(
        predictions=[1.0, 2.0, 3.0, 4.0], references=[10.0, 30.0, 20.0, 40.0]
    )
    assert spearman == pytest.approx({"spearmanr": 0.8})


def test_batches_accumulate():
    metrics = build_metrics(["accuracy", "f1"])
    metrics.add_batch(predictions=PRED[:3], references=REF[:3])
    metrics.add_batch(predictions=PRED[3:], references=REF[3:])
    assert metrics.compute() == pytest.approx({"accuracy": 0.75, "f1": 0.75})


def test_keys_are_exactly_the_names_asked_for():
    result = build_metrics(["matthews_correlation", "accuracy"]).compute(
        predictions=PRED, references=REF
    )
    assert set(result) == {"matthews_correlation", "accuracy"}


@pytest.mark.parametrize("names", [["accuracy", "bleu"], [], ["f1", "f1"]])
def test_bad_names_are_rejected(names):
    with pytest.raises(ValueError):
        build_metrics(names)
