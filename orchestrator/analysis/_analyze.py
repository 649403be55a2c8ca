"""``analyze``: an experiment directory in; fitted laws, plots, report, recommendation out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.analysis import (
    _compute,
    _convergence,
    _curves,
    _inference,
    _optimal,
    _plots,
    _recommend,
    _report,
)
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._table import (
    DATA,
    MODEL,
    WORKERS,
    Metric,
    Table,
    build_table,
    load_experiment,
    resolve_metric,
)

__all__ = ["AnalysisResult", "analyze"]

_SPEEDUP_COLUMNS = [
    MODEL,
    DATA,
    WORKERS,
    "reference_workers",
    "train_time_s",
    "trial_wall_s",
    "speedup_train_time_s",
    "speedup_trial_wall_s",
    "efficiency_train_time_s",
    "efficiency_trial_wall_s",
    "examples_per_s",
    "examples_per_s_per_worker",
    "global_batch",
]


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """What ``analyze`` found and wrote: the summary.json content and every file's path."""

    summary: dict[str, Any]
    paths: dict[str, Path]  # file name -> path, under <experiment>/analysis/

    def render_terminal(self) -> str:
        """The recommendation first, then a short per-model table, for the CLI to print."""
        return _report.render_terminal(self.summary)


def analyze(
    experiment_dir: Path,
    *,
    metric: str | None = None,
    target: float | None = None,
    epsilon: float = 0.01,
    price_per_gpu_hour: float | None = None,
    time_budget_s: float | None = None,
    money_budget: float | None = None,
    model: str | None = None,
    flops_budget: float | None = None,
    max_latency_ms: float | None = None,
    latency_percentile: str = "p95",
    latency_batch_size: int | None = None,
) -> AnalysisResult:
    """Analyse a finished (or partly finished) sweep and write ``<experiment_dir>/analysis/``.

    ``metric`` defaults to the experiment's primary metric ("loss" analyses eval loss);
    ``target`` is in that metric's units; ``epsilon`` is the tolerance of "as good as";
    budgets are per training run of the chosen configuration; ``model`` fixes the model that
    the data and workers questions are asked about (its display name or its ``model.name``);
    ``flops_budget`` asks the joint law for the compute-optimal model size and data;
    ``max_latency_ms`` asks for the best model whose ``latency_percentile`` (p50, p95, p99)
    latency at ``latency_batch_size`` (default: the smallest measured) is within it. ``target``
    is also the level the convergence figure times (default: the trials' own). Raises
    ``AnalysisError`` for anything a user can fix (a wrong path, no finished trial, an unknown
    metric or model, an option out of range).
    """
    _check_options(epsilon, price_per_gpu_hour, time_budget_s, money_budget, flops_budget)
    _check_latency_options(max_latency_ms, latency_percentile, latency_batch_size)
    experiment = load_experiment(Path(experiment_dir))
    table = build_table(experiment, resolve_metric(experiment, metric))
    _check_target(table.metric, target)
    model = _resolve_model(table, model)
    latency = _inference.latency_table(table)
    throughput = _inference.throughput_table(table)
    utilisation = _inference.utilisation_table(table)
    latency_budget = _latency_budget(
        latency, max_latency_ms, latency_percentile, latency_batch_size
    )
    convergence, convergence_note = _convergence.convergence(table, target)
    notes = list(experiment.notes)
    if latency.empty and throughput.empty:
        notes.append(
            "results.csv has no inference columns (a sweep from before inference timing, or "
            "inference.enabled: false): inference figure skipped"
        )
    if utilisation.empty:
        notes.append(
            "results.csv has no utilisation columns (a sweep from before they were measured): "
            "utilisation table skipped"
        )
    if convergence_note:
        notes.append(convergence_note)

    out = experiment.directory / "analysis"
    out.mkdir(exist_ok=True)
    model_curves, model_refusal = _curves.model_axis(table)
    data_curves, data_refusal = _curves.data_axis(table)
    joint = _curves.joint_fits(table)
    amdahl, amdahl_refusal = _compute.amdahl_curves(table)
    speedups = _compute.speedups(table)
    strong = _compute.strong_scaling(table)
    cost = _compute.cost(table, price_per_gpu_hour)
    answers = _recommend.recommend(
        table,
        speedups,
        target=target,
        epsilon=epsilon,
        budget=_recommend.Budget(time_budget_s, money_budget, price_per_gpu_hour),
        model=model,
        convergence=convergence,
        latency=latency,
        latency_budget=latency_budget,
    )

    plots = []
    if model_curves:
        plots.append(_plots.plot_model_axis(table, model_curves, out))
    if data_curves:
        plots.append(_plots.plot_data_axis(table, data_curves, out))
    plots += [_plots.plot_joint(table, j, out) for j in joint if j.fit is not None]
    if amdahl:
        plots.append(_plots.plot_compute(table, amdahl, speedups, strong["flags"], out))
    plots.append(_plots.plot_frontier(table, cost["frontier"], out))
    if learning := _plots.plot_learning_curves(table, out):
        plots.append(learning)
    if convergence is not None:
        plots.append(_plots.plot_convergence(table, convergence, out))
    if not (latency.empty and throughput.empty):
        plots.append(_plots.plot_inference(table, latency, throughput, out))

    quality_curves = [*model_curves, *data_curves]
    not_learned = table.cells[~table.cells["learned"]]
    summary = {
        "experiment": {
            "name": experiment.name,
            "directory": str(experiment.directory),
            "primary_metric": experiment.primary_metric,
            "metric": table.metric.name,
            "error": table.metric.error_label,
            "axes": list(experiment.axes),
            "extra_axes": list(table.extra_axes),
            "seeds": list(experiment.seeds),
            "num_trials_planned": experiment.num_trials,
        },
        "options": {
            "target": target,
            "epsilon": epsilon,
            "price_per_gpu_hour": price_per_gpu_hour,
            "time_budget_s": time_budget_s,
            "money_budget": money_budget,
            "model": model,
            "flops_budget": flops_budget,
            "max_latency_ms": max_latency_ms,
            "latency_percentile": latency_percentile,
            "latency_batch_size": None if latency_budget is None else latency_budget.batch_size,
        },
        "models": table.model_names,
        "trials": _trial_counts(table),
        "reference_workers": table.reference_workers,
        "quality_workers": list(table.substituted),
        "full_fraction": float(table.trials[DATA].max()),
        "missing_cells": list(table.missing),
        "absent_cells": list(table.absent),
        "chance": {"source": table.chance, "seed_sd": table.seed_sd},
        "did_not_learn": not_learned[
            [MODEL, DATA, WORKERS, *table.extra_axes, "n", "metric_mean", "metric_std", "chance"]
        ].to_dict(orient="records"),
        "outliers": _merge_outliers(
            [r for c in quality_curves for r in c.outliers] + [r for j in joint for r in j.outliers]
        ),
        "timing_outliers": _merge_outliers(
            [r for curves in amdahl.values() for c in curves for r in c.outliers]
        ),
        "notes": notes,
        "recommendation": {name: answer.to_dict() for name, answer in answers.items()},
        "fits": {
            "model_axis": {"refusal": model_refusal, "curves": [c.to_dict() for c in model_curves]},
            "data_axis": {"refusal": data_refusal, "curves": [c.to_dict() for c in data_curves]},
            "joint": [j.to_dict() for j in joint],
            "amdahl": {"refusal": amdahl_refusal}
            | {time: [c.to_dict() for c in curves] for time, curves in amdahl.items()},
        },
        "compute_optimal": None
        if flops_budget is None
        else _optimal.compute_optimal(table, joint, flops_budget),
        "compute": {
            "cells": speedups[[*_SPEEDUP_COLUMNS, *table.extra_axes]].to_dict(orient="records"),
            "strong_scaling": strong,
        },
        "cost": cost,
        "inference": {
            "latency": latency.to_dict(orient="records"),
            "throughput": throughput.to_dict(orient="records"),
        },
        "convergence": None if convergence is None else convergence.to_dict(),
        "utilisation": utilisation.to_dict(orient="records"),
        "cells": table.cells.to_dict(orient="records"),
        "plots": {
            p.name: {"title": p.title, "caption": p.caption, "png": p.png.name, "svg": p.svg.name}
            for p in plots
        },
    }
    paths = {p.name: p for plot in plots for p in (plot.png, plot.svg)}
    paths |= {n: out / n for n in ("summary.json", "report.md", "report.html")}
    summary["outputs"] = {name: str(path) for name, path in paths.items()}
    # Plain Python from here on: what the caller gets is exactly what summary.json holds.
    summary = _report.jsonable(summary)
    _report.write_summary(summary, paths["summary.json"])
    _report.write_markdown(summary, paths["report.md"])
    _report.write_html(summary, out, paths["report.html"])
    return AnalysisResult(summary=summary, paths=paths)


