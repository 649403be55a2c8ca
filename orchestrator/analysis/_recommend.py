"""The practical answers: which model, how much data, how many workers, and (when asked) which
model fits a latency budget.

Each question narrows the next: the data question is asked of the chosen model, the workers
question of the chosen model at the chosen data fraction, judged twice: by the whole trial's
time and by the training time to reach a level of the metric (convergence). The latency
question (``--max-latency-ms``) stands apart: the best model, at the largest data fraction,
whose measured latency at a percentile and batch size is within the budget. Quality is
compared in error space (lower is better) so accuracy-like metrics and loss need no separate
branches.

The answers are seed-aware: each cell is shown as mean ± sd over its n seeds; two cells whose
means differ by less than two standard errors are tied (a single seed borrows the sweep's
pooled seed noise); a choice resting on one seed says so; cells that failed, are missing or
did not learn are named rather than silently skipped.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from orchestrator.analysis import _format
from orchestrator.analysis._convergence import Convergence, describe_cell
from orchestrator.analysis._table import DATA, MODEL, NOISE_Z, WORKERS, Table, standard_error

__all__ = ["Answer", "Budget", "LatencyBudget", "recommend"]

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


@dataclass(frozen=True)
class LatencyBudget:
    """A prediction-latency limit: ``max_ms`` at a percentile (p50, p95, p99) and batch size."""

    max_ms: float
    percentile: str = "p95"
    batch_size: int = 1


def recommend(
    table: Table,
    speedups: pd.DataFrame,
    *,
    target: float | None,
    epsilon: float,
    budget: Budget,
    model: str | None,
    convergence: Convergence | None = None,
    latency: pd.DataFrame | None = None,
    latency_budget: LatencyBudget | None = None,
) -> dict[str, Answer]:
    """The answers by name: ``model``, ``data``, ``workers``, and ``workers_to_target`` when
    the trials have evaluation points, ``latency`` when ``latency_budget`` is given."""
    quality = table.quality.assign(se=standard_error(table.quality, table.seed_sd))
    which_model = _model(table, quality, target=target, epsilon=epsilon)
    answers = {"model": which_model}
    if latency_budget is not None:
        answers["latency"] = _latency(table, quality, latency, latency_budget)
    # With no model good enough, the data and workers questions are asked of the best one.
    chosen = model or which_model.choice or which_model.details.get("best_model")
    if chosen is None:
        nothing = "no model learned; nothing to compare"
        answers["data"] = Answer("Least data", None, nothing, {})
        answers["workers"] = Answer("Workers", None, nothing, {})
        return _ordered(answers)
    which_data = _data(table, quality[quality[MODEL] == chosen], chosen, epsilon=epsilon)
    learned = quality[(quality[MODEL] == chosen) & quality["learned"]]
    fraction = which_data.choice if which_data.choice is not None else learned[DATA].max()
    where_model, where_fraction, moved = _swept_on_workers(table, speedups, chosen, fraction)
    rows = speedups[(speedups[MODEL] == where_model) & (speedups[DATA] == where_fraction)]
    reached = None if convergence is None else convergence.cells
    if reached is not None:
        reached = reached[(reached[MODEL] == where_model) & (reached[DATA] == where_fraction)]
    # Compare worker counts at the extra-axis values (e.g. a learning rate) that did best here.
    best = learned[learned[DATA] == fraction] if not moved else pd.DataFrame()
    if not best.empty:
        best_cell = best.loc[best["error_mean"].idxmin()]
        for axis in table.extra_axes:
            rows = rows[rows[axis] == best_cell[axis]]
            if reached is not None:
                reached = reached[reached[axis] == best_cell[axis]]
    where = f"{where_model} at {_format.fraction(where_fraction)} data"
    if moved:
        where += (
            f" (the sweep ran {chosen} at {_format.fraction(fraction)} data on one worker count; "
            "this is the nearest cell it ran on several)"
        )
    answers["data"] = which_data
    answers["workers"] = _workers(table, rows, where, budget)
    if convergence is not None:
        answers["workers_to_target"] = _workers_to_target(
            reached, where, convergence.level, answers["workers"].choice
        )
    return _ordered(answers)


def _swept_on_workers(
    table: Table, speedups: pd.DataFrame, model: str, fraction: float
) -> tuple[str, float, bool]:
    """The (model, fraction) cell to compare worker counts at: the one asked about, else (a
    union of grids that swept workers on a few cells) the same model at its largest fraction
    run on several counts, else the model nearest in size at its largest such fraction; and
    whether it moved."""
    counts = speedups.groupby([MODEL, DATA], observed=True)[WORKERS].nunique()
    swept = counts[counts >= 2].reset_index()
    if swept.empty or ((swept[MODEL] == model) & (swept[DATA] == fraction)).any():
        return model, fraction, False
    order = {name: i for i, name in enumerate(table.trials[MODEL].cat.categories)}
    distance = (swept[MODEL].map(order).astype(int) - order[model]).abs()
    pick = swept.assign(distance=distance).sort_values(["distance", DATA], ascending=[True, False])
    return pick.iloc[0][MODEL], float(pick.iloc[0][DATA]), True


def _ordered(answers: dict[str, Answer]) -> dict[str, Answer]:
    order = ("model", "data", "workers", "workers_to_target", "latency")
    return {k: answers[k] for k in order if k in answers}


def _best_per(cells: pd.DataFrame, column: str) -> pd.DataFrame:
    """One row per value of ``column``: its best cell over any extra axes."""
    return cells.loc[cells.groupby(column, observed=True)["error_mean"].idxmin()]


def _tied(a: pd.Series, b: pd.Series) -> bool:
    """Whether two cells' means are within noise: less than two standard errors apart."""
    return bool(abs(a["error_mean"] - b["error_mean"]) <= NOISE_Z * math.hypot(a["se"], b["se"]))


