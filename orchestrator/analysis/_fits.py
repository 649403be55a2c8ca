"""Scaling-law fits: saturating power laws in N or D, the joint Chinchilla form, Amdahl's law.

Every fit is bounded, robust least squares (``scipy.optimize.least_squares``, Huber loss) on log
residuals, started from the best point of a coarse exponent grid. For fixed exponents a power
law is linear in its coefficients, so on the grid non-negative least squares solves them
exactly: a single hand-picked start gets trapped on the flat valleys these laws have. x is
divided by its geometric mean during the solve so that every coefficient is of order one.

Residuals are divided by the seed noise (the spread of repeated seeds of a point), so the
Huber loss is quadratic within noise and linear beyond it: one diverged trial pulls the fit by
a bounded amount, and is flagged. Confidence intervals are bootstrap percentiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares, nnls
from scipy.special import ndtri

from orchestrator.analysis._errors import AnalysisError

__all__ = [
    "Fit",
    "FitKind",
    "fit_amdahl",
    "fit_joint_power_law",
    "fit_power_law",
    "leave_largest_out",
]

MIN_DISTINCT = 3  # fewer distinct x values than this and a 3-parameter law is not identified
# Amdahl's law has one shape parameter (s) besides each seed's T1: two worker counts identify it.
MIN_DISTINCT_WORKERS = 2
N_BOOT = 200
_BOOT_NFEV = 50
_EXPONENT_MAX = 4.0
_EXPONENT_GRID = np.geomspace(0.02, 3.0, 16)
# Coefficient and exponent names of E(x) = E_inf + C·x^(-k), for each variable.
_POWER_NAMES = {"N": ("A", "alpha"), "D": ("B", "beta")}
# Huber's constant in noise units: 95 % efficient on Gaussian noise, a bounded pull beyond it.
_HUBER = 1.345
_MAD = 1.4826  # median absolute deviation -> standard deviation, for Gaussian noise
# A point is an outlier beyond this many noise units, or beyond the Bonferroni bound that keeps
# the chance of flagging any point of a clean fit under _OUTLIER_FAMILY_RATE, if that is higher.
_OUTLIER_Z = 4.0
_OUTLIER_FAMILY_RATE = 0.01
# Noise measured from the residuals (no seeds, or residuals wider than the seeds) needs plenty
# to spare: a median absolute deviation over a handful of residuals is a poor scale, since a
# law with as many constants as half the points passes nearly through several of them, and the
# others then look like outliers (the quickstart's joint fit: 10 points, 5 constants).
_MIN_DOF_FOR_RESIDUAL_SCALE = 10
# Seed noise measured from fewer repeats than this (sum over cells of seeds - 1) is a guess:
# one pair of seeds that agreed to 0.001 would make every other point an outlier.
_MIN_SEED_DOF = 3
_LACK_OF_FIT = 2.0  # residuals this many times the seed noise: the law misses the data
_TINY = 1e-12


class FitKind(StrEnum):
    POWER_LAW = "power_law"
    JOINT = "joint_power_law"
    AMDAHL = "amdahl"


@dataclass(frozen=True)
class Fit:
    """A fitted law: its constants, 95 % bootstrap intervals, goodness of fit and warnings."""

    kind: FitKind
    variables: tuple[str, ...]  # ("N",), ("D",), ("N", "D") or ("w",)
    form: str  # the law in words, e.g. "E(N) = E_inf + A·N^(-alpha)"
    params: dict[str, float]
    ci95: dict[str, tuple[float, float]] | None  # None when a bootstrap would say nothing
    r2: float  # on the scale the law was fitted on (log error; log time within a seed)
    n_points: int
    n_distinct: int
    resampling: str  # how the bootstrap resampled
    notes: tuple[str, ...] = ()
    reference_workers: int = 1  # Amdahl only: the speed-up is relative to this worker count
    # Points the robust loss flagged: (position in the caller's arrays, residual in noise units).
    outliers: tuple[tuple[int, float], ...] = ()
    at_bound: tuple[str, ...] = ()  # constants stuck at a bound of their range
    converged: bool = True
    loss: str = "huber"  # "huber", or "linear" (plain least squares) when no noise scale exists
    noise: str = ""  # where the residuals' scale came from
    # Bootstrap draws of ``params`` (one row per resample), for quantities derived from the law.
    draws: np.ndarray | None = field(default=None, repr=False, compare=False)

    def predict(self, *x: ArrayLike) -> np.ndarray:
        return self._predict(self.params, *x)

    def band(self, *x: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
        """The 95 % band of the law at ``x``, from the bootstrap draws (None without them)."""
        if self.draws is None or not len(self.draws):
            return None
        curves = np.array(
            [self._predict(dict(zip(self.params, row, strict=True)), *x) for row in self.draws]
        )
        low, high = np.nanpercentile(curves, [2.5, 97.5], axis=0)
        return low, high

    def _predict(self, p: dict[str, float], *x: ArrayLike) -> np.ndarray:
        if self.kind is FitKind.POWER_LAW:
            coef, exponent = _POWER_NAMES[self.variables[0]]
            return _power_law(np.array([p["E_inf"], p[coef], p[exponent]]), np.asarray(x[0]))
        if self.kind is FitKind.JOINT:
            vector = np.array([p["E"], p["A"], p["alpha"], p["B"], p["beta"]])
            return _joint(vector, np.asarray(x[0]), np.asarray(x[1]))
        g = _amdahl_time(p["s"], np.asarray(x[0], dtype=float))
        return _amdahl_time(p["s"], self.reference_workers) / g

    def equation(self) -> str:
        """The fitted law with its numbers, short enough for a plot legend."""
        p = self.params
        if self.kind is FitKind.POWER_LAW:
            symbol = self.variables[0]
            coef, exponent = _POWER_NAMES[symbol]
            return f"E = {p['E_inf']:.3g} + {p[coef]:.3g}·{symbol}^-{p[exponent]:.3g}"
        if self.kind is FitKind.JOINT:
            return (
                f"E = {p['E']:.3g} + {p['A']:.3g}/N^{p['alpha']:.3g} "
                f"+ {p['B']:.3g}/D^{p['beta']:.3g}"
            )
        return f"Amdahl serial fraction s = {p['s']:.3g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "form": self.form,
            "equation": self.equation(),
            "params": self.params,
            "ci95": None if self.ci95 is None else {k: list(v) for k, v in self.ci95.items()},
            "r2": self.r2,
            "n_points": self.n_points,
            "n_distinct": self.n_distinct,
            "resampling": self.resampling,
            "loss": self.loss,
            "noise": self.noise,
            "converged": self.converged,
            "at_bound": list(self.at_bound),
            "n_outliers": len(self.outliers),
            "notes": list(self.notes),
        }


def _power_law(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] + p[1] * x ** -p[2]


def _joint(p: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return p[0] + p[1] * n ** -p[2] + p[3] * d ** -p[4]


def _amdahl_time(s: Any, workers: Any) -> Any:
    """Time on ``workers`` as a fraction of the time on one: s + (1 - s)/w."""
    return s + (1.0 - s) / workers


def _log(values: np.ndarray) -> np.ndarray:
    # A law whose terms all vanish predicts 0; the floor keeps its log finite for the solver.
    return np.log(np.maximum(values, _TINY))


def _log_jacobian(value: np.ndarray, terms: list[tuple[float, float, np.ndarray]]) -> np.ndarray:
    """d log(E + Σ C·x^-k) / d(E, C1, k1, C2, k2, ...): exact, and ~2.5× faster to fit with
    than finite differences, which the bootstrap's hundreds of refits notice."""
    inverse = 1.0 / np.maximum(value, _TINY)
    columns = [inverse]
    for coefficient, exponent, x in terms:
        power = x**-exponent
        columns += [power * inverse, -coefficient * power * np.log(x) * inverse]
    return np.column_stack(columns)


