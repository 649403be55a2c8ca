"""Inference speed and resource use per model: latency percentiles, throughput, utilisation.

Each trial times prediction after its final epoch (``inference`` settings): throughput over the
validation split on all its workers, and latency on one worker at each of
``inference.batch_sizes``, reported as ``latency_<p50|p95|p99>_ms_b<batch>`` columns. Latency
is a property of the model on a device, not of the data it was fine-tuned on, so every finished
trial of a model measures it: the table takes the median over them. Throughput is read per
worker count. Older experiment directories have none of these columns: then there is nothing
to read, and the caller says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from contract.rows import LATENCY_STATS, latency_column, parse_latency_column
from orchestrator.analysis._table import DATA, MODEL, WORKERS, Table

__all__ = [
    "PERCENTILES",
    "batch_sizes",
    "latency_table",
    "throughput_table",
    "utilisation_table",
]

PERCENTILES = ("p50", "p95", "p99")
_UTILISATION = (
    "model_flops_per_s",
    "mfu",
    "peak_gpu_memory_gib",
    "peak_host_rss_gib",
    "inference_examples_per_s",
)


def batch_sizes(table: Table) -> list[int]:
    """The batch sizes some finished trial measured latency at, smallest first."""
    sizes = set()
    for column in table.ok.columns:
        parsed = parse_latency_column(column)
        if parsed and table.ok[column].notna().any():
            sizes.add(parsed[1])
    return sorted(sizes)


def _device(trials: pd.DataFrame) -> pd.Series:
    if "device" not in trials.columns:
        return pd.Series("unknown", index=trials.index)
    return trials["device"].fillna("unknown").astype(str)


def latency_table(table: Table) -> pd.DataFrame:
    """One row per model × extra axes × device × batch size: the median p50, p95 and p99 over
    the model's finished trials (ms), and how many trials that is. Empty without latencies."""
    ok = table.ok.assign(device=lambda t: _device(t))
    keys = [MODEL, *table.extra_axes, "device"]
    rows = []
    for size in batch_sizes(table):
        columns = {stat: latency_column(stat, size) for stat in LATENCY_STATS}
        measured = ok[ok[columns["p50_ms"]].notna()]
        for key, group in measured.groupby(keys, observed=True, sort=True):
            rows.append(
                dict(zip(keys, key, strict=True))
                | {
                    "batch_size": size,
                    "params": float(group["params_non_embedding"].mean()),
                    **{f"{p}_ms": float(group[columns[f"{p}_ms"]].median()) for p in PERCENTILES},
                    "batches": int(group[columns["batches"]].median()),
                    "trials": len(group),
                }
            )
    return pd.DataFrame(rows)


def throughput_table(table: Table) -> pd.DataFrame:
    """Inference examples/s per model × extra axes × workers (mean over trials; data fractions
    pooled: the validation split is the same for all). Empty without the column."""
    ok = table.ok
    if "inference_examples_per_s" not in ok.columns:
        return pd.DataFrame()
    measured = ok[ok["inference_examples_per_s"].notna()]
    keys = [MODEL, *table.extra_axes, WORKERS]
    grouped = measured.groupby(keys, observed=True, sort=True)
    out = grouped.agg(
        params=("params_non_embedding", "mean"),
        examples_per_s=("inference_examples_per_s", "mean"),
        examples_per_s_std=("inference_examples_per_s", "std"),
        trials=("inference_examples_per_s", "size"),
    )
    return out.reset_index()


def utilisation_table(table: Table) -> pd.DataFrame:
    """Per cell (model × data × workers × extra axes): the device, model FLOP/s per worker and
    MFU (means over seeds), peak GPU memory and host RSS (the largest), inference examples/s.
    Empty when results.csv has none of these columns (a sweep from before they existed)."""
    ok = table.ok
    present = [c for c in _UTILISATION if c in ok.columns]
    if not present or ok[present].isna().all().all():
        return pd.DataFrame()
    keys = [MODEL, DATA, WORKERS, *table.extra_axes]
    frame = ok.assign(device=_device(ok))
    agg: dict[str, Any] = {"device": ("device", "first"), "n": ("trial_id", "size")}
    for column in present:
        how = "max" if column.startswith("peak_") else "mean"
        agg[column] = (column, how)
    out = frame.groupby(keys, observed=True, sort=True).agg(**agg).reset_index()
    for column in _UTILISATION:
        if column not in out.columns:
            out[column] = float("nan")
    return out