def _shown(cell: pd.Series, metric: str | None = None) -> str:
    """ "accuracy 0.7932 ± 0.0060 (n = 3)", the sd left out when one seed gives none."""
    value = _format.metric(cell["metric_mean"], cell["metric_std"])
    return f"{metric + ' ' if metric else ''}{value} (n = {int(cell['n'])})"


def _name(cell: pd.Series, label: str) -> str:
    """The cell by the axis being compared: a model's name, or "50 %" for a data fraction."""
    return _format.fraction(cell[label]) if label == DATA else str(cell[label])


def _caveats(table: Table, cells: list[pd.Series], label: str) -> list[str]:
    """What a reader must know before trusting a comparison of these cells."""
    caveats = []
    if not math.isfinite(table.seed_sd):
        caveats.append("one seed per cell: differences may be seed noise")
    else:
        caveats += [
            f"{_name(c, label)} rests on 1 seed: no spread of its own, so its place is provisional"
            for c in cells
            if c["n"] == 1
        ]
    caveats += [
        f"{_name(c, label)} is read at {_format.workers(int(c[WORKERS]))} (none finished with "
        f"{table.reference_workers})"
        for c in cells
        if c[WORKERS] != table.reference_workers
    ]
    return list(dict.fromkeys(caveats))


def _absent(table: Table, column: str, value: Any) -> list[str]:
    """Cells with no usable trial at any worker count, named: "the 100 % cell of x failed"."""
    out = []
    for entry in table.absent:
        cell = entry["cell"]
        if cell[column] != value:
            continue
        name = f"the {_format.fraction(cell[DATA])} cell of {cell[MODEL]}"
        if entry["reason"] == "no trial in results.csv":
            out.append(f"{name} has no trial")
            continue
        first, *more = entry["reason"].split("; ")
        out.append(f"{name} failed ({first}" + (f"; {len(more)} more)" if more else ")"))
    return out


def _did_not_learn(cells: pd.DataFrame, label: str) -> list[str]:
    return [
        f"{_name(c, label)} did not learn ({_format.metric(c['metric_mean'])}, chance "
        f"{_format.metric(c['chance'])})"
        for _, c in cells[~cells["learned"]].iterrows()
    ]


def _model(table: Table, quality: pd.DataFrame, *, target: float | None, epsilon: float) -> Answer:
    metric = table.metric
    full = float(table.trials[DATA].max())
    at_full = _best_per(quality[quality[DATA] == full], MODEL).sort_values("params")
    learned = at_full[at_full["learned"]]
    absent = _absent(table, DATA, full) + _did_not_learn(at_full, MODEL)
    details: dict[str, Any] = {
        "data_fraction": full,
        "candidates": at_full[
            [MODEL, WORKERS, "params", "metric_mean", "metric_std", "n", "se", "learned"]
        ].to_dict(orient="records"),
        "failed_or_missing": absent,
    }
    if target is not None:
        question = f"Smallest model reaching {metric.name} {target:g}"
        details["target"] = target
    else:
        question = f"Smallest model within ε = {epsilon:g} of the best"
        details["epsilon"] = epsilon
    if learned.empty:
        text = f"no model learned at {_format.fraction(full)} data"
        return Answer(question, None, _join(text, absent), details)

    best = learned.loc[learned["error_mean"].idxmin()]
    details |= {"best_model": best[MODEL], "best_metric": float(best["metric_mean"])}
    tied = [c for _, c in learned.iterrows() if c[MODEL] != best[MODEL] and _tied(c, best)]
    details["tied_with_best"] = [c[MODEL] for c in tied]
    best_text = f"{best[MODEL]}, {_shown(best)}"
    if target is not None:
        reaching = learned[learned["error_mean"] <= metric.error(target)]
        if reaching.empty:
            text = f"none at {_format.fraction(full)} data; the best is {best_text}"
            caveats = _caveats(table, [best], MODEL)
            return Answer(question, None, _join(text, absent + caveats), details)
        pick = reaching.iloc[0]
    else:
        # As good as the best: within ε of it, or within seed noise of it.
        good = [
            c
            for _, c in learned.iterrows()
            if c["error_mean"] <= best["error_mean"] + epsilon or _tied(c, best)
        ]
        pick = good[0]
    text = (
        f"{pick[MODEL]} ({_format.count(pick['params'])} non-embedding params), "
        f"{_shown(pick, metric.name)} at {_format.fraction(full)} data"
    )
    if pick[MODEL] == best[MODEL]:
        text += "; the best"
        if tied:
            text += ", tied within seed noise with " + ", ".join(
                f"{c[MODEL]} {_shown(c)}" for c in tied
            )
    else:
        text += f" (best: {best_text}" + (", within seed noise" if _tied(pick, best) else "") + ")"
    caveats = _caveats(table, [pick, best, *tied], MODEL)
    return Answer(question, pick[MODEL], _join(text, absent + caveats), details)


