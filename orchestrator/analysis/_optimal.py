"""Compute-optimal allocation from the joint law: how big a model, how much data, for a budget.

With ``E(N, D) = E + A/N^alpha + B/D^beta`` and a training cost ``C = k·N·D`` FLOPs (``k`` =
6 × tokens per example × epochs, the table's ``flops`` formula), minimising E along ``N·D =
C/k`` gives (Hoffmann et al. 2022, eq. 4)::

    N*(C) = G · (C/k)^(beta/(alpha+beta)),  D*(C) = (C/k) / N*,
    G = (alpha·A / (beta·B))^(1/(alpha+beta))

Intervals come from applying the same formula to every bootstrap draw of the joint fit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orchestrator.analysis import _format
from orchestrator.analysis._curves import JointFit, key_label
from orchestrator.analysis._table import DATA, Table

__all__ = ["compute_optimal", "describe"]


def compute_optimal(table: Table, joint: list[JointFit], budget: float) -> dict[str, Any]:
    """N*, D* and the error they reach for ``budget`` FLOPs, per joint fit, with 95 % intervals."""
    ok = table.ok
    # FLOPs per (parameter × example): what one more example costs per parameter, as trained.
    per_nd = float(np.median(ok["flops"] / (ok["params_non_embedding"] * ok["train_examples"])))
    full_examples = float(np.median(ok["train_examples"] / ok[DATA]))
    return {
        "flops_budget": budget,
        "flops_formula": "C = 6 × N_non-embedding × examples × tokens per example × epochs "
        f"= {per_nd:.4g} × N × D in this sweep",
        "allocations": [
            _allocation(table, j, budget / per_nd, full_examples) | {"key": j.key} for j in joint
        ],
    }


def _optimum(p: np.ndarray, nd: float) -> tuple[float, float, float]:
    """(N*, D*, E*) for N·D = nd under constants p = (E, A, alpha, B, beta); NaN if degenerate."""
    e, a, alpha, b, beta = p
    if min(a, alpha, b, beta) <= 0:
        return (np.nan, np.nan, np.nan)
    # In logs: the constants of real fits span many decades, and their ratio would overflow.
    log_n = (np.log(alpha * a) - np.log(beta * b) + beta * np.log(nd)) / (alpha + beta)
    n = float(np.exp(log_n))
    d = nd / n
    return n, d, float(e + a * n**-alpha + b * d**-beta)


def _allocation(table: Table, joint: JointFit, nd: float, full_examples: float) -> dict:
    fit = joint.fit
    if fit is None:
        return {"refusal": joint.refusal}
    p = fit.params
    vector = np.array([p["E"], p["A"], p["alpha"], p["B"], p["beta"]])
    n, d, e = _optimum(vector, nd)
    if not np.isfinite(n):
        return {
            "refusal": "the joint fit has no model-size or no data term (a constant or exponent "
            "is 0), so there is no trade-off between them to optimise"
        }
    out: dict[str, Any] = {
        "params": n,
        "examples": d,
        "data_fraction": d / full_examples,
        "error": e,
        "metric": float(table.metric.error(e)),  # 1 − x is its own inverse; loss is itself
        # How the optimum moves with the budget: N* ∝ C^a, D* ∝ C^b, a + b = 1.
        "params_exponent": p["beta"] / (p["alpha"] + p["beta"]),
        "examples_exponent": p["alpha"] / (p["alpha"] + p["beta"]),
        "notes": [],
    }
    if fit.draws is not None:
        draws = np.array([_optimum(row, nd) for row in fit.draws])
        usable = np.isfinite(draws[:, 0])
        low, high = np.percentile(draws[usable], [2.5, 97.5], axis=0)
        for i, name in enumerate(("params", "examples", "error")):
            out[f"{name}_ci95"] = [float(low[i]), float(high[i])]
        if not usable.all():
            out["notes"].append(
                f"{(~usable).sum()} of {usable.size} bootstrap fits lost a term and were left out"
            )
    observed = joint.observed
    for name, value, column, unit in (
        ("N*", n, "N", "non-embedding params"),
        ("D*", d, "D", "examples"),
    ):
        low, high = observed[column].min(), observed[column].max()
        if not low <= value <= high:
            out["notes"].append(
                f"{name} = {_format.count(value)} {unit} lies outside the swept "
                f"{_format.count(low)}–{_format.count(high)}: an extrapolation of the law"
            )
    if d > full_examples:
        out["notes"].append(
            f"D* is {d / full_examples:.3g}× the task's training set: more data than there is "
            "(repeat epochs, or spend the budget on a larger model)"
        )
    return out


def describe(allocation: dict[str, Any], budget: float, error_label: str) -> str:
    """One line for the report and the terminal."""
    where = f" ({key_label(allocation['key'])})" if allocation["key"] else ""
    if "refusal" in allocation:
        return f"Compute-optimal allocation{where}: none ({allocation['refusal']})"

    def interval(name: str) -> str:
        ci = allocation.get(f"{name}_ci95")
        return f" [{_format.count(ci[0])}, {_format.count(ci[1])}]" if ci else ""

    text = (
        f"Compute-optimal allocation{where} for {_format.count(budget)} FLOPs: "
        f"N* = {_format.count(allocation['params'])}"
        f"{interval('params')} non-embedding params, D* = "
        f"{_format.count(allocation['examples'])}{interval('examples')} examples "
        f"({_format.fraction(allocation['data_fraction'])} of the training set), predicted "
        f"{error_label} {allocation['error']:.4g}; N* ∝ C^{allocation['params_exponent']:.2f}, "
        f"D* ∝ C^{allocation['examples_exponent']:.2f}"
    )
    return text + "".join(f"; {note}" for note in allocation["notes"])
