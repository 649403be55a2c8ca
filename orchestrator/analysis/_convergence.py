"""Convergence: how much training each trial needed to reach a level of the metric.

Every trial evaluates the whole validation split at each epoch's end and, with
``train.eval_every_steps``, every that many optimizer steps; each evaluation is a point in its
history (``eval_points``). From those points, with the arithmetic the trials use themselves
(``contract.convergence``), this module reads when each trial first reached the level:

- ``--target`` when given (in the analysed metric's units), else
- the spec's ``train.target`` (the trials' ``target`` column), else
- each trial's own converged level: ``train.convergence_fraction`` (default 95 %) of its final
  metric (the ``converged_level`` column), or 95 % for a metric the trials did not rank by.

A trial that never reached the level has no time (NaN), never a zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from contract.convergence import converged_level, first_reaching
from contract.rows import EvalPoint
from orchestrator.analysis import _format
from orchestrator.analysis._table import DATA, MODEL, SEED, WORKERS, Table

__all__ = ["DEFAULT_FRACTION", "Convergence", "convergence"]

DEFAULT_FRACTION = 0.95  # train.convergence_fraction's default, for a metric trials did not use


@dataclass(frozen=True, eq=False)
class Convergence:
    """When each trial reached the level, and the seed means per cell."""

    level: str  # the level in words: "accuracy 0.7 (--target)"
    trials: pd.DataFrame  # per finished trial with points: level, reached, *_to
    cells: pd.DataFrame  # per cell: n, n_reached, time_to_s (mean of those that reached), ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "cells": self.cells.to_dict(orient="records"),
            "trials": self.trials.to_dict(orient="records"),
        }


def _points(history: pd.DataFrame) -> dict[str, list[EvalPoint]]:
    """Every trial's evaluation points, over all its epochs, from history.jsonl."""
    if history.empty or "eval_points" not in history.columns:
        return {}
    out: dict[str, list[EvalPoint]] = {}
    for trial_id, rows in history.sort_values("epoch").groupby("trial_id", sort=False):
        points = [
            EvalPoint.from_dict(p)
            for epoch_points in rows["eval_points"]
            if isinstance(epoch_points, list | tuple)
            for p in epoch_points
        ]
        if points:
            out[str(trial_id)] = points
    return out


def _levels(table: Table, trials: pd.DataFrame, target: float | None) -> tuple[pd.Series, str]:
    """The level each trial is judged by, and where it came from in words."""
    metric = table.metric
    primary = metric.name == table.experiment.primary_metric
    if target is not None:
        return pd.Series(target, index=trials.index), f"{metric.name} {target:g} (--target)"
    if primary and "target" in trials.columns and trials["target"].notna().all():
        targets = trials["target"].astype(float)
        if targets.nunique() == 1:
            return targets, f"{metric.name} {targets.iloc[0]:g} (train.target)"
        return targets, f"its train.target ({metric.name})"
    if primary and "converged_level" in trials.columns and trials["converged_level"].notna().all():
        levels = trials["converged_level"].astype(float)
        return (
            levels,
            f"its converged level (train.convergence_fraction of its final {metric.name})",
        )
    finals = trials["metric"].astype(float)
    levels = finals.map(
        lambda v: converged_level(v, DEFAULT_FRACTION, higher_is_better=metric.higher_is_better)
    )
    return levels, f"{DEFAULT_FRACTION:.0%} of its final {metric.name}"


def convergence(table: Table, target: float | None) -> tuple[Convergence | None, str | None]:
    """Time, examples and steps to the level per trial and per cell; or why there are none."""
    points = _points(table.experiment.history)
    ok = table.ok
    with_points = ok[ok["trial_id"].isin(points)]
    if with_points.empty:
        return None, (
            "no evaluation points in history.jsonl (a sweep from before convergence tracking): "
            "convergence figure and time-to-target recommendation skipped"
        )
    metric = table.metric
    levels, described = _levels(table, with_points, target)
    records = []
    for (_, trial), level in zip(with_points.iterrows(), levels, strict=True):
        reached = first_reaching(
            points[trial["trial_id"]], metric.name, level, higher_is_better=metric.higher_is_better
        )
        records.append(
            {
                "trial_id": trial["trial_id"],
                "label": trial["label"],
                MODEL: trial[MODEL],
                DATA: trial[DATA],
                WORKERS: int(trial[WORKERS]),
                SEED: trial[SEED],
                **{a: trial[a] for a in table.extra_axes},
                "train_examples": trial["train_examples"],
                "params": trial["params_non_embedding"],
                "level": level,
                "reached": reached is not None,
                "time_to_s": reached.train_time_s if reached else math.nan,
                "examples_to": reached.examples_seen if reached else math.nan,
                "steps_to": reached.step if reached else math.nan,
                "points": len(points[trial["trial_id"]]),
            }
        )
    trials = pd.DataFrame(records)
    trials[MODEL] = pd.Categorical(
        trials[MODEL], categories=table.trials[MODEL].cat.categories, ordered=True
    )
    keys = [MODEL, DATA, WORKERS, *table.extra_axes]
    cells = (
        trials.groupby(keys, observed=True, sort=True)
        .agg(
            n=("reached", "size"),
            n_reached=("reached", "sum"),
            time_to_s=("time_to_s", "mean"),
            time_to_std=("time_to_s", "std"),
            examples_to=("examples_to", "mean"),
            steps_to=("steps_to", "mean"),
            train_examples=("train_examples", "mean"),
            params=("params", "mean"),
            level=("level", "mean"),
        )
        .reset_index()
    )
    cells["n_reached"] = cells["n_reached"].astype(int)
    return Convergence(level=described, trials=trials, cells=cells), None


def describe_cell(cell: pd.Series) -> str:
    """ "8.3 s (2 of 3 seeds reached it)", or "never (0 of 2 seeds)"."""
    if cell["n_reached"] == 0:
        return f"never (0 of {int(cell['n'])} seeds)"
    text = _format.seconds(cell["time_to_s"])
    if cell["n_reached"] < cell["n"]:
        text += f" ({int(cell['n_reached'])} of {int(cell['n'])} seeds reached it)"
    return text


def all_reached(cells: pd.DataFrame) -> np.ndarray:
    return (cells["n_reached"] == cells["n"]).to_numpy()
