"""The fits recover the constants of laws they are given, flag what they cannot trust, and
refuse what they cannot fit; their intervals cover the truth about as often as they claim."""

from __future__ import annotations

import math

import numpy as np
import pytest

from orchestrator.analysis import (
    AnalysisError,
    FitKind,
    _fits,
    fit_amdahl,
    fit_joint_power_law,
    fit_power_law,
    leave_largest_out,
)

SEEDS = 3
JOINT = {"E": 0.05, "A": 20.0, "alpha": 0.3, "B": 3.0, "beta": 0.4}


def joint_truth(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    return JOINT["E"] + JOINT["A"] * n ** -JOINT["alpha"] + JOINT["B"] * d ** -JOINT["beta"]


def joint_grid(size: int, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """A size × size model × data grid, each cell repeated once per seed."""
    n, d = np.meshgrid(np.geomspace(4e5, 1e8, size), np.geomspace(1e3, 1e5, size))
    return np.repeat(n.ravel(), seeds), np.repeat(d.ravel(), seeds)


def amdahl_times(
    workers: list[int], seeds: int, rng: np.random.Generator, serial: float = 0.1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times of ``seeds`` seeds at each worker count: 1 % noise per trial, and each seed 5 %
    faster or slower at every worker count (its own data order and subset)."""
    w = np.tile(workers, seeds)
    seed = np.repeat(np.arange(seeds), len(workers))
    seed_factor = np.exp(rng.normal(0.0, 0.05, seeds))[seed]
    times = 100.0 * (serial + (1 - serial) / w) * seed_factor * np.exp(rng.normal(0, 0.01, w.size))
    return w, times, seed


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
    w, times, seed = amdahl_times([1, 2, 4, 8, 16], SEEDS, np.random.default_rng(1), serial=0.15)
    keep = w >= reference_workers
    fit = fit_amdahl(w[keep], times[keep], seeds=seed[keep], reference_workers=reference_workers)

    assert fit.params["s"] == pytest.approx(0.15, abs=0.02)
    assert fit.ci95["s"][0] < 0.15 < fit.ci95["s"][1]
    assert fit.predict(np.array([reference_workers]))[0] == pytest.approx(1.0)
    assert fit.r2 > 0.99


def test_amdahl_from_two_worker_counts_pins_the_serial_fraction() -> None:
    # One shape parameter: 1 and 2 workers identify it (each seed's T1 is the other constant).
    w, times, seed = amdahl_times([1, 2], SEEDS, np.random.default_rng(3), serial=0.3)
    fit = fit_amdahl(w, times, seeds=seed)
    assert fit.params["s"] == pytest.approx(0.3, abs=0.03)
    assert fit.ci95["s"][0] < 0.3 < fit.ci95["s"][1]
    one_seed = fit_amdahl([1, 2], [10.0, 6.5])  # exact: 6.5 / 10 = s + (1 - s) / 2
    assert one_seed.params["s"] == pytest.approx(0.3, abs=1e-6)


def test_amdahl_is_not_fooled_by_a_seed_that_is_slower_at_every_worker_count() -> None:
    w, times, seed = amdahl_times([1, 2, 4, 8], SEEDS, np.random.default_rng(2))
    slow = times * np.where(seed == 0, 1.3, 1.0)  # seed 0's subset has longer sequences
    fit = fit_amdahl(w, slow, seeds=seed)
    assert fit.params["s"] == pytest.approx(0.1, abs=0.01)
    assert fit.outliers == ()


def test_a_diverged_trial_is_flagged_and_does_not_move_the_exponents() -> None:
    """108 trials (6 × 6 cells × 3 seeds), one of them diverged to chance (error 0.5)."""
    n, d = joint_grid(6, SEEDS)
    error = joint_truth(n, d) + np.random.default_rng(3).normal(0.0, 0.003, n.size)
    diverged = 40
    error[diverged] = 0.5
    fit = fit_joint_power_law(n, d, error)

    assert fit.params["alpha"] == pytest.approx(JOINT["alpha"], abs=0.05)
    assert fit.params["beta"] == pytest.approx(JOINT["beta"], abs=0.05)
    assert [position for position, _ in fit.outliers] == [diverged]
    assert fit.loss == "huber" and fit.noise.startswith("seed spread")
    assert any("1 outlying point" in note for note in fit.notes)
    # The single-axis law along the diverged trial's data size sees it too.
    along = d == d[diverged]
    axis = fit_power_law(n[along], error[along])
    assert axis.params["alpha"] == pytest.approx(JOINT["alpha"], abs=0.05)
    assert [position for position, _ in axis.outliers] == [
        int(np.flatnonzero(along).tolist().index(diverged))
    ]


def test_clean_data_flags_no_outlier() -> None:
    n, d = joint_grid(6, SEEDS)
    error = joint_truth(n, d) + np.random.default_rng(4).normal(0.0, 0.003, n.size)
    assert fit_joint_power_law(n, d, error, n_boot=0).outliers == ()


def test_a_constant_at_its_bound_is_flagged() -> None:
    # No irreducible error: E_inf is pinned at 0, which the fit cannot tell from a small floor.
    n = np.repeat(np.geomspace(4e5, 3e8, 6), SEEDS)
    fit = fit_power_law(
        n, 20.0 * n**-0.3 * np.exp(np.random.default_rng(5).normal(0, 0.01, n.size))
    )
    assert "E_inf" in fit.at_bound
    assert any(note.startswith("E_inf sits at its lower bound") for note in fit.notes)
    assert fit.params["alpha"] == pytest.approx(0.3, abs=0.02)


def test_a_solver_that_stops_early_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    real = _fits.least_squares
    monkeypatch.setattr(_fits, "least_squares", lambda *a, **kw: real(*a, **kw | {"max_nfev": 1}))
    n = np.repeat(np.geomspace(4e5, 3e8, 6), SEEDS)
    fit = fit_power_law(n, 0.08 + 20.0 * n**-0.3, n_boot=0)
    assert not fit.converged
    assert any("did not converge" in note for note in fit.notes)


def test_a_negative_r2_is_noted() -> None:
    notes, _ = _fits._notes(
        names=("s",),
        p_hat=np.array([0.5]),
        bounds=(np.array([0.0]), np.array([1.0])),
        terms=(),
        log_y=np.log([1.0, 2.0, 3.0]),
        r2=-0.4,
        n_distinct=3,
        converged=True,
        solver_message="",
    )
    assert notes == ["R² = -0.40 < 0: the law fits worse than a constant; do not read it"]


def test_leave_largest_out_predicts_the_held_out_size() -> None:
    n = np.repeat(np.geomspace(4e5, 3e8, 6), SEEDS)
    error = 0.08 + 20.0 * n**-0.3 + np.random.default_rng(6).normal(0.0, 0.002, n.size)
    check = leave_largest_out(fit_power_law, [n], error, axis=0)
    assert check["held_out"] == "N" and check["value"] == pytest.approx(3e8)
    assert check["mean_abs_relative_error"] < 0.05

    nj, dj = joint_grid(5, 2)
    noisy = joint_truth(nj, dj) + np.random.default_rng(7).normal(0.0, 0.002, nj.size)
    for axis, name in ((0, "N"), (1, "D")):
        check = leave_largest_out(fit_joint_power_law, [nj, dj], noisy, axis=axis)
        assert check["held_out"] == name and len(check["cells"]) == 5
        assert check["mean_abs_relative_error"] < 0.1


def test_interval_coverage_is_near_nominal() -> None:
    """Fixed seed, a few dozen synthetic sweeps: how often the 95 % intervals hold the truth.

    Amdahl with 3 seeds × 4 worker counts and seed-level timing noise (a residual bootstrap of
    speed-ups covered 0.65–0.75 here); the joint law on a 4 × 4 grid with 2 seeds.
    """
    rng = np.random.default_rng(8)
    runs = 40
    amdahl = 0
    for run in range(runs):
        w, times, seed = amdahl_times([1, 2, 4, 8], 3, rng)
        low, high = fit_amdahl(w, times, seeds=seed, n_boot=100, seed=run).ci95["s"]
        amdahl += low <= 0.1 <= high
    n, d = joint_grid(4, 2)
    joint = np.zeros(2)
    for run in range(runs // 2):
        fit = fit_joint_power_law(
            n, d, joint_truth(n, d) + rng.normal(0, 0.003, n.size), n_boot=100, seed=run
        )
        joint += [fit.ci95[k][0] <= JOINT[k] <= fit.ci95[k][1] for k in ("alpha", "beta")]
    assert amdahl / runs >= 0.85
    assert (joint / (runs // 2) >= 0.85).all()


def test_too_few_distinct_points_is_refused_with_a_clear_message() -> None:
    with pytest.raises(AnalysisError, match=r"too few points to fit: 2 distinct N value"):
        fit_power_law([1e6, 1e6, 4e6, 4e6], [0.3, 0.31, 0.2, 0.21])
    with pytest.raises(AnalysisError, match=r"2 distinct D value"):
        fit_joint_power_law([1e6, 2e6, 4e6] * 2, [1e3] * 3 + [1e4] * 3, [0.5, 0.4, 0.3] * 2)
    with pytest.raises(AnalysisError, match=r"1 distinct worker value.*at least 2"):
        fit_amdahl([2, 2, 2], [5.5, 5.4, 5.6])


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


def test_one_pair_of_seeds_is_not_a_noise_scale() -> None:
    """The quickstart's shape: a 3 × 3 grid on one seed, one cell with a second seed that
    agreed to 0.001. Taken as the noise, that pair would make the other cells outliers."""
    n, d = joint_grid(3, 1)
    error = joint_truth(n, d) + np.random.default_rng(4).normal(0.0, 0.01, n.size)
    n, d = np.append(n, n[4]), np.append(d, d[4])
    error = np.append(error, error[4] + 0.001)
    fit = fit_joint_power_law(n, d, error)
    assert not fit.noise.startswith("seed spread")
    assert fit.outliers == () and fit.ci95 is not None  # 10 points, 5 constants


def test_the_band_holds_the_fit_and_exists_only_with_an_interval() -> None:
    n, d = joint_grid(6, SEEDS)
    along = d == d.max()
    error = joint_truth(n, d) + np.random.default_rng(5).normal(0.0, 0.003, n.size)
    fit = fit_power_law(n[along], error[along])
    x = np.geomspace(n.min(), n.max(), 20)
    low, high = fit.band(x)
    assert np.all(low <= fit.predict(x) + 1e-12) and np.all(fit.predict(x) <= high + 1e-12)
    assert np.all(high > low)
    # As many points as constants: no residuals to resample, no interval, no band.
    exact = fit_power_law([1e5, 1e6, 1e7], [0.5, 0.4, 0.35])
    assert exact.ci95 is None and exact.band(x) is None
