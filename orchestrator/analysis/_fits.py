"""Scaling-law fits: saturating power laws in N or D, the joint Chinchilla form, Amdahl's law.

Every fit is bounded least squares (``scipy.optimize.least_squares``) started from the best
point of a coarse exponent grid. For fixed exponents a power law is linear in its coefficients,
so on the grid non-negative least squares solves them exactly: a single hand-picked start gets
trapped on the flat valleys these laws have. x is divided by its geometric mean during the solve
so that every coefficient is of order one. Confidence intervals are bootstrap percentiles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares, nnls

from orchestrator.analysis._errors import AnalysisError

__all__ = ["Fit", "FitKind", "fit_amdahl", "fit_joint_power_law", "fit_power_law"]

MIN_DISTINCT = 3  # fewer distinct x values than this and a 3-parameter law is not identified
N_BOOT = 200
_BOOT_NFEV = 50
_EXPONENT_MAX = 4.0
_EXPONENT_GRID = np.geomspace(0.02, 3.0, 16)
# Coefficient and exponent names of E(x) = E_inf + C·x^(-k), for each variable.
_POWER_NAMES = {"N": ("A", "alpha"), "D": ("B", "beta")}


class FitKind(StrEnum):
    POWER_LAW = "power_law"
    JOINT = "joint_power_law"
    AMDAHL = "amdahl"


@dataclass(frozen=True)
class Fit:
    """A fitted law: its constants, 95 % bootstrap intervals and goodness of fit."""

    kind: FitKind
    variables: tuple[str, ...]  # ("N",), ("D",), ("N", "D") or ("w",)
    form: str  # the law in words, e.g. "E(N) = E_inf + A·N^(-alpha)"
    params: dict[str, float]
    ci95: dict[str, tuple[float, float]] | None  # None when a bootstrap would say nothing
    r2: float  # on the scale the law was fitted on (log speed-up for Amdahl)
    n_points: int
    n_distinct: int
    resampling: str  # how the bootstrap resampled
    notes: tuple[str, ...] = ()
    reference_workers: int = 1  # Amdahl only: the speed-up is relative to this worker count

    def predict(self, *x: ArrayLike) -> np.ndarray:
        p = self.params
        if self.kind is FitKind.POWER_LAW:
            coef, exponent = _POWER_NAMES[self.variables[0]]
            return _power_law(np.array([p["E_inf"], p[coef], p[exponent]]), np.asarray(x[0]))
        if self.kind is FitKind.JOINT:
            vector = np.array([p["E"], p["A"], p["alpha"], p["B"], p["beta"]])
            return _joint(vector, np.asarray(x[0]), np.asarray(x[1]))
        return _amdahl(np.array([p["s"]]), np.asarray(x[0]), self.reference_workers)

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
            "notes": list(self.notes),
        }


def _power_law(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p[0] + p[1] * x ** -p[2]


def _joint(p: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return p[0] + p[1] * n ** -p[2] + p[3] * d ** -p[4]


def _amdahl(p: np.ndarray, w: np.ndarray, w0: float) -> np.ndarray:
    def time(workers: Any) -> Any:
        return p[0] + (1.0 - p[0]) / workers

    return time(w0) / time(w)


def fit_power_law(
    x: ArrayLike, y: ArrayLike, *, variable: str = "N", n_boot: int = N_BOOT, seed: int = 0
) -> Fit:
    """Fit ``E(x) = E_inf + C·x^(-k)`` (C, k = A, alpha for N; B, beta for D).

    ``x`` and ``y`` hold one point per trial (repeated x values are seeds): fitting every
    trial rather than seed means lets the residuals carry the seed noise into the intervals.
    """
    coef, exponent = _POWER_NAMES[variable]
    xs, y = _clean((x,), y, name=variable)
    x0 = _geometric_mean(xs[0])
    scaled = xs[0] / x0

    def design(k: tuple[float, ...]) -> np.ndarray:
        return np.column_stack([np.ones(y.size), scaled ** -k[0]])

    return _fit(
        kind=FitKind.POWER_LAW,
        variables=(variable,),
        form=f"E({variable}) = E_inf + {coef}·{variable}^(-{exponent})",
        names=("E_inf", coef, exponent),
        model=lambda p: _power_law(p, scaled),
        start=lambda yy: _grid_start(design, yy, 1),
        lower=[0.0, 0.0, 0.0],
        upper=[np.inf, np.inf, _EXPONENT_MAX],
        terms=((1, 2),),
        # The solve ran on x/x0: C·(x/x0)^-k = (C·x0^k)·x^-k.
        to_public=lambda p: np.array([p[0], p[1] * x0 ** p[2], p[2]]),
        n_distinct=len(np.unique(scaled)),
        y=y,
        n_boot=n_boot,
        seed=seed,
    )


def fit_joint_power_law(
    n: ArrayLike, d: ArrayLike, y: ArrayLike, *, n_boot: int = N_BOOT, seed: int = 0
) -> Fit:
    """Fit the Chinchilla form ``E(N, D) = E + A/N^alpha + B/D^beta`` over a model × data grid."""
    (n, d), y = _clean((n, d), y, name="N")
    _require_distinct(d, "D")
    cells = np.unique(np.column_stack([n, d]), axis=0)
    if len(cells) <= 5:
        raise AnalysisError(
            f"the joint fit has 5 constants and needs more than 5 (N, D) cells, got {len(cells)}"
        )
    n0, d0 = _geometric_mean(n), _geometric_mean(d)
    ns, ds = n / n0, d / d0

    def design(k: tuple[float, ...]) -> np.ndarray:
        return np.column_stack([np.ones(y.size), ns ** -k[0], ds ** -k[1]])

    def start(yy: np.ndarray) -> np.ndarray:
        e, a, b, alpha, beta = _grid_start(design, yy, 2)
        return np.array([e, a, alpha, b, beta])

    return _fit(
        kind=FitKind.JOINT,
        variables=("N", "D"),
        form="E(N, D) = E + A/N^alpha + B/D^beta",
        names=("E", "A", "alpha", "B", "beta"),
        model=lambda p: _joint(p, ns, ds),
        start=start,
        lower=[0.0, 0.0, 0.0, 0.0, 0.0],
        upper=[np.inf, np.inf, _EXPONENT_MAX, np.inf, _EXPONENT_MAX],
        terms=((1, 2), (3, 4)),
        to_public=lambda p: np.array([p[0], p[1] * n0 ** p[2], p[2], p[3] * d0 ** p[4], p[4]]),
        n_distinct=len(cells),
        y=y,
        n_boot=n_boot,
        seed=seed,
    )


def fit_amdahl(
    workers: ArrayLike,
    speedup: ArrayLike,
    *,
    reference_workers: int = 1,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> Fit:
    """Fit Amdahl's law to speed-ups ``T(w0)/T(w)``: ``S(w) = (s + (1-s)/w0) / (s + (1-s)/w)``.

    ``s`` is the serial fraction of the run on one worker; with ``w0 = 1`` this is the textbook
    ``1 / (s + (1-s)/w)``. Speed-ups are measured, so ``s`` may absorb communication costs that
    grow with ``w``: read it as "the fraction that did not parallelise", not a property of code.
    """
    (w,), y = _clean((workers,), speedup, name="worker")
    n_distinct = len(np.unique(w))
    # S(w0) = 1 by construction: those points carry no information, and their zero residuals
    # would shrink the bootstrap's estimate of the noise.
    measured = w != reference_workers
    # Timing noise is multiplicative, so residuals are taken on log speed-ups, where it is even.
    w, y = w[measured], np.log(y[measured])

    def model(p: np.ndarray) -> np.ndarray:
        return np.log(_amdahl(p, w, reference_workers))

    def start(yy: np.ndarray) -> np.ndarray:
        grid = np.linspace(0.0, 1.0, 101)
        rss = [np.sum((model(np.array([s])) - yy) ** 2) for s in grid]
        return np.array([grid[int(np.argmin(rss))]])

    fit = _fit(
        kind=FitKind.AMDAHL,
        variables=("w",),
        form="S(w) = T(w0)/T(w) = (s + (1-s)/w0) / (s + (1-s)/w), fitted on log S",
        names=("s",),
        model=model,
        start=start,
        lower=[0.0],
        upper=[1.0],
        terms=(),
        to_public=lambda p: p,
        n_distinct=n_distinct,
        y=y,
        n_boot=n_boot,
        seed=seed,
    )
    return replace(fit, reference_workers=reference_workers)


def _clean(
    xs: Sequence[ArrayLike], y: ArrayLike, *, name: str
) -> tuple[list[np.ndarray], np.ndarray]:
    """Drop non-finite points; refuse when what is left cannot identify a 3-constant law."""
    arrays = [np.asarray(x, dtype=float) for x in xs]
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(y) & np.all([np.isfinite(x) & (x > 0) for x in arrays], axis=0)
    arrays, y = [x[keep] for x in arrays], y[keep]
    _require_distinct(arrays[0], name)
    if np.ptp(y) == 0:
        raise AnalysisError(f"the error is {y[0]:.4g} at every point; there is no trend to fit")
    return arrays, y


def _require_distinct(x: np.ndarray, name: str) -> None:
    distinct = np.unique(x)
    if len(distinct) < MIN_DISTINCT:
        shown = ", ".join(f"{v:.4g}" for v in distinct) or "none"
        raise AnalysisError(
            f"too few points to fit: {len(distinct)} distinct {name} value(s) ({shown}); "
            f"a fit needs at least {MIN_DISTINCT}"
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


def _fit(
    *,
    kind: FitKind,
    variables: tuple[str, ...],
    form: str,
    names: tuple[str, ...],
    model: Callable[[np.ndarray], np.ndarray],
    start: Callable[[np.ndarray], np.ndarray],
    lower: list[float],
    upper: list[float],
    terms: tuple[tuple[int, int], ...],  # (coefficient, exponent) index pairs of C·x^-k
    to_public: Callable[[np.ndarray], np.ndarray],
    n_distinct: int,
    y: np.ndarray,
    n_boot: int,
    seed: int,
) -> Fit:
    """Solve, score and bootstrap one law; the shared part of every ``fit_*``."""
    bounds = (np.array(lower), np.array(upper))

    def solve(yy: np.ndarray, p0: np.ndarray, max_nfev: int | None = None) -> np.ndarray:
        p0 = np.clip(p0, *bounds)
        fit = least_squares(
            lambda p: model(p) - yy, p0, bounds=bounds, method="trf", max_nfev=max_nfev
        )
        return fit.x

    p_hat = solve(y, start(y))
    fitted = model(p_hat)
    spread = np.sum((y - y.mean()) ** 2)
    r2 = 1.0 - np.sum((y - fitted) ** 2) / spread if spread > 0 else math.nan

    notes = []
    for c, k in terms:
        # Coefficients are O(1) on the scaled x, so a tiny one means the term is absent.
        if p_hat[c] < 1e-6 * np.ptp(y):
            notes.append(
                f"{names[c]} ≈ 0: the error does not fall along this axis here, so "
                f"{names[k]} is undetermined"
            )
        elif p_hat[k] <= 1e-6 or p_hat[k] >= upper[k] - 1e-6:
            notes.append(
                f"{names[k]} sits at its bound ({p_hat[k]:.3g}): the curve is flat or too steep "
                "over this range to pin an exponent down"
            )
    if n_distinct <= len(names):
        notes.append(
            f"{n_distinct} distinct points for {len(names)} constants: the curve passes through "
            "the seed means, so R² only measures seed noise"
        )

    # Residual bootstrap: resample the pooled residuals onto the fitted curve and refit. With
    # the two or three seeds a sweep affords, resampling seeds within each point would mostly
    # redraw the same seed and understate the noise. The residuals are inflated by
    # sqrt(n / (n - p)) because a fit with p constants leaves them smaller than the noise.
    ci95, resampling = None, "none: no more points than constants, so no noise estimate"
    if y.size > len(names):
        resampling = f"{n_boot} resamples of the residuals"
        residuals = (y - fitted) * np.sqrt(y.size / (y.size - len(names)))
        rng = np.random.default_rng(seed)
        draws = np.array(
            [
                # Started at the estimate, a well-posed refit converges in a few evaluations;
                # the cap only bites along flat, undetermined directions, and saves seconds there.
                to_public(solve(fitted + rng.choice(residuals, y.size), p_hat, _BOOT_NFEV))
                for _ in range(n_boot)
            ]
        )
        low, high = np.percentile(draws, [2.5, 97.5], axis=0)
        ci95 = {n: (float(lo), float(hi)) for n, lo, hi in zip(names, low, high, strict=True)}

    return Fit(
        kind=kind,
        variables=variables,
        form=form,
        params={n: float(v) for n, v in zip(names, to_public(p_hat), strict=True)},
        ci95=ci95,
        r2=float(r2),
        n_points=int(y.size),
        n_distinct=n_distinct,
        resampling=resampling,
        notes=tuple(notes),
    )
