"""The sweep's scaling views as plain data series, for dashboards that draw their own charts
(the W&B summary run): the same numbers as the analysis plots, read from the directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from orchestrator.analysis._compute import speedups
from orchestrator.analysis._convergence import convergence
from orchestrator.analysis._curves import groups
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._inference import latency_table, throughput_table
from orchestrator.analysis._table import (
    DATA,
    MODEL,
    WORKERS,
    Table,
    build_table,
    load_experiment,
    resolve_metric,
)

__all__ = ["Series", "scaling_series"]


@dataclass(frozen=True)
class Series:
    """One chart: a line per key, all over the same x quantity."""

    name: str  # e.g. "metric_vs_params"
    title: str
    x_name: str
    xs: list[list[float]]
    ys: list[list[float]]
    keys: list[str]


def scaling_series(experiment_dir: Path) -> list[Series]:
    """Quality against parameters and against training examples (each cell at the worker
    count its quality is judged by), training time and speed-up against workers; and, where the
    trials measured them, p95 latency against parameters (a line per batch size), inference
    throughput and training time to the converged level against workers; none before a trial
    has finished."""
    try:
        experiment = load_experiment(Path(experiment_dir))
        table = build_table(experiment, resolve_metric(experiment, None))
    except AnalysisError:
        return []
    metric = f"eval {table.metric.name}"
    quality = table.quality
    series = []
    if quality[MODEL].nunique() > 1:
        series.append(
            _lines(table, quality, [DATA], "params", "metric_mean", "metric_vs_params",
                   f"{metric} vs non-embedding parameters")
        )  # fmt: skip
    if quality[DATA].nunique() > 1:
        series.append(
            _lines(table, quality, [MODEL], "train_examples", "metric_mean",
                   "metric_vs_train_examples", f"{metric} vs training examples")
        )  # fmt: skip
    if table.cells[WORKERS].nunique() > 1:
        compute = speedups(table)
        series.append(
            _lines(table, compute, [MODEL, DATA], WORKERS, "train_time_s",
                   "train_time_vs_workers", "training time (s) vs workers")
        )  # fmt: skip
        series.append(
            _lines(table, compute, [MODEL, DATA], WORKERS, "speedup_train_time_s",
                   "speedup_vs_workers", "speed-up vs workers")
        )  # fmt: skip
    latency = latency_table(table)
    if not latency.empty:
        series.append(
            _lines(table, latency, ["batch_size"], "params", "p95_ms", "latency_p95_vs_params",
                   "p95 prediction latency (ms) vs non-embedding parameters")
        )  # fmt: skip
    throughput = throughput_table(table)
    if not throughput.empty:
        series.append(
            _lines(table, throughput, [MODEL], WORKERS, "examples_per_s",
                   "inference_throughput_vs_workers", "inference examples/s vs workers")
        )  # fmt: skip
    converged, _ = convergence(table, None)
    if converged is not None:
        reached = converged.cells[converged.cells["n_reached"] > 0]
        series.append(
            _lines(table, reached, [MODEL, DATA], WORKERS, "time_to_s",
                   "time_to_target_vs_workers", f"training seconds to {converged.level} vs workers")
        )  # fmt: skip
    return series


def _lines(
    table: Table, frame: pd.DataFrame, by: list[str], x: str, y: str, name: str, title: str
) -> Series:
    xs, ys, keys = [], [], []
    for key, group in groups(frame, [*by, *table.extra_axes]):
        group = group.sort_values(x)
        xs.append(group[x].astype(float).tolist())
        ys.append(group[y].astype(float).tolist())
        keys.append(", ".join(f"{k}={v}" for k, v in key.items()) or y)
    return Series(name=name, title=title, x_name=x, xs=xs, ys=ys, keys=keys)