def _check_options(
    epsilon: float,
    price: float | None,
    time_budget_s: float | None,
    money_budget: float | None,
    flops_budget: float | None,
) -> None:
    if not (math.isfinite(epsilon) and epsilon >= 0):
        raise AnalysisError(f"epsilon must be ≥ 0, got {epsilon}")
    for name, value in (
        ("price per GPU-hour", price),
        ("time budget", time_budget_s),
        ("money budget", money_budget),
        ("FLOPs budget", flops_budget),
    ):
        # NaN passes every comparison, so it is refused by name.
        if value is not None and not (math.isfinite(value) and value > 0):
            raise AnalysisError(f"{name} must be a positive number, got {value}")
    if money_budget is not None and price is None:
        raise AnalysisError("a money budget needs a price per GPU-hour to turn hours into money")


def _check_latency_options(max_ms: float | None, percentile: str, batch_size: int | None) -> None:
    if max_ms is not None and not (math.isfinite(max_ms) and max_ms > 0):
        raise AnalysisError(f"max latency must be a positive number of ms, got {max_ms}")
    if percentile not in _inference.PERCENTILES:
        raise AnalysisError(
            f"latency percentile {percentile!r}; valid: {', '.join(_inference.PERCENTILES)}"
        )
    if batch_size is not None and batch_size < 1:
        raise AnalysisError(f"latency batch size must be ≥ 1, got {batch_size}")