def fit_power_law(
    x: ArrayLike, y: ArrayLike, *, variable: str = "N", n_boot: int = N_BOOT, seed: int = 0
) -> Fit:
    """Fit ``E(x) = E_inf + C·x^(-k)`` (C, k = A, alpha for N; B, beta for D).

    ``x`` and ``y`` hold one point per trial (repeated x values are seeds): fitting every
    trial rather than seed means gives the seed noise that scales the robust loss, and lets the
    residuals carry that noise into the intervals.
    """
    coef, exponent = _POWER_NAMES[variable]
    (xs,), y, keep, dropped = _clean((x,), y, name=variable)
    x0 = _geometric_mean(xs)
    scaled = xs / x0

    def design(k: tuple[float, ...]) -> np.ndarray:
        return np.column_stack([np.ones(y.size), scaled ** -k[0]])

    return _fit(
        kind=FitKind.POWER_LAW,
        variables=(variable,),
        form=f"E({variable}) = E_inf + {coef}·{variable}^(-{exponent})",
        names=("E_inf", coef, exponent),
        model=lambda p: _log(_power_law(p, scaled)),
        jacobian=lambda p: _log_jacobian(_power_law(p, scaled), [(p[1], p[2], scaled)]),
        start=lambda log_y: _grid_start(design, np.exp(log_y), 1),
        lower=[0.0, 0.0, 0.0],
        upper=[np.inf, np.inf, _EXPONENT_MAX],
        terms=((1, 2),),
        # The solve ran on x/x0: C·(x/x0)^-k = (C·x0^k)·x^-k.
        to_public=lambda p: np.array([p[0], p[1] * x0 ** p[2], p[2]]),
        n_distinct=len(np.unique(scaled)),
        log_y=np.log(y),
        cells=xs[:, None],
        groups=None,
        index=np.flatnonzero(keep),
        dropped=dropped,
        n_boot=n_boot,
        seed=seed,
    )


