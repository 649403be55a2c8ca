"""Compute and cost: speed-up, parallel efficiency, Amdahl fits, the strong-scaling sanity
check, resource-hours, money and the FLOPs-quality frontier."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.special import stdtr

from orchestrator.analysis._curves import Curve, groups, key_label, outlier_records
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._fits import fit_amdahl
from orchestrator.analysis._table import DATA, MODEL, SEED, WORKERS, Table

__all__ = ["TIMES", "amdahl_curves", "cost", "speedups", "strong_scaling"]

# The two clocks a trial reports: the training loop alone, and the whole trial with start-up
# (worker placement, model download, tokenisation), which is what a user waits for and pays.
TIMES = ("train_time_s", "trial_wall_s")
# Family-wise level of the strong-scaling check: the chance that a sweep whose worker counts
# change nothing flags any cell at all, whatever the number of comparisons (Holm's method).
_STRONG_SCALING_FAMILY_P = 0.05


def speedups(table: Table) -> pd.DataFrame:
    """Per cell: times, speed-up over the fewest workers of its series, efficiency, throughput."""
    rows = []
    for _, series in groups(table.cells, [MODEL, DATA, *table.extra_axes]):
        ref = series.loc[series[WORKERS].idxmin()]
        for _, cell in series.iterrows():
            w, w0 = cell[WORKERS], ref[WORKERS]
            row = cell.to_dict() | {"reference_workers": w0}
            for time in TIMES:
                row[f"speedup_{time}"] = ref[time] / cell[time]
                # T(w0)·w0 / (T(w)·w): 1 means every added worker pulled its full weight.
                row[f"efficiency_{time}"] = row[f"speedup_{time}"] * w0 / w
            row["examples_per_s_per_worker"] = cell["examples_per_s"] / w
            rows.append(row)
    return pd.DataFrame(rows)


def amdahl_curves(table: Table) -> tuple[dict[str, list[Curve]], str | None]:
    """Speed-up against workers with an Amdahl fit, per model (× extra axes), for each clock.

    Each model is read at its largest data fraction: a fixed start-up cost is a larger serial
    fraction of a shorter run, so pooling fractions would mix different laws. A model run on one
    worker count there (a grid that swept workers for other cells) has no curve. The law is fitted
    on the times, one one-worker time per seed (see ``fit_amdahl``); the points drawn are the
    speed-ups of each seed over its own trial at the fewest workers.
    """
    ok = table.ok
    if ok[WORKERS].nunique() < 2:
        return {}, f"{WORKERS} was not swept (one value: {ok[WORKERS].iloc[0]}); no speed-up"
    curves: dict[str, list[Curve]] = {time: [] for time in TIMES}
    for key, model_trials in groups(ok, [MODEL, *table.extra_axes]):
        fraction = model_trials[DATA].max()
        series = model_trials[model_trials[DATA] == fraction]
        if series[WORKERS].nunique() < 2:
            continue  # a grid that swept workers elsewhere, not for this model
        w0 = int(series[WORKERS].min())
        for time in TIMES:
            reference = series[series[WORKERS] == w0].groupby(SEED)[time].mean()
            speedup = reference.reindex(series[SEED]).to_numpy() / series[time].to_numpy()
            measured = pd.DataFrame({"x": series[WORKERS].to_numpy(), "s": speedup}).dropna()
            points = measured.groupby("x")["s"].agg(mean="mean", std="std", n="size").reset_index()
            fit, refusal = None, None
            try:
                fit = fit_amdahl(
                    series[WORKERS], series[time], seeds=series[SEED], reference_workers=w0
                )
            except AnalysisError as error:
                refusal = f"Amdahl fit: {error}"
            curve_key = key | {DATA: fraction}
            flagged_by = f"Amdahl law ({time}; {key_label(curve_key)})"
            curves[time].append(
                Curve(
                    key=curve_key,
                    points=points,
                    fit=fit,
                    refusal=refusal,
                    outliers=outlier_records(series, fit, flagged_by),
                )
            )
    return curves, None


def strong_scaling(table: Table) -> dict[str, Any]:
    """Flag cells whose final metric moves with the worker count beyond seed noise.

    At a fixed global batch, more workers should change only the time. Per model and data
    fraction, each worker count is compared with the fewest by a two-sided t-test whose
    variance is pooled over all the worker counts of that series. A sweep makes many such
    comparisons, so the p-values are corrected by Holm's method: a sweep in which workers
    change nothing flags any cell with probability at most 5 %, however many cells it has.
    """
    ok = table.ok
    if ok[WORKERS].nunique() < 2:
        return {"status": "not applicable", "message": "one worker count was swept", "flags": []}
    comparisons, checked, weak, single_seed = [], 0, 0, 0
    for key, series in groups(ok, [MODEL, DATA, *table.extra_axes]):
        if series[WORKERS].nunique() < 2:
            continue
        if series["global_batch"].nunique() > 1:
            weak += 1  # weak scaling: a different global batch may rightly change the metric
            continue
        by_w = series.groupby(WORKERS)["metric"].agg(["mean", "var", "size"])
        dof = int((by_w["size"] - 1).sum())
        if dof == 0:
            single_seed += 1
            continue
        checked += 1
        pooled = float(((by_w["size"] - 1) * by_w["var"].fillna(0.0)).sum() / dof)
        w0 = by_w.index.min()
        for w, row in by_w.drop(index=w0).iterrows():
            diff = row["mean"] - by_w.loc[w0, "mean"]
            se = np.sqrt(pooled * (1 / row["size"] + 1 / by_w.loc[w0, "size"]))
            # Two-sided Student-t p-value; scipy.special spares the CLI importing scipy.stats.
            p = float(2 * stdtr(dof, -abs(diff) / se)) if se > 0 else float(diff == 0)
            comparisons.append(
                key
                | {
                    WORKERS: int(w),
                    "reference_workers": int(w0),
                    "metric_mean": float(row["mean"]),
                    "reference_metric_mean": float(by_w.loc[w0, "mean"]),
                    "difference": float(diff),
                    "p_value": p,
                }
            )
    adjusted = _holm([c["p_value"] for c in comparisons])
    flags = [
        c | {"p_holm": p}
        for c, p in zip(comparisons, adjusted, strict=True)
        if p < _STRONG_SCALING_FAMILY_P
    ]
    parts = [
        f"{checked} series checked at fixed global batch, {len(comparisons)} comparisons, "
        f"Holm-corrected to a {_STRONG_SCALING_FAMILY_P:.0%} family-wise error rate"
    ]
    if weak:
        parts.append(f"{weak} skipped: global batch changes with workers (weak scaling)")
    if single_seed:
        parts.append(f"{single_seed} skipped: one seed per cell, no noise estimate")
    status = "flagged" if flags else ("ok" if checked else "not checked")
    return {
        "status": status,
        "message": "; ".join(parts),
        "comparisons": len(comparisons),
        "flags": flags,
    }


def _holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted.tolist()


def cost(table: Table, price_per_gpu_hour: float | None) -> dict[str, Any]:
    """Resource-hours (failed trials included: they were paid for), money and the frontier."""
    trials = table.trials
    total = float(trials["hours"].sum())
    failed = float(trials.loc[~trials["ok"], "hours"].sum())
    quality = table.quality[table.quality["learned"]].sort_values("flops")
    # The frontier keeps each cell that beats every cheaper one: nothing else is worth its FLOPs.
    frontier = quality[
        quality["error_mean"] < quality["error_mean"].cummin().shift(fill_value=np.inf)
    ]
    columns = [MODEL, DATA, *table.extra_axes, "flops", "error_mean", "metric_mean", "hours"]
    return {
        "unit": table.hours_unit,
        "hours_formula": "num_workers × (gpus_per_worker if use_gpu else 1) × trial_wall_s / 3600",
        "flops_formula": "6 × params_non_embedding × train_tokens (non-embedding parameters)",
        "total_hours": total,
        "hours_on_failed_trials": failed,
        "price_per_gpu_hour": price_per_gpu_hour,
        "total_money": None if price_per_gpu_hour is None else total * price_per_gpu_hour,
        "frontier": frontier[columns].to_dict(orient="records"),
    }
