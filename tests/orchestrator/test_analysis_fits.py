"""The fits recover the constants of laws they are given, and refuse what they cannot fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.analysis import (
    AnalysisError,
    FitKind,
    fit_amdahl,
    fit_joint_power_law,
    fit_power_law,
)

SEEDS = 3


def _noisy(truth: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(0.0, sigma, truth.size)


def test_power_law_recovers_exponent_and_constants() -> None:
    n = np.repeat(np.geomspace(4e5, 3e8, 6), SEEDS)
    fit = fit_power_law(n, _noisy(0.08 + 20.0 * n**-0.3, 0.002), variable="N")

    assert fit.kind is FitKind.POWER_LAW
    assert set(fit.params) == {"E_inf", "A", "alpha"}
    assert fit.params["alpha"] == pytest.approx(0.3, abs=0.03)
    assert fit.params["E_inf"] == pytest.approx(0.08, abs=0.01)
    assert fit.params["A"] == pytest.approx(20.0, rel=0.4)
    assert fit.r2 > 0.99
    low, high = fit.ci95["alpha"]
    assert low < 0.3 < high and high - low < 0.1
    assert fit.n_points == 6 * SEEDS and fit.n_distinct == 6
    assert fit.predict(np.array([1e6]))[0] == pytest.approx(0.08 + 20.0 * 1e6**-0.3, abs=0.005)


def test_data_power_law_names_its_constants_b_and_beta() -> None:
    d = np.repeat(np.geomspace(500, 50_000, 5), SEEDS)
    fit = fit_power_law(d, _noisy(0.1 + 3.0 * d**-0.5, 0.002), variable="D")

    assert set(fit.params) == {"E_inf", "B", "beta"}
    assert fit.params["beta"] == pytest.approx(0.5, abs=0.05)
    assert fit.params["E_inf"] == pytest.approx(0.1, abs=0.01)
    assert "D^-" in fit.equation()


def test_joint_fit_recovers_its_constants() -> None:
    n, d = np.meshgrid(np.geomspace(4e5, 1e8, 4), np.geomspace(1e3, 1e5, 4))
    n, d = np.repeat(n.ravel(), 2), np.repeat(d.ravel(), 2)
    truth = 0.05 + 20.0 * n**-0.3 + 3.0 * d**-0.4
    fit = fit_joint_power_law(n, d, _noisy(truth, 0.002))

    assert fit.params["alpha"] == pytest.approx(0.3, abs=0.03)
    assert fit.params["beta"] == pytest.approx(0.4, abs=0.04)
    assert fit.params["E"] == pytest.approx(0.05, abs=0.01)
    assert fit.params["A"] == pytest.approx(20.0, rel=0.3)
    assert fit.params["B"] == pytest.approx(3.0, rel=0.3)
    assert fit.r2 > 0.99
    assert fit.ci95 is not None and set(fit.ci95) == set(fit.params)


@pytest.mark.parametrize("reference_workers", [1, 2])
def test_amdahl_recovers_serial_fraction(reference_workers: int) -> None:
    w = np.repeat([1, 2, 4, 8, 16], SEEDS)
    w = w[w >= reference_workers]

    def time(workers: np.ndarray) -> np.ndarray:
        return 0.15 + 0.85 / workers

    speedup = time(reference_workers) / time(w)
    speedup *= 1 + np.random.default_rng(1).normal(0.0, 0.01, w.size)
    fit = fit_amdahl(w, speedup, reference_workers=reference_workers)

    assert fit.params["s"] == pytest.approx(0.15, abs=0.02)
    assert fit.ci95["s"][0] < 0.15 < fit.ci95["s"][1]
    assert fit.predict(np.array([reference_workers]))[0] == pytest.approx(1.0)


def test_too_few_distinct_points_is_refused_with_a_clear_message() -> None:
    with pytest.raises(AnalysisError, match=r"too few points to fit: 2 distinct N value"):
        fit_power_law([1e6, 1e6, 4e6, 4e6], [0.3, 0.31, 0.2, 0.21])
    with pytest.raises(AnalysisError, match=r"2 distinct D value"):
        fit_joint_power_law([1e6, 2e6, 4e6] * 2, [1e3] * 3 + [1e4] * 3, [0.5, 0.4, 0.3] * 2)
    with pytest.raises(AnalysisError, match=r"2 distinct worker value"):
        fit_amdahl([1, 2, 2], [1.0, 1.8, 1.9])


def test_joint_fit_needs_more_cells_than_constants() -> None:
    # 3 models and 3 fractions, but only 5 of the 9 cells: 5 constants are not identified.
    n = [1e6, 2e6, 4e6, 1e6, 1e6]
    d = [1e3, 1e3, 1e3, 3e3, 1e4]
    with pytest.raises(AnalysisError, match=r"more than 5 \(N, D\) cells, got 5"):
        fit_joint_power_law(n, d, [0.5, 0.4, 0.3, 0.45, 0.4])


def test_degenerate_data_is_refused_or_fitted_without_crashing() -> None:
    with pytest.raises(AnalysisError, match="no trend to fit"):
        fit_power_law([1e5, 1e6, 1e7], [0.3, 0.3, 0.3])
    # Non-finite errors (a diverged trial) are dropped, not propagated.
    fit = fit_power_law([1e5, 1e6, 1e7, 1e8, 1e9], [0.5, math.nan, 0.3, 0.25, 0.22])
    assert fit.n_points == 4
    # Error that grows with size (overfitting) has no decreasing power law: the exponent is
    # pinned at a bound, said in a note, and nothing is NaN.
    fit = fit_power_law([1e5, 1e6, 1e7, 1e8], [0.2, 0.25, 0.3, 0.35])
    assert all(math.isfinite(v) for v in fit.params.values())
    assert fit.params["A"] == pytest.approx(0.0, abs=1e-6) or fit.notes


def test_exact_interpolation_is_noted_and_one_seed_per_point_has_no_interval() -> None:
    fit = fit_power_law([1e5, 1e6, 1e7], [0.5, 0.35, 0.3])
    assert fit.ci95 is None
    assert any("3 distinct points for 3 constants" in note for note in fit.notes)