def fit_joint_power_law(
    n: ArrayLike, d: ArrayLike, y: ArrayLike, *, n_boot: int = N_BOOT, seed: int = 0
) -> Fit:
    """Fit the Chinchilla form ``E(N, D) = E + A/N^alpha + B/D^beta`` over a model × data grid."""
    (n, d), y, keep, dropped = _clean((n, d), y, name="N")
    _require_distinct(d, "D")
    cells = np.column_stack([n, d])
    n_cells = len(np.unique(cells, axis=0))
    if n_cells <= 5:
        raise AnalysisError(
            f"the joint fit has 5 constants and needs more than 5 (N, D) cells, got {n_cells}"
        )
    n0, d0 = _geometric_mean(n), _geometric_mean(d)
    ns, ds = n / n0, d / d0

    def design(k: tuple[float, ...]) -> np.ndarray:
        return np.column_stack([np.ones(y.size), ns ** -k[0], ds ** -k[1]])

    def start(log_y: np.ndarray) -> np.ndarray:
        e, a, b, alpha, beta = _grid_start(design, np.exp(log_y), 2)
        return np.array([e, a, alpha, b, beta])

    return _fit(
        kind=FitKind.JOINT,
        variables=("N", "D"),
        form="E(N, D) = E + A/N^alpha + B/D^beta",
        names=("E", "A", "alpha", "B", "beta"),
        model=lambda p: _log(_joint(p, ns, ds)),
        jacobian=lambda p: _log_jacobian(_joint(p, ns, ds), [(p[1], p[2], ns), (p[3], p[4], ds)]),
        start=start,
        lower=[0.0, 0.0, 0.0, 0.0, 0.0],
        upper=[np.inf, np.inf, _EXPONENT_MAX, np.inf, _EXPONENT_MAX],
        terms=((1, 2), (3, 4)),
        to_public=lambda p: np.array([p[0], p[1] * n0 ** p[2], p[2], p[3] * d0 ** p[4], p[4]]),
        n_distinct=n_cells,
        log_y=np.log(y),
        cells=cells,
        groups=None,
        index=np.flatnonzero(keep),
        dropped=dropped,
        n_boot=n_boot,
        seed=seed,
    )