def _data(table: Table, cells: pd.DataFrame, model: str, *, epsilon: float) -> Answer:
    question = f"Least data for {model} within ε = {epsilon:g} of the largest fraction"
    if cells.empty:
        text = f"{model} has no finished trial"
        return Answer(question, None, _join(text, _absent(table, MODEL, model)), {"model": model})
    sweep_full = float(table.trials[DATA].max())
    by_fraction = _best_per(cells, DATA).sort_values(DATA)
    learned = by_fraction[by_fraction["learned"]]
    absent = _absent(table, MODEL, model) + _did_not_learn(by_fraction, DATA)
    details: dict[str, Any] = {
        "model": model,
        "epsilon": epsilon,
        "candidates": by_fraction[
            [DATA, WORKERS, "train_examples", "metric_mean", "metric_std", "n", "se", "learned"]
        ].to_dict(orient="records"),
        "failed_or_missing": absent,
    }
    metric = table.metric.name
    if learned.empty:
        return Answer(question, None, _join("no fraction learned", absent), details)
    full = learned.iloc[-1]
    details |= {"full_fraction": float(full[DATA]), "full_metric": float(full["metric_mean"])}
    # "All of it" only when the sweep's largest fraction is the one that finished.
    largest = (
        f"all of it ({_format.fraction(full[DATA])})"
        if full[DATA] == sweep_full
        else f"the largest fraction that finished and learned, {_format.fraction(full[DATA])}"
    )
    if len(learned) < 2:
        text = f"only {_format.fraction(full[DATA])} finished and learned; nothing to compare"
        return Answer(question, None, _join(text, absent), details)
    # The smallest fraction from which every larger one is within ε of the largest: one lucky
    # small fraction among worse larger ones is noise, not a reason to train on less.
    within = (learned["error_mean"] <= full["error_mean"] + epsilon).to_numpy()
    from_here = np.logical_and.accumulate(within[::-1])[::-1]
    pick = learned[from_here].iloc[0]
    if pick[DATA] == full[DATA]:
        runner_up = learned.iloc[-2]
        text = (
            f"{largest}, {_shown(full, metric)}; the next largest, "
            f"{_format.fraction(runner_up[DATA])}, reaches only {_shown(runner_up)}"
        )
    else:
        text = (
            f"{_format.fraction(pick[DATA])} ({_format.count(pick['train_examples'])} examples), "
            f"{_shown(pick, metric)} vs {_shown(full)} at {_format.fraction(full[DATA])}"
        )
    lucky = learned[within & ~from_here]
    if not lucky.empty:
        text += (
            f"; {', '.join(_format.fraction(f) for f in lucky[DATA])} also came within ε, but "
            "a larger fraction did not: read as noise, not as a reason to train on less"
        )
    caveats = _caveats(table, [pick, full], DATA)
    return Answer(question, float(pick[DATA]), _join(text, absent + caveats), details)


def _join(text: str, remarks: list[str]) -> str:
    """The answer, then what it could not use and what to beware of, in one line."""
    return text + "".join(f"; {r}" for r in remarks)


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


