"""Quality scaling: error against model size and against data, each series with its fitted law.

Quality is read per model × data cell at its fewest workers (see ``Table.quality``): other
worker counts change the optimisation under weak scaling and would blur the curves. Cells that
did not learn are drawn apart and left out of every fit; trials the robust fits flag as
outliers are named.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd

from orchestrator.analysis import _format
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._fits import (
    Fit,
    fit_joint_power_law,
    fit_power_law,
    leave_largest_out,
)
from orchestrator.analysis._table import DATA, MODEL, SEED, WORKERS, Table

__all__ = [
    "Curve",
    "JointFit",
    "data_axis",
    "groups",
    "joint_fits",
    "key_label",
    "model_axis",
    "outlier_records",
]


@dataclass(frozen=True, eq=False)
class Curve:
    """One series of an axis with the other axes held fixed, and its fit or why there is none."""

    key: dict[str, Any]  # the axes held fixed, e.g. {"data.train_fraction": 0.25}
    points: pd.DataFrame  # one row per x: x, mean, std, n (and name, on the quality axes)
    fit: Fit | None
    refusal: str | None
    # Quality axes only: points of cells that did not learn (drawn apart, not fitted), trials
    # the fit flagged, and the leave-largest-out check (or why there is none).
    excluded: pd.DataFrame = field(default_factory=pd.DataFrame)
    outliers: list[dict[str, Any]] = field(default_factory=list)
    holdout: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return key_label(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "points": self.points.to_dict(orient="records"),
            "did_not_learn": self.excluded.to_dict(orient="records"),
            "fit": None if self.fit is None else self.fit.to_dict(),
            "refusal": self.refusal,
            "outliers": self.outliers,
            "leave_largest_out": self.holdout,
        }


@dataclass(frozen=True, eq=False)
class JointFit:
    """The Chinchilla-form fit over the whole model × data grid, per value of any extra axes."""

    key: dict[str, Any]
    fit: Fit | None
    refusal: str | None
    observed: pd.DataFrame  # the trials it was fitted on: N, D, error
    excluded: pd.DataFrame  # trials of cells that did not learn: N, D, error
    outliers: list[dict[str, Any]]
    holdouts: list[dict[str, Any]]  # without the largest N, then without the largest D

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fit": None if self.fit is None else self.fit.to_dict(),
            "refusal": self.refusal,
            "outliers": self.outliers,
            "leave_largest_out": self.holdouts,
        }


def groups(
    frame: pd.DataFrame, columns: list[str]
) -> Iterator[tuple[dict[str, Any], pd.DataFrame]]:
    """``groupby`` that also accepts no columns (one group, empty key) and yields plain keys."""
    if not columns:
        yield {}, frame
        return
    for values, group in frame.groupby(columns, dropna=False, sort=True, observed=True):
        yield {c: _format.plain(v) for c, v in zip(columns, values, strict=True)}, group


def outlier_records(trials: pd.DataFrame, fit: Fit | None, flagged_by: str) -> list[dict]:
    """The trials a fit flagged, by name: ``trials`` are the rows it was fitted on, in order."""
    records = []
    for position, z in fit.outliers if fit is not None else ():
        row = trials.iloc[position]
        records.append(
            {
                "trial_id": row["trial_id"],
                "label": row["label"],
                MODEL: _format.plain(row[MODEL]),
                DATA: _format.plain(row[DATA]),
                WORKERS: int(row[WORKERS]),
                SEED: _format.plain(row[SEED]),
                "metric": float(row["metric"]),
                "residual_in_noise_units": z,
                "flagged_by": flagged_by,
            }
        )
    return records


def _holdout(law: Callable[..., Fit], xs: list[pd.Series], y: pd.Series, axis: int) -> dict:
    try:
        return leave_largest_out(law, xs, y, axis=axis)
    except AnalysisError as error:
        return {"refusal": f"leave-largest-out: {error}"}


def _points(trials: pd.DataFrame, x: str, name: str) -> pd.DataFrame:
    return (
        trials.groupby(x)
        .agg(
            name=(name, "first"),
            mean=("error_value", "mean"),
            std=("error_value", "std"),
            n=("error_value", "size"),
        )
        .reset_index()
        .rename(columns={x: "x"})
    )


def model_axis(table: Table) -> tuple[list[Curve], str | None]:
    """Error against non-embedding parameters, one curve per data fraction (× extra axes)."""
    return _axis(table, x="params_non_embedding", name=MODEL, series=[DATA], variable="N")


def data_axis(table: Table) -> tuple[list[Curve], str | None]:
    """Error against training examples, one curve per model (× extra axes)."""
    return _axis(table, x="train_examples", name=DATA, series=[MODEL], variable="D")


def _axis(
    table: Table, *, x: str, name: str, series: list[str], variable: str
) -> tuple[list[Curve], str | None]:
    quality = table.ok[table.ok["quality"]]
    swept = quality[name].unique()
    if len(swept) < 2:
        only = _format.value(_format.plain(swept[0]))
        return [], f"{name} was not swept (one value: {only}); no curve"
    law = partial(fit_power_law, variable=variable)
    curves = []
    for key, group in groups(quality, [*series, *table.extra_axes]):
        learned = group[group["learned"]]
        fit, refusal, holdout = None, None, None
        if learned.empty:
            refusal = "no cell of this series learned: every one is within noise of chance"
        else:
            try:
                fit = law(learned[x], learned["error_value"])
            except AnalysisError as error:
                refusal = str(error)
            else:
                holdout = _holdout(law, [learned[x]], learned["error_value"], axis=0)
        curves.append(
            Curve(
                key=key,
                points=_points(learned, x, name),
                fit=fit,
                refusal=refusal,
                excluded=_points(group[~group["learned"]], x, name),
                outliers=outlier_records(learned, fit, f"{variable}-axis law ({key_label(key)})"),
                holdout=holdout,
            )
        )
    return curves, None


def key_label(key: dict[str, Any]) -> str:
    """Axis values held fixed, short: "train_fraction=0.25, lr=3e-05"; "all" for none."""
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={_format.value(v)}" for k, v in key.items()) or "all"


def _joint_name(key: dict[str, Any]) -> str:
    return "joint law" + (f" ({key_label(key)})" if key else "")


def joint_fits(table: Table) -> list[JointFit]:
    """``E(N, D) = E + A/N^alpha + B/D^beta`` for each value of the extra axes."""
    fits = []
    quality = table.ok[table.ok["quality"]]
    for key, group in groups(quality, list(table.extra_axes)):
        frame = pd.DataFrame(
            {
                "N": group["params_non_embedding"],
                "D": group["train_examples"],
                "error": group["error_value"],
            }
        )
        learned = group["learned"].to_numpy()
        observed = frame[learned]
        fit, refusal, holdouts = None, None, []
        try:
            fit = fit_joint_power_law(observed["N"], observed["D"], observed["error"])
        except AnalysisError as error:
            refusal = f"joint fit: {error}"
        else:
            xs = [observed["N"], observed["D"]]
            holdouts = [_holdout(fit_joint_power_law, xs, observed["error"], a) for a in (0, 1)]
        fits.append(
            JointFit(
                key=key,
                fit=fit,
                refusal=refusal,
                observed=observed,
                excluded=frame[~learned],
                outliers=outlier_records(group[learned], fit, _joint_name(key)),
                holdouts=holdouts,
            )
        )
    return fits