def fit_amdahl(
    workers: ArrayLike,
    times: ArrayLike,
    *,
    seeds: ArrayLike | None = None,
    reference_workers: int = 1,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Fit:
    """Fit Amdahl's law to measured times: ``T(w) = T1_seed · (s + (1-s)/w)``.

    ``s`` is the serial fraction of the run on one worker. Each seed has its own one-worker
    time ``T1``: a seed's trials share its data order and subset, so they are faster or slower
    together, and a speed-up ``T(w0)/T(w)`` would carry that seed's ``T(w0)`` into every one
    of its points. Fitted on log times, the seed's share drops out exactly and what is left
    is independent per trial. The reported speed-up is ``S(w) = T(w0)/T(w)``; ``s`` may absorb
    communication costs that grow with ``w``: read it as "the fraction that did not
    parallelise", not a property of the code.
    """
    (w,), t, keep, _ = _clean(
        (workers,), times, name="worker", what="time", minimum=MIN_DISTINCT_WORKERS
    )
    seed_ids = np.zeros(w.size, int) if seeds is None else np.asarray(seeds)[keep]
    _, seed_ids = np.unique(seed_ids, return_inverse=True)
    # A seed with one trial fits its own T1 exactly and says nothing about s.
    informative = np.bincount(seed_ids)[seed_ids] >= 2
    w, t, index = w[informative], t[informative], np.flatnonzero(keep)[informative]
    _require_distinct(w, "worker", MIN_DISTINCT_WORKERS)
    _, seed_ids = np.unique(seed_ids[informative], return_inverse=True)
    n_seeds = int(seed_ids.max()) + 1
    log_t = np.log(t)

    def model(p: np.ndarray) -> np.ndarray:
        return p[1:][seed_ids] + np.log(_amdahl_time(p[0], w))

    def jacobian(p: np.ndarray) -> np.ndarray:
        columns = np.zeros((w.size, 1 + n_seeds))
        columns[:, 0] = (1.0 - 1.0 / w) / _amdahl_time(p[0], w)
        columns[np.arange(w.size), 1 + seed_ids] = 1.0
        return columns

    def offsets(s: float, log_y: np.ndarray) -> np.ndarray:
        """Each seed's log T1 that best fits ``log_y`` for a given s: the mean gap."""
        gap = log_y - np.log(_amdahl_time(s, w))
        return np.bincount(seed_ids, gap) / np.bincount(seed_ids)

    def start(log_y: np.ndarray) -> np.ndarray:
        def rss(s: float) -> float:
            return float(np.sum((model(np.array([s, *offsets(s, log_y)])) - log_y) ** 2))

        best = min(np.linspace(0.0, 1.0, 101), key=rss)
        return np.array([best, *offsets(best, log_y)])

    fit = _fit(
        kind=FitKind.AMDAHL,
        variables=("w",),
        form="T(w) = T1·(s + (1-s)/w), one T1 per seed, fitted on log T; "
        "S(w) = T(w0)/T(w) = (s + (1-s)/w0) / (s + (1-s)/w)",
        names=("s",),
        model=model,
        jacobian=jacobian,
        start=start,
        lower=[0.0] + [-np.inf] * n_seeds,
        upper=[1.0] + [np.inf] * n_seeds,
        terms=(),
        to_public=lambda p: p[:1],
        n_distinct=len(np.unique(w)),
        log_y=log_t,
        cells=None,
        groups=seed_ids,
        index=index,
        dropped=0,
        n_boot=n_boot,
        seed=seed,
    )
    return replace(fit, reference_workers=reference_workers)


def leave_largest_out(
    law: Callable[..., Fit], xs: Sequence[ArrayLike], y: ArrayLike, *, axis: int
) -> dict[str, Any]:
    """Refit ``law`` without the largest value of ``xs[axis]`` and predict the points left out.

    R² says how well a law runs through the points it was fitted on; this says how well it
    extrapolates one step, which is what a scaling law is used for. Raises ``AnalysisError``
    when what is left cannot be fitted.
    """
    arrays = [np.asarray(x, dtype=float) for x in xs]
    y = np.asarray(y, dtype=float)
    largest = np.nanmax(arrays[axis])
    held = arrays[axis] == largest
    fit = law(*(x[~held] for x in arrays), y[~held], n_boot=0)
    cells = np.unique(np.column_stack([x[held] for x in arrays]), axis=0)
    rows = []
    for cell in cells:
        at = held & np.all([x == v for x, v in zip(arrays, cell, strict=True)], axis=0)
        # The median of the seeds: one diverged seed must not decide the verdict.
        observed = float(np.nanmedian(y[at]))
        predicted = float(fit.predict(*cell)[()])
        rows.append(
            {"x": [float(v) for v in cell], "predicted": predicted, "observed": observed}
            | {"relative_error": (predicted - observed) / observed if observed else math.nan}
        )
    errors = [abs(r["relative_error"]) for r in rows]
    return {
        "held_out": fit.variables[axis],
        "value": float(largest),
        "cells": rows,
        "mean_abs_relative_error": float(np.mean(errors)),
    }


def _clean(
    xs: Sequence[ArrayLike],
    y: ArrayLike,
    *,
    name: str,
    what: str = "error",
    minimum: int = MIN_DISTINCT,
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, int]:
    """Keep finite, positive points; refuse when what is left cannot identify the law.

    Returns the arrays, y, the mask of kept points and how many were dropped for a y ≤ 0
    (laws are fitted on log y, which a perfect score does not have).
    """
    arrays = [np.asarray(x, dtype=float) for x in xs]
    y = np.asarray(y, dtype=float)
    finite = np.isfinite(y) & np.all([np.isfinite(x) & (x > 0) for x in arrays], axis=0)
    keep = finite & (y > 0)
    arrays, kept = [x[keep] for x in arrays], y[keep]
    _require_distinct(arrays[0], name, minimum)
    if np.ptp(kept) == 0:
        raise AnalysisError(f"the {what} is {kept[0]:.4g} at every point; there is no trend to fit")
    return arrays, kept, keep, int((finite & ~keep).sum())


def _require_distinct(x: np.ndarray, name: str, minimum: int = MIN_DISTINCT) -> None:
    distinct = np.unique(x)
    if len(distinct) < minimum:
        shown = ", ".join(f"{v:.4g}" for v in distinct) or "none"
        raise AnalysisError(
            f"too few points to fit: {len(distinct)} distinct {name} value(s) ({shown}); "
            f"a fit needs at least {minimum}"
        )


def _geometric_mean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(np.unique(x)))))


