"""``analyze``: an experiment directory in; fitted laws, plots, report, recommendation out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.analysis import _compute, _curves, _plots, _recommend, _report
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._table import (
    DATA,
    MODEL,
    WORKERS,
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
) -> AnalysisResult:
    """Analyse a finished (or partly finished) sweep and write ``<experiment_dir>/analysis/``.

    ``metric`` defaults to the experiment's primary metric ("loss" analyses eval loss);
    ``target`` is in that metric's units; ``epsilon`` is the tolerance of "as good as";
    budgets are per training run of the chosen configuration; ``model`` fixes the model that
    the data and workers questions are asked about. Raises ``AnalysisError`` for anything a
    user can fix (a wrong path, no finished trial, an unknown metric or model).
    """
    _check_options(epsilon, price_per_gpu_hour, time_budget_s, money_budget)
    experiment = load_experiment(Path(experiment_dir))
    table = build_table(experiment, resolve_metric(experiment, metric))
    models = sorted(table.ok[MODEL].unique())
    if model is not None and model not in models:
        raise AnalysisError(
            f"model {model!r} has no finished trial in this sweep; models: {', '.join(models)}"
        )

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
        },
        "trials": _trial_counts(table),
        "reference_workers": table.reference_workers,
        "full_fraction": float(table.ok[DATA].max()),
        "missing_cells": list(table.missing),
        "notes": list(experiment.notes),
        "recommendation": dict(
            zip(("model", "data", "workers"), (a.to_dict() for a in answers), strict=True)
        ),
        "fits": {
            "model_axis": {"refusal": model_refusal, "curves": [c.to_dict() for c in model_curves]},
            "data_axis": {"refusal": data_refusal, "curves": [c.to_dict() for c in data_curves]},
            "joint": [j.to_dict() for j in joint],
            "amdahl": {"refusal": amdahl_refusal}
            | {time: [c.to_dict() for c in curves] for time, curves in amdahl.items()},
        },
        "compute": {
            "cells": speedups[[*_SPEEDUP_COLUMNS, *table.extra_axes]].to_dict(orient="records"),
            "strong_scaling": strong,
        },
        "cost": cost,
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
) -> None:
    if epsilon < 0:
        raise AnalysisError(f"epsilon must be ≥ 0, got {epsilon}")
    for name, value in (
        ("price per GPU-hour", price),
        ("time budget", time_budget_s),
        ("money budget", money_budget),
    ):
        if value is not None and value <= 0:
            raise AnalysisError(f"{name} must be positive, got {value}")
    if money_budget is not None and price is None:
        raise AnalysisError("a money budget needs a price per GPU-hour to turn hours into money")


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
