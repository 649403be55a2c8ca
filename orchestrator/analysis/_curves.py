"""Quality scaling: error against model size and against data, each series with its fitted law.

Quality is read at the reference worker count only (see ``Table.reference_workers``): other
worker counts change the optimisation under weak scaling and would blur the curves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd

from orchestrator.analysis import _format
from orchestrator.analysis._errors import AnalysisError
from orchestrator.analysis._fits import Fit, fit_joint_power_law, fit_power_law
from orchestrator.analysis._table import DATA, MODEL, WORKERS, Table

__all__ = ["Curve", "JointFit", "data_axis", "groups", "joint_fits", "model_axis"]


@dataclass(frozen=True, eq=False)
class Curve:
    """One series of an axis with the other axes held fixed, and its fit or why there is none."""

    key: dict[str, Any]  # the axes held fixed, e.g. {"data.train_fraction": 0.25}
    points: pd.DataFrame  # one row per x: x, mean, std, n (and name, on the quality axes)
    fit: Fit | None
    refusal: str | None

    @property
    def label(self) -> str:
        return ", ".join(
            f"{axis.rsplit('.', 1)[-1]}={_format.value(v)}" for axis, v in self.key.items()
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "points": self.points.to_dict(orient="records"),
            "fit": None if self.fit is None else self.fit.to_dict(),
            "refusal": self.refusal,
        }


@dataclass(frozen=True, eq=False)
class JointFit:
    """The Chinchilla-form fit over the whole model × data grid, per value of any extra axes."""

    key: dict[str, Any]
    fit: Fit | None
    refusal: str | None
    observed: pd.DataFrame  # the trials it was fitted on: N, D, error

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "fit": None if self.fit is None else self.fit.to_dict(),
            "refusal": self.refusal,
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


def _quality(table: Table) -> pd.DataFrame:
    ok = table.ok
    return ok[ok[WORKERS] == table.reference_workers]


def model_axis(table: Table) -> tuple[list[Curve], str | None]:
    """Error against non-embedding parameters, one curve per data fraction (× extra axes)."""
    return _axis(
        _quality(table),
        x="params_non_embedding",
        name=MODEL,
        series=[DATA, *table.extra_axes],
        variable="N",
    )


def data_axis(table: Table) -> tuple[list[Curve], str | None]:
    """Error against training examples, one curve per model (× extra axes)."""
    return _axis(
        _quality(table),
        x="train_examples",
        name=DATA,
        series=[MODEL, *table.extra_axes],
        variable="D",
    )


def _axis(
    quality: pd.DataFrame, *, x: str, name: str, series: list[str], variable: str
) -> tuple[list[Curve], str | None]:
    swept = quality[name].unique()
    if len(swept) < 2:
        only = _format.value(_format.plain(swept[0]))
        return [], f"{name} was not swept (one value: {only}); no curve"
    curves = []
    for key, group in groups(quality, series):
        points = (
            group.groupby(x)
            .agg(
                name=(name, "first"),
                mean=("error_value", "mean"),
                std=("error_value", "std"),
                n=("error_value", "size"),
            )
            .reset_index()
            .rename(columns={x: "x"})
        )
        fit, refusal = None, None
        try:
            fit = fit_power_law(group[x], group["error_value"], variable=variable)
        except AnalysisError as error:
            refusal = str(error)
        curves.append(Curve(key=key, points=points, fit=fit, refusal=refusal))
    return curves, None


def joint_fits(table: Table) -> list[JointFit]:
    """``E(N, D) = E + A/N^alpha + B/D^beta`` for each value of the extra axes."""
    fits = []
    for key, group in groups(_quality(table), list(table.extra_axes)):
        observed = pd.DataFrame(
            {
                "N": group["params_non_embedding"],
                "D": group["train_examples"],
                "error": group["error_value"],
            }
        )
        fit, refusal = None, None
        try:
            fit = fit_joint_power_law(observed["N"], observed["D"], observed["error"])
        except AnalysisError as error:
            refusal = f"joint fit: {error}"
        fits.append(JointFit(key=key, fit=fit, refusal=refusal, observed=observed))
    return fits