def _grid_start(
    design: Callable[[tuple[float, ...]], np.ndarray],
    y: np.ndarray,
    n_exponents: int,
) -> np.ndarray:
    """The best (coefficients, exponents) over the exponent grid, coefficients by NNLS."""
    best: tuple[float, np.ndarray, tuple[float, ...]] | None = None
    for k in itertools.product(_EXPONENT_GRID, repeat=n_exponents):
        coefs, rnorm = nnls(design(k), y)
        if best is None or rnorm < best[0]:
            best = (rnorm, coefs, k)
    assert best is not None
    return np.array([*best[1], *best[2]])


def _seed_noise(cells: np.ndarray | None, log_y: np.ndarray) -> np.ndarray | None:
    """Per point, the seed noise of its log error, from the spread of repeated (seed) points.

    Seed noise may be even in the metric's units (accuracy on a fixed eval set) or in
    proportion (loss); each is measured robustly (median absolute deviation from the cell
    mean, so one diverged seed does not inflate it) and each point gets the larger of the two,
    so that neither kind makes clean points look like outliers. None without repeated points
    when the repeats are too few to measure it (``_MIN_SEED_DOF``), or when every seed agreed
    exactly.
    """
    if cells is None:
        return None
    _, cell, counts = np.unique(cells, axis=0, return_inverse=True, return_counts=True)
    cell = cell.ravel()
    repeated = counts[cell] >= 2
    if int(np.sum(counts - 1)) < _MIN_SEED_DOF:
        return None
    y = np.exp(log_y)
    # Deviations from a mean of k points are smaller than the noise by sqrt((k-1)/k).
    inflate = np.sqrt(counts[cell] / np.maximum(counts[cell] - 1, 1))[repeated]

    def spread(values: np.ndarray) -> float:
        centre = np.bincount(cell, values) / counts
        return _MAD * float(np.median(np.abs(values - centre[cell])[repeated] * inflate))

    relative, absolute = spread(log_y), spread(y)
    if relative <= 0 and absolute <= 0:
        return None
    level = np.array([np.median(y[cell == c]) for c in range(len(counts))])[cell]
    return np.maximum(relative, absolute / level)


