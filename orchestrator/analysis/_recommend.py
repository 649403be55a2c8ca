"""The three practical answers: which model, how much data, how many workers.

Each question narrows the next: the data question is asked of the chosen model, the workers
question of the chosen model at the chosen data fraction. Quality is compared in error space
(lower is better) so accuracy-like metrics and loss need no separate branches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from orchestrator.analysis import _format
from orchestrator.analysis._table import DATA, MODEL, WORKERS, Table

__all__ = ["Answer", "Budget", "recommend"]

# With no budget, the fastest worker count that still uses at least half of what it pays for.
_MIN_EFFICIENCY = 0.5


@dataclass(frozen=True)
class Answer:
    """One recommendation: the choice (None when the sweep cannot answer) and why, in a line."""

    question: str
    choice: Any
    text: str
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """What the user can spend on one training run of the chosen configuration."""

    time_s: float | None = None
    money: float | None = None
    price_per_gpu_hour: float | None = None


def recommend(
    table: Table,
    speedups: pd.DataFrame,
    *,
    target: float | None,
    epsilon: float,
    budget: Budget,
    model: str | None,
) -> tuple[Answer, Answer, Answer]:
    quality = table.cells[table.cells[WORKERS] == table.reference_workers]
    which_model = _model(table, quality, target=target, epsilon=epsilon)
    # With no model good enough, the data and workers questions are asked of the best one.
    chosen = model or which_model.choice or which_model.details["best_model"]
    which_data = _data(table, quality[quality[MODEL] == chosen], chosen, epsilon=epsilon)
    fraction = which_data.choice if which_data.choice is not None else quality[DATA].max()
    rows = speedups[(speedups[MODEL] == chosen) & (speedups[DATA] == fraction)]
    # Compare worker counts at the extra-axis values (e.g. a learning rate) that did best here.
    best = quality[(quality[MODEL] == chosen) & (quality[DATA] == fraction)]
    if not best.empty:
        best_cell = best.loc[best["error_mean"].idxmin()]
        for axis in table.extra_axes:
            rows = rows[rows[axis] == best_cell[axis]]
    which_workers = _workers(table, rows, f"{chosen} at {_format.fraction(fraction)} data", budget)
    return which_model, which_data, which_workers


def _best_per(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per value of ``column``: its best cell over any extra axes."""
    return cells.loc[cells.groupby(column, observed=True)["error_mean"].idxmin()]


def _model(table: Table, quality: pd.DataFrame, *, target: float | None, epsilon: float) -> Answer:
    metric = table.metric
    full = quality[DATA].max()
    at_full = _best_per(quality[quality[DATA] == full], MODEL).sort_values("params")
    best = at_full.loc[at_full["error_mean"].idxmin()]
    details = {
        "data_fraction": float(full),
        "best_model": best[MODEL],
        "best_metric": float(best["metric_mean"]),
        "candidates": at_full[[MODEL, "params", "metric_mean", "metric_std", "n"]].to_dict(
            orient="records"
        ),
    }
    best_text = f"{best[MODEL]}, {_format.metric(best['metric_mean'])}"
    if target is not None:
        question = f"Smallest model reaching {metric.name} {target:g}"
        details["target"] = target
        reaching = at_full[at_full["error_mean"] <= metric.error(target)]
        if reaching.empty:
            text = f"none at {_format.fraction(full)} data; the best is {best_text}"
            return Answer(question, None, text, details)
        pick = reaching.iloc[0]
    else:
        question = f"Smallest model within ε = {epsilon:g} of the best"
        details["epsilon"] = epsilon
        pick = at_full[at_full["error_mean"] <= best["error_mean"] + epsilon].iloc[0]
    text = (
        f"{pick[MODEL]} ({_format.count(pick['params'])} non-embedding params), {metric.name} "
        f"{_format.metric(pick['metric_mean'], pick['metric_std'])} at "
        f"{_format.fraction(full)} data"
    )
    text += "; the best" if pick[MODEL] == best[MODEL] else f" (best: {best_text})"
    return Answer(question, pick[MODEL], text, details)


