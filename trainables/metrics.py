"""Evaluation metrics as local ``evaluate.Metric`` modules.

``evaluate.load("accuracy")`` and friends fetch their code from the hub, which a cluster node
may not reach; these modules are instantiated directly and need no network. Each module returns
one key named after itself, so ``build_metrics(names)`` yields exactly the keys it was asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np
from scipy import stats

__all__ = [
    "F1",
    "METRICS",
    "Accuracy",
    "MatthewsCorrelation",
    "Pearson",
    "Spearman",
    "build_metrics",
]

_CLASS_FEATURES = datasets.Features(
    {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
)
_REAL_FEATURES = datasets.Features(
    {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
)
_CLASS_INPUTS = "predictions: predicted class ids; references: true class ids."
_REAL_INPUTS = "predictions: predicted scores; references: true scores."


class _LocalMetric(evaluate.Metric):
    """A metric whose code lives here; ``keep_in_memory`` avoids cache files and their locks.
    Subclasses say what they score (class ids, or real scores) and whom to cite."""

    real_valued = False
    reference = ""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("keep_in_memory", True)
        super().__init__(**kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=self.__doc__,
            citation=self.reference,
            inputs_description=_REAL_INPUTS if self.real_valued else _CLASS_INPUTS,
            features=_REAL_FEATURES if self.real_valued else _CLASS_FEATURES,
        )


class Accuracy(_LocalMetric):
    """Fraction of predictions equal to the reference."""

    def _compute(self, predictions, references) -> dict[str, float]:
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}


class F1(_LocalMetric):
    """Binary F1 of the positive class 1; 0.0 when it has no true or predicted positives."""

    def _compute(self, predictions, references) -> dict[str, float]:
        pred, ref = np.asarray(predictions) == 1, np.asarray(references) == 1
        tp = np.sum(pred & ref)
        # 2TP / (2TP + FP + FN) equals 2PR / (P + R) and needs no special case for P or R = 0.
        denom = pred.sum() + ref.sum()
        return {"f1": float(2 * tp / denom) if denom else 0.0}


class MatthewsCorrelation(_LocalMetric):
    """Matthews correlation (multiclass form of Gorodkin 2004); 0.0 when undefined."""

    reference = "Matthews 1975, doi:10.1016/0005-2795(75)90109-9"

    def _compute(self, predictions, references) -> dict[str, float]:
        pred, ref = np.asarray(predictions), np.asarray(references)
        classes, idx = np.unique(np.concatenate([ref, pred]), return_inverse=True)
        confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
        np.add.at(confusion, (idx[: len(ref)], idx[len(ref) :]), 1)
        t, p = confusion.sum(axis=1), confusion.sum(axis=0)  # true / predicted counts per class
        n, correct = confusion.sum(), np.trace(confusion)
        denom = np.sqrt((n**2 - p @ p) * (n**2 - t @ t))
        # A constant prediction (or reference) leaves MCC undefined; 0.0 is the usual convention.
        return {"matthews_correlation": float((correct * n - t @ p) / denom) if denom else 0.0}


def _correlation(fn, predictions, references) -> float:
    pred, ref = np.asarray(predictions), np.asarray(references)
    # Correlation with a constant is undefined; report 0.0 (no linear/rank association), as for
    # MCC, so an untrained model that predicts one value ranks below any informative one instead
    # of giving NaN to the sweep's scheduler.
    if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(ref) == 0:
        return 0.0
    return float(fn(pred, ref).statistic)


class Pearson(_LocalMetric):
    """Pearson correlation of predicted and reference scores; 0.0 when either is constant."""

    real_valued = True

    def _compute(self, predictions, references) -> dict[str, float]:
        return {"pearson": _correlation(stats.pearsonr, predictions, references)}


class Spearman(_LocalMetric):
    """Spearman rank correlation of predicted and reference scores; 0.0 when either is constant."""

    real_valued = True

    def _compute(self, predictions, references) -> dict[str, float]:
        return {"spearmanr": _correlation(stats.spearmanr, predictions, references)}


METRICS: dict[str, type[_LocalMetric]] = {
    "accuracy": Accuracy,
    "f1": F1,
    "matthews_correlation": MatthewsCorrelation,
    "pearson": Pearson,
    "spearmanr": Spearman,
}


def build_metrics(names: Sequence[str]) -> evaluate.CombinedEvaluations:
    """Metrics whose ``.compute(predictions=..., references=...)`` returns exactly ``names``."""
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        given = unknown or "(none given)"
        raise ValueError(f"unknown metrics {given}; valid: {', '.join(METRICS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate metric names in {list(names)}")
    # A dict keeps each module under the requested name (module names come from class names).
    return evaluate.combine({name: METRICS[name]() for name in names})