def _fit(
    *,
    kind: FitKind,
    variables: tuple[str, ...],
    form: str,
    names: tuple[str, ...],
    model: Callable[[np.ndarray], np.ndarray],
    jacobian: Callable[[np.ndarray], np.ndarray],
    start: Callable[[np.ndarray], np.ndarray],
    lower: list[float],
    upper: list[float],
    terms: tuple[tuple[int, int], ...],  # (coefficient, exponent) index pairs of C·x^-k
    to_public: Callable[[np.ndarray], np.ndarray],
    n_distinct: int,
    log_y: np.ndarray,
    cells: np.ndarray | None,  # the x of each point, to measure seed noise; None: no seeds
    groups: np.ndarray | None,  # what R² compares with: a mean per group (None: one mean)
    index: np.ndarray,  # each point's position in the caller's arrays
    dropped: int,
    n_boot: int,
    seed: int,
) -> Fit:
    """Solve, score and bootstrap one law; the shared part of every ``fit_*``.

    ``model`` predicts log y from the solver's parameter vector: the public constants (maybe
    rescaled) first, then any nuisance ones (Amdahl's per-seed T1); ``jacobian`` is its
    derivative with respect to that vector.
    """
    bounds = (np.array(lower), np.array(upper))
    n, n_params = log_y.size, len(lower)
    dof = n - n_params

    def solve(yy: np.ndarray, p0: np.ndarray, scale: np.ndarray, loss: str, nfev: int | None):
        return least_squares(
            lambda p: (model(p) - yy) / scale,
            np.clip(p0, *bounds),
            jac=lambda p: jacobian(p) / scale[:, None],
            bounds=bounds,
            method="trf",
            loss=loss,
            f_scale=_HUBER,
            max_nfev=nfev,
        )

    # The noise scale: the seeds' spread where points repeat, else the fit's own residuals.
    seed_noise = _seed_noise(cells, log_y)
    noise = "seed spread" if seed_noise is not None else "residuals"
    scale = seed_noise if seed_noise is not None else np.ones(n)
    first = solve(log_y, start(log_y), scale, "huber" if seed_noise is not None else "linear", None)
    loss, lack_of_fit = "huber", 1.0
    if dof > 0:
        z = (log_y - model(first.x)) / scale
        lack_of_fit = _MAD * float(np.median(np.abs(z))) * math.sqrt(n / dof)
    if seed_noise is not None:
        # Residuals beyond the seed noise everywhere are a law that misses, not outliers.
        lack_of_fit = max(lack_of_fit, 1.0)
    elif dof < _MIN_DOF_FOR_RESIDUAL_SCALE or lack_of_fit <= 0:
        loss, noise, lack_of_fit = "linear", "none: too few points to estimate it", 1.0
    scale = scale * lack_of_fit
    result = solve(log_y, first.x, scale, loss, None) if loss == "huber" else first
    p_hat = result.x
    converged = bool(result.success and result.status > 0)
    fitted = model(p_hat)
    z = (log_y - fitted) / scale
    threshold = max(_OUTLIER_Z, float(ndtri(1 - _OUTLIER_FAMILY_RATE / (2 * n))))
    flagged = np.flatnonzero(np.abs(z) > threshold) if loss == "huber" else np.array([], int)
    inliers = np.ones(n, bool)
    inliers[flagged] = False
    r2 = _r2(log_y[inliers], fitted[inliers], None if groups is None else groups[inliers])

    notes, at_bound = _notes(
        names=names,
        p_hat=p_hat,
        bounds=bounds,
        terms=terms,
        log_y=log_y,
        r2=r2,
        n_distinct=n_distinct,
        converged=converged,
        solver_message=str(result.message),
    )
    if dropped:
        notes.append(f"{dropped} point(s) with an error ≤ 0 left out: the fit is on log error")
    if flagged.size:
        notes.append(
            f"{flagged.size} outlying point(s) beyond {threshold:.1f}× the noise: the robust "
            "loss limits their pull, and R² leaves them out"
        )
    if seed_noise is not None and lack_of_fit > _LACK_OF_FIT:
        notes.append(
            f"residuals are {lack_of_fit:.1f}× the seed noise: the law misses the data by more "
            "than seeds explain, so read its intervals as optimistic"
        )

    ci95, draws = None, None
    resampling = "none: no more points than constants, so no noise estimate"
    if n_boot == 0:
        resampling = "none (not asked for)"
    elif dof > 0:
        # Residual bootstrap in noise units: resample the standardized residuals onto the fitted
        # curve and refit. With the two or three seeds a sweep affords, resampling whole seeds
        # would mostly redraw the same seed and understate the noise (Amdahl's seeds are dealt
        # with by their own T1 instead). A fit with p constants leaves residuals smaller than
        # the noise by sqrt((n - p) / n); and with few residuals the noise estimate is itself
        # uncertain, so each resample draws its level from the chi-square distribution, which
        # widens the intervals as Student's t widens a normal one.
        resampling = (
            f"{n_boot} resamples of the residuals, noise level drawn per resample "
            f"({dof} degrees of freedom)"
        )
        residuals = z * math.sqrt(n / dof)
        rng = np.random.default_rng(seed)
        rows = []
        for _ in range(n_boot):
            level = math.sqrt(dof / rng.chisquare(dof))
            resample = fitted + scale * level * rng.choice(residuals, n)
            # Started at the estimate, a well-posed refit converges in a few evaluations; the
            # cap only bites along flat, undetermined directions, and saves seconds there.
            rows.append(to_public(solve(resample, p_hat, scale, loss, _BOOT_NFEV).x))
        draws = np.array(rows)
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
        ci95 = {n: (float(lo), float(hi)) for n, lo, hi in zip(names, low, high, strict=True)}

    if loss == "huber" and lack_of_fit > 1:
        noise += f" × {lack_of_fit:.2g} (residuals wider than the seeds)"
    return Fit(
        kind=kind,
        variables=variables,
        form=form,
        params={n: float(v) for n, v in zip(names, to_public(p_hat), strict=True)},
        ci95=ci95,
        r2=float(r2),
        n_points=n,
        n_distinct=n_distinct,
        resampling=resampling,
        notes=tuple(notes),
        outliers=tuple((int(index[i]), float(z[i])) for i in flagged),
        at_bound=tuple(at_bound),
        converged=converged,
        loss=loss,
        noise=noise,
        draws=draws,
    )


