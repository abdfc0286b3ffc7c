"""The convergence-rate study: the exponent fit, the noise floor, one run per curve, the job's outputs."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from sdfm.data.cache import save_prepared
from sdfm.data.registry import build_dataset
from sdfm.ot import fit_potential
from sdfm.ot.chi2 import chi2_unbiased
from sdfm.studies.convergence import (_curve, chi2_noise_floor, convergence_study, fit_exponent, fit_exponents,
                                         log_spaced_steps, study_settings)
from sdfm.studies.convergence_report import write_convergence_report


def test_the_exponent_of_exact_power_laws_is_recovered_exactly():
    k = np.array([16, 32, 64, 128, 256, 512])
    fit = fit_exponent(np.tile(k, 3), np.concatenate([c * k ** -0.5 for c in (2.0, 3.0, 5.0)]), np.repeat([0, 1, 2], 6))
    assert fit["b"] == pytest.approx(-0.5, abs=1e-12) and fit["se"] == pytest.approx(0, abs=1e-12)
    assert fit["ci_low"] == pytest.approx(-0.5, abs=1e-10) and fit["ci_high"] == pytest.approx(-0.5, abs=1e-10)
    assert fit["a"] == pytest.approx(np.mean(np.log([2.0, 3.0, 5.0])), abs=1e-12)
    one = fit_exponent(k, 0.7 * k ** -1.3)
    assert one["b"] == pytest.approx(-1.3, abs=1e-12) and one["n_seeds"] == 1


@pytest.mark.parametrize("seeds", [1, 6])
def test_the_interval_covers_the_exponent_under_noise(seeds):
    rng = np.random.default_rng(0)
    k = np.geomspace(16, 4096, 9)
    covered = 0
    for trial in range(40):
        chi2 = np.concatenate([3.0 * k ** -0.5 * np.exp(0.1 * rng.standard_normal(len(k))) for _ in range(seeds)])
        fit = fit_exponent(np.tile(k, seeds), chi2, np.repeat(np.arange(seeds), len(k)))
        assert abs(fit["b"] + 0.5) < 0.15
        covered += fit["ci_low"] <= -0.5 <= fit["ci_high"]
    assert covered >= 34  # nominal 95% of 40 = 38


def test_the_window_drops_early_steps_and_the_noise_floor():
    k = np.array([8, 16, 32, 64, 128, 256, 512])
    rows = [{"dataset": "d", "solver": "s", "n_points": 100, "batch_size": 8, "epsilon": 0.0, "seed": s, "step": kk,
             "chi2": max(10.0 * kk ** -1.0, 0.02) * (1 + 0.01 * s), "chi2_floor": 0.01} for s in (0, 1) for kk in k]
    fits = fit_exponents(pd.DataFrame(rows), fit_from=16, floor_factor=3.0)  # 10/K > 0.03 for K <= 256
    fit = fits.iloc[0]
    assert (fit.k_min, fit.k_max, fit.n_steps) == (16, 256, 5)
    assert fit.b == pytest.approx(-1.0, abs=1e-9) and fit.n_points == 100


def test_the_noise_floor_is_the_spread_of_the_estimate_at_the_optimum():
    n, m, reps = 40, 200, 4000
    gen = torch.Generator().manual_seed(0)
    b = torch.full((n,), 1.0 / n, dtype=torch.float64)
    draws = []
    for _ in range(reps):  # exact samples of the optimal coupling: every cell has mass 1/n
        counts = torch.bincount(torch.randint(n, (m,), generator=gen), minlength=n).double()
        draws.append(chi2_unbiased(counts, counts, m, b))
    assert abs(np.mean(draws)) < 3 * chi2_noise_floor(n, m) / math.sqrt(reps)  # unbiased
    assert np.std(draws) == pytest.approx(chi2_noise_floor(n, m), rel=0.05)


def test_log_spaced_steps_and_the_grid():
    assert log_spaced_steps(16, 1024, 7) == [16, 32, 64, 128, 256, 512, 1024]
    assert log_spaced_steps(1, 3, 10) == [1, 2, 3] and log_spaced_steps(5, 50, 1) == [50]
    grid = {"n_points": [1, 2, 3], "batch_sizes": [10, 20], "centre": None}
    assert len(study_settings(grid)) == 6
    assert study_settings({**grid, "centre": {"n_points": 2, "batch_size": 20}}) == [(1, 20), (2, 10), (2, 20), (3, 20)]


@pytest.mark.parametrize("solver", [{"momentum": 0.0, "averaging": "polyak", "lr_scale": 0.5}, {}])
def test_a_curve_is_one_run_stopped_and_resumed(tmp_path, solver):
    """chi^2 at K = 20, 40, 60 by stop-checkpoint-resume equals one run evaluated every 20 steps."""
    y = torch.randn(150, 2, generator=torch.Generator().manual_seed(1))
    settings = {"eval_batch": 512}
    curve = _curve(y, 0.0, 32, 3, [20, 40, 60], settings, solver, None, tmp_path)
    whole = fit_potential(y, epsilon=0.0, steps=60, batch_size=32, seed=3, eval_every=20, eval_batch=512, burn_in=0.0,
                          progress=False, **solver)
    assert [k for k, _, _ in curve] == whole.history["step"] == [20, 40, 60]
    assert [c for _, c, _ in curve] == pytest.approx(whole.history["chi2"], rel=1e-12, abs=1e-15)
    assert not list(tmp_path.iterdir())  # the checkpoint is gone


def test_the_study_writes_its_rows_figure_and_section(tmp_path):
    save_prepared(build_dataset("checkerboard", n_train=400, n_test=20), tmp_path / "data.npz")
    settings = {"n_points": [100, 300], "batch_sizes": [16, 64], "centre": {"n_points": 300, "batch_size": 64},
                "epsilons": [0.0, 0.01], "steps": 40, "first_eval": 5, "eval_points": 4, "eval_batch": 2048,
                "seeds": [0, 1], "fit_from": 5, "solvers": {"theory": {"momentum": 0.0, "averaging": "polyak"}}}
    table = convergence_study(tmp_path / "data.npz", "checkerboard", settings, tmp_path / "chi2.csv", progress=False)
    saved = pd.read_csv(tmp_path / "chi2.csv")
    assert len(saved) == len(table) == 3 * 2 * 2 * 4  # (N, B) on the axes x eps x seeds x K
    assert set(saved.step) == {5, 10, 20, 40} and set(zip(saved.n_points, saved.batch_size)) == {(100, 64), (300, 16),
                                                                                                 (300, 64)}
    assert list(saved.columns[:9]) == ["dataset", "solver", "n_points", "batch_size", "epsilon", "epsilon_abs", "seed",
                                       "step", "chi2"]
    assert (saved[saved.epsilon == 0].epsilon_abs == 0).all() and (saved[saved.epsilon > 0].epsilon_abs > 0).all()
    assert saved.groupby(["solver", "n_points", "batch_size", "epsilon", "seed"]).seconds.is_monotonic_increasing.all()
    reports = tmp_path / "reports"
    write_convergence_report(tmp_path / "chi2.csv", reports / "figures" / "study_convergence.png",
                             tmp_path / "section.md", tmp_path / "fits.csv", reports, fit_from=5)
    assert (reports / "figures" / "study_convergence.png").stat().st_size > 0
    assert (reports / "figures" / "study_convergence.pdf").exists()
    fits = pd.read_csv(tmp_path / "fits.csv")
    assert len(fits) == 3 * 2 and set(fits.solver) == {"theory"}
    section = (tmp_path / "section.md").read_text()
    assert "![convergence](figures/study_convergence.png)" in section
    assert section.count("\n| theory |") == 6