def _data(table: Table, cells: pd.DataFrame, model: str, *, epsilon: float) -> Answer:
    question = f"Least data for {model} within ε = {epsilon:g} of the largest fraction"
    if cells.empty:
        return Answer(question, None, f"{model} has no finished trial", {"model": model})
    by_fraction = _best_per(cells, DATA).sort_values(DATA)
    full = by_fraction.iloc[-1]
    details = {
        "model": model,
        "epsilon": epsilon,
        "full_fraction": float(full[DATA]),
        "full_metric": float(full["metric_mean"]),
        "candidates": by_fraction[
            [DATA, "train_examples", "metric_mean", "metric_std", "n"]
        ].to_dict(orient="records"),
    }
    metric = table.metric.name
    if len(by_fraction) < 2:
        text = f"only {_format.fraction(full[DATA])} finished; nothing to compare"
        return Answer(question, None, text, details)
    pick = by_fraction[by_fraction["error_mean"] <= full["error_mean"] + epsilon].iloc[0]
    if pick[DATA] == full[DATA]:
        runner_up = by_fraction.iloc[-2]
        text = (
            f"all of it ({_format.fraction(full[DATA])}), {metric} "
            f"{_format.metric(full['metric_mean'])}; the next largest, "
            f"{_format.fraction(runner_up[DATA])}, reaches only "
            f"{_format.metric(runner_up['metric_mean'])}"
        )
    else:
        text = (
            f"{_format.fraction(pick[DATA])} ({_format.count(pick['train_examples'])} examples), "
            f"{metric} {_format.metric(pick['metric_mean'])} vs "
            f"{_format.metric(full['metric_mean'])} at {_format.fraction(full[DATA])}"
        )
    return Answer(question, float(pick[DATA]), text, details)


def _workers(table: Table, rows: pd.DataFrame, where: str, budget: Budget) -> Answer:
    unit = table.hours_unit
    price = budget.price_per_gpu_hour
    rows = rows.sort_values(WORKERS).assign(money=rows["hours"] * price if price else math.nan)
    details: dict[str, Any] = {
        "for": where,
        "time_budget_s": budget.time_s,
        "money_budget": budget.money,
        "options": rows[
            [WORKERS, "trial_wall_s", "hours", "money", "efficiency_trial_wall_s"]
        ].to_dict(orient="records"),
    }
    limits = []
    if budget.time_s is not None:
        limits.append(f"≤ {_format.seconds(budget.time_s)} per run")
    if budget.money is not None:
        limits.append(f"≤ {_format.money(budget.money)} per run")
    question = f"Workers for {where}" + (f" ({' and '.join(limits)})" if limits else "")
    if rows[WORKERS].nunique() < 2:
        text = "fewer than two worker counts finished here; nothing to compare"
        return Answer(question, None, text, details)

    feasible = rows
    if budget.time_s is not None:
        feasible = feasible[feasible["trial_wall_s"] <= budget.time_s]
    if budget.money is not None:
        feasible = feasible[feasible["money"] <= budget.money]
    if feasible.empty:
        fastest = rows.loc[rows["trial_wall_s"].idxmin()]
        cheapest = rows.loc[rows["hours"].idxmin()]
        text = (
            f"none fits the budget: the fastest ({int(fastest[WORKERS])} workers) takes "
            f"{_format.seconds(fastest['trial_wall_s'])}, the cheapest "
            f"({int(cheapest[WORKERS])}) costs {_cost(cheapest, unit, price)}"
        )
        return Answer(question, None, text, details)
    if budget.time_s is not None and budget.money is None:
        pick, why = feasible.loc[feasible["hours"].idxmin()], "the cheapest within the time budget"
    elif budget.money is not None:
        pick, why = feasible.loc[feasible["trial_wall_s"].idxmin()], "the fastest within budget"
    else:
        efficient = rows[rows["efficiency_trial_wall_s"] >= _MIN_EFFICIENCY]
        pick = efficient.loc[efficient["trial_wall_s"].idxmin()]
        why = (
            f"the fastest with parallel efficiency ≥ {_MIN_EFFICIENCY:.0%}, i.e. at most "
            f"{1 / _MIN_EFFICIENCY:g}× the {unit} of the fewest workers"
        )
    text = (
        f"{int(pick[WORKERS])}, taking {_format.seconds(pick['trial_wall_s'])} and "
        f"{_cost(pick, unit, price)} per run (efficiency {pick['efficiency_trial_wall_s']:.0%}): "
        f"{why}"
    )
    return Answer(question, int(pick[WORKERS]), text, details)


def _cost(row: pd.Series, unit: str, price: float | None) -> str:
    cost = f"{_format.hours(row['hours'])} {unit}"
    return cost + f", costing {_format.money(row['money'])}" if price else cost