def _r2(log_y: np.ndarray, fitted: np.ndarray, groups: np.ndarray | None) -> float:
    """1 - RSS / (spread about the mean, or about each group's mean: Amdahl's seeds)."""
    if groups is None:
        centre = np.full(log_y.size, log_y.mean())
    else:
        centre = (np.bincount(groups, log_y) / np.maximum(np.bincount(groups), 1))[groups]
    spread = np.sum((log_y - centre) ** 2)
    return 1.0 - np.sum((log_y - fitted) ** 2) / spread if spread > 0 else math.nan


def _notes(
    *,
    names: tuple[str, ...],
    p_hat: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray],
    terms: tuple[tuple[int, int], ...],
    log_y: np.ndarray,
    r2: float,
    n_distinct: int,
    converged: bool,
    solver_message: str,
) -> tuple[list[str], list[str]]:
    """What a reader must know before trusting the constants, and which sit at a bound."""
    notes, at_bound = [], []
    absent = set()
    for c, k in terms:
        # Coefficients are O(1) on the scaled x, so a tiny one means the term is absent.
        if p_hat[c] < 1e-6 * max(float(np.ptp(np.exp(log_y))), _TINY):
            absent |= {c, k}
            at_bound.append(names[c])
            notes.append(
                f"{names[c]} ≈ 0: the error does not fall along this axis here, so "
                f"{names[k]} is undetermined"
            )
    for i, name in enumerate(names):
        if i in absent:
            continue
        low, high = bounds[0][i], bounds[1][i]
        if np.isfinite(low) and p_hat[i] <= low + 1e-6 * max(1.0, abs(low)):
            side = "lower"
        elif np.isfinite(high) and p_hat[i] >= high - 1e-6 * max(1.0, abs(high)):
            side = "upper"
        else:
            continue
        at_bound.append(name)
        notes.append(
            f"{name} sits at its {side} bound ({p_hat[i]:.3g}): "
            + _AT_BOUND.get(name, "the data do not pin it down inside its range")
        )
    if n_distinct <= len(names):
        notes.append(
            f"{n_distinct} distinct points for {len(names)} constants: the curve passes through "
            "the seed means, so R² only measures seed noise"
        )
    if not converged:
        notes.append(f"the solver did not converge ({solver_message}): do not read the constants")
    if math.isfinite(r2) and r2 < 0:
        notes.append(f"R² = {r2:.2f} < 0: the law fits worse than a constant; do not read it")
    return notes, at_bound


_AT_BOUND = {
    "E_inf": "no error floor is visible over this range, so the fit cannot tell one from 0",
    "E": "no error floor is visible over this range, so the fit cannot tell one from 0",
    "alpha": "the curve is flat or too steep over this range to pin an exponent down",
    "beta": "the curve is flat or too steep over this range to pin an exponent down",
    "s": "at 0 the runs parallelised perfectly within noise; at 1 more workers bought nothing",
}