def _workers_to_target(
    cells: pd.DataFrame, where: str, level: str, by_total_time: int | None
) -> Answer:
    """The worker count that reaches ``level`` after the least training time, among those at
    which every seed reached it, with the same efficiency rule as the whole-trial answer."""
    question = f"Workers for {where}, by training time to {level}"
    cells = cells.sort_values(WORKERS)
    details: dict[str, Any] = {
        "for": where,
        "level": level,
        "options": cells[
            [WORKERS, "n", "n_reached", "time_to_s", "examples_to", "steps_to"]
        ].to_dict(orient="records"),
        "by_total_time": by_total_time,
    }
    if cells[WORKERS].nunique() < 2:
        text = "fewer than two worker counts finished here; nothing to compare"
        return Answer(question, None, text, details)
    every = cells[cells["n_reached"] == cells["n"]]
    shown = ", ".join(f"{int(c[WORKERS])}: {describe_cell(c)}" for _, c in cells.iterrows())
    if every.empty:
        text = f"no worker count reached it in every seed ({shown})"
        return Answer(question, None, text, details)
    reference = cells.iloc[0]
    w0 = int(reference[WORKERS])
    if reference["n_reached"] == reference["n"]:
        efficiency = reference["time_to_s"] * w0 / (every["time_to_s"] * every[WORKERS])
        every = every.assign(efficiency=efficiency)
        efficient = every[every["efficiency"] >= _MIN_EFFICIENCY]
        why = f"the soonest with parallel efficiency ≥ {_MIN_EFFICIENCY:.0%}"
    else:
        efficient = every.assign(efficiency=math.nan)
        why = f"the soonest; {_format.workers(w0)} did not reach it in every seed"
    pick = efficient.loc[efficient["time_to_s"].idxmin()]
    details["efficiency"] = float(pick["efficiency"])
    text = f"{int(pick[WORKERS])}, {why} (training time to reach it: {shown})"
    if by_total_time is not None:
        same = by_total_time == int(pick[WORKERS])
        text += (
            "; the same as by whole-trial time"
            if same
            else f"; by whole-trial time: {by_total_time} (start-up and the rest of training "
            "weigh there)"
        )
    return Answer(question, int(pick[WORKERS]), text, details)


def _latency(
    table: Table, quality: pd.DataFrame, latency: pd.DataFrame | None, budget: LatencyBudget
) -> Answer:
    """The best model at the largest data fraction whose latency is within the budget; ties
    within seed noise go to the faster model."""
    metric = table.metric
    question = (
        f"Best model within {budget.max_ms:g} ms {budget.percentile} latency at batch "
        f"{budget.batch_size}"
    )
    details: dict[str, Any] = {
        "max_latency_ms": budget.max_ms,
        "percentile": budget.percentile,
        "batch_size": budget.batch_size,
    }
    if latency is None or latency.empty:
        text = (
            "no latency measured in this sweep (results.csv has no latency columns: trials "
            "from before inference timing, or inference.enabled: false)"
        )
        return Answer(question, None, text, details)
    column = f"{budget.percentile}_ms"
    at_size = latency[latency["batch_size"] == budget.batch_size]
    # A model measured on several devices (or extra-axis values) is held to its slowest.
    per_model = at_size.groupby(MODEL, observed=True).agg(
        latency_ms=(column, "max"), device=("device", lambda d: ", ".join(sorted(set(d))))
    )
    full = float(table.trials[DATA].max())
    at_full = _best_per(quality[quality[DATA] == full], MODEL)
    candidates = at_full[at_full["learned"]].merge(per_model.reset_index(), on=MODEL, how="inner")
    details["candidates"] = candidates[
        [MODEL, "params", "metric_mean", "metric_std", "n", "latency_ms", "device"]
    ].to_dict(orient="records")
    if candidates.empty:
        text = f"no model that learned at {_format.fraction(full)} data has a latency measured"
        return Answer(question, None, text, details)
    within = candidates[candidates["latency_ms"] <= budget.max_ms]
    if within.empty:
        fastest = candidates.loc[candidates["latency_ms"].idxmin()]
        text = (
            f"none: the fastest, {fastest[MODEL]}, takes {fastest['latency_ms']:.3g} ms "
            f"({fastest['device']})"
        )
        return Answer(question, None, text, details)
    best = within.loc[within["error_mean"].idxmin()]
    # The best, and any model within seed noise of it (with one seed, noise is unknown: none).
    tied = within[[c[MODEL] == best[MODEL] or _tied(c, best) for _, c in within.iterrows()]]
    pick = tied.loc[tied["latency_ms"].idxmin()]
    text = (
        f"{pick[MODEL]}: {pick['latency_ms']:.3g} ms {budget.percentile} at batch "
        f"{budget.batch_size} ({pick['device']}), {_shown(pick, metric.name)} at "
        f"{_format.fraction(full)} data"
    )
    if pick[MODEL] != best[MODEL]:
        text += f"; tied within seed noise with {best[MODEL]} {_shown(best)}, which is slower"
    overall = candidates.loc[candidates["error_mean"].idxmin()]
    if overall[MODEL] not in set(within[MODEL]) and not _tied(overall, pick):
        text += (
            f"; {overall[MODEL]} is better ({_shown(overall)}) but takes "
            f"{overall['latency_ms']:.3g} ms"
        )
    return Answer(question, pick[MODEL], text, details)