def _latency_budget(
    latency: Any, max_ms: float | None, percentile: str, batch_size: int | None
) -> _recommend.LatencyBudget | None:
    """The budget to answer, its batch size checked against those the trials measured."""
    if max_ms is None:
        return None
    measured = sorted(set(latency["batch_size"])) if not latency.empty else []
    if batch_size is not None and measured and batch_size not in measured:
        raise AnalysisError(
            f"latency batch size {batch_size} was not measured; the trials measured "
            f"{', '.join(map(str, measured))} (inference.batch_sizes)"
        )
    size = batch_size or (measured[0] if measured else 1)
    return _recommend.LatencyBudget(max_ms=max_ms, percentile=percentile, batch_size=size)


def _check_target(metric: Metric, target: float | None) -> None:
    low, high = metric.valid_range
    if target is not None and not (math.isfinite(target) and low <= target <= high):
        raise AnalysisError(
            f"target {target} is outside the range of {metric.name} ({low:g} to {high:g})"
            + ("; give it as a fraction, e.g. 0.8 for 80 %" if 1 < target <= 100 else "")
        )


def _resolve_model(table: Table, model: str | None) -> str | None:
    """The display name of ``model``, given as a display name or as the sweep's model.name."""
    if model is None:
        return None
    finished = [str(m) for m in table.ok[MODEL].unique()]
    if model in finished:
        return model
    named = [d for d in finished if table.model_names[d] == model]
    if len(named) == 1:
        return named[0]
    if named:
        raise AnalysisError(f"model {model!r} is {len(named)} models here: {', '.join(named)}")
    raise AnalysisError(
        f"model {model!r} has no finished trial in this sweep; models: {', '.join(finished)}"
    )


def _merge_outliers(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per flagged trial, with every fit that flagged it and its largest residual."""
    merged: dict[str, dict[str, Any]] = {}
    for record in records:
        entry = merged.setdefault(record["trial_id"], record | {"flagged_by": []})
        entry["flagged_by"].append(record["flagged_by"])
        if abs(record["residual_in_noise_units"]) > abs(entry["residual_in_noise_units"]):
            entry["residual_in_noise_units"] = record["residual_in_noise_units"]
    return list(merged.values())


def _trial_counts(table: Table) -> dict[str, Any]:
    trials = table.trials
    failed = trials[trials["status"] == "ERROR"]
    return {
        "in_results": len(trials),
        "finished": int(trials["ok"].sum()),
        "failed": len(failed),
        "unfinished": int(trials["status"].isin(["PENDING", "RUNNING"]).sum()),
        "failed_trials": failed[
            ["trial_id", "label", MODEL, DATA, WORKERS, "train.seed", "error"]
        ].to_dict(orient="records"),
    }
