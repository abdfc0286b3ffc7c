"""The sd of the chi^2 estimator and the stopping rule, against a potential whose marginal is exact.

In 1-D the cells of ``argmax_j x y_j + g_j`` are intervals between crossings of the lines
``x -> x y_j + g_j``; their N(0, 1) masses, hence chi^2, are exact (:func:`exact_marginal_1d`).
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from sdfm.ot import fit_potential
from sdfm.ot.chi2 import chi2_confidence, chi2_from_moments, chi2_moments, chi2_plugin, chi2_sd_at_optimum
from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores
from sdfm.ot.solver import SolverConfig, eval_batch_for, next_check


def exact_marginal_1d(y: np.ndarray, g: np.ndarray) -> np.ndarray:
    """N(0, 1) mass of each cell of ``argmax_j x y_j + g_j`` (lines crossing at finitely many points)."""
    n = len(y)
    cross = [(g[k] - g[j]) / (y[j] - y[k]) for j in range(n) for k in range(j + 1, n) if y[j] != y[k]]
    edges = np.concatenate([[-np.inf], np.sort(cross), [np.inf]])
    mass = np.zeros(n)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        probe = (lo + hi) / 2 if np.isfinite(lo) and np.isfinite(hi) else (hi - 1 if np.isfinite(hi) else lo + 1)
        if not np.isfinite(probe):
            probe = 0.0
        mass[np.argmax(probe * y + g)] += norm.cdf(hi) - norm.cdf(lo)
    return mass


def _optimal_g(y: np.ndarray) -> np.ndarray:
    q = norm.ppf(np.arange(1, len(y)) / len(y))
    return np.concatenate([[0.0], np.cumsum(-q * np.diff(y))])


def _problem(n=20, perturb=0.012, seed=0):
    rng = np.random.default_rng(seed)
    y = np.sort(rng.standard_normal(n) * 2)
    g = _optimal_g(y) + perturb * rng.standard_normal(n) * np.diff(y).mean()
    return y, g


def test_exact_marginal_of_the_optimal_potential_is_uniform():
    y, _ = _problem()
    np.testing.assert_allclose(exact_marginal_1d(y, _optimal_g(y)), np.full(len(y), 1 / len(y)), atol=1e-12)


def _replicates(y, g, eps, n_rep, m, seed):
    keys = augment_keys(torch.tensor(y[:, None]), torch.tensor(g), eps)
    gen = torch.Generator().manual_seed(seed)
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    out = []
    for _ in range(n_rep):
        red = reduce_scores(augment_queries(torch.randn(m, 1, generator=gen, dtype=torch.float64)), keys, eps,
                            need_mass_cube=True)
        out.append(chi2_confidence(red.mass, red.mass_sq, red.mass_cube, m, b))
    return out


def test_hard_estimate_is_unbiased_and_its_sd_is_the_u_statistic_formula():
    y, g = _problem()
    m_exact = exact_marginal_1d(y, g)
    b = np.full(len(y), 1 / len(y))
    chi2 = chi2_plugin(torch.tensor(m_exact), torch.tensor(b))
    assert 0.03 < chi2 < 0.5
    reps = _replicates(y, g, 0.0, n_rep=400, m=2000, seed=1)
    values = np.array([r.value for r in reps])
    # the formula at the exact marginal (one-hot rows: the bound is exact)
    a, q2, q3 = (m_exact**2 / b).sum(), (m_exact**2 / b**2).sum(), (m_exact**3 / b**2).sum()
    predicted = chi2_from_moments(torch.tensor([a, q2, q3]), 2000).sd
    empirical = values.std(ddof=1)
    assert abs(values.mean() - chi2) < 4 * empirical / math.sqrt(len(values))
    assert empirical == pytest.approx(predicted, rel=0.15)
    # the plug-in sd of each replicate estimates it too; the upper bound covers the truth
    assert np.mean([r.sd for r in reps]) == pytest.approx(predicted, rel=0.1)
    assert np.mean([r.upper(2.0) < chi2 for r in reps]) < 0.06
    assert np.mean([r.value < chi2 for r in reps]) > 0.3  # a point estimate alone is below the truth often


def test_sd_near_the_optimum_is_sqrt_2n_over_m():
    y, _ = _problem(n=30)
    reps = _replicates(y, _optimal_g(y), 0.0, n_rep=300, m=1500, seed=2)
    empirical = np.std([r.value for r in reps], ddof=1)
    assert empirical == pytest.approx(chi2_sd_at_optimum(30, 1500), rel=0.15)


def test_soft_sd_bound_is_conservative():
    y, g = _problem(perturb=0.01, seed=3)
    reps = _replicates(y, g, 0.4, n_rep=300, m=600, seed=4)
    empirical = np.std([r.value for r in reps], ddof=1)
    bound = np.mean([r.sd for r in reps])
    assert empirical <= 1.1 * bound


def test_pooled_column_sums_are_one_batch():
    y, g = _problem()
    keys = augment_keys(torch.tensor(y[:, None]), torch.tensor(g))
    x = torch.randn(3000, 1, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    b = torch.full((len(y),), 1.0 / len(y), dtype=torch.float64)
    whole = reduce_scores(augment_queries(x), keys, 0.0, need_mass_cube=True)
    parts = [reduce_scores(augment_queries(part), keys, 0.0, need_mass_cube=True) for part in (x[:1000], x[1000:])]
    pooled = [sum(getattr(p, k) for p in parts) for k in ("mass", "mass_sq", "mass_cube")]
    torch.testing.assert_close(chi2_moments(*pooled, 3000, b), chi2_moments(whole.mass, whole.mass_sq,
                                                                           whole.mass_cube, 3000, b))


def test_the_fit_stops_only_when_the_true_chi2_is_under_the_threshold():
    stopped, held_back = 0, 0
    for seed in range(3):
        y = np.sort(np.random.default_rng(seed).standard_normal(40) * 2)
        pot = fit_potential(torch.tensor(y[:, None], dtype=torch.float64), chi2_threshold=0.05, steps=1200,
                            batch_size=256, seed=seed, progress=False)
        hist = pot.history
        ucb = [c + 2.0 * sd for c, sd in zip(hist["chi2"], hist["chi2_sd"])]
        held_back += sum(c <= 0.05 < u for c, u in zip(hist["chi2"][:-1], ucb[:-1]))
        if hist["stopped_by_threshold"]:
            stopped += 1
            assert hist["steps_run"] < 1200 and ucb[-1] <= 0.05
            true = chi2_plugin(torch.tensor(exact_marginal_1d(y, pot.g.double().numpy())),
                               torch.full((40,), 1 / 40, dtype=torch.float64))
            assert true <= 0.05
    assert stopped >= 2
    assert held_back >= 1  # a point estimate under 0.05 alone does not stop the fit (seed 2)


def test_cost_aware_cadence():
    fixed = SolverConfig(eval_every=500)
    assert [next_check(fixed, s, 65536) for s in (0, 499, 500, 1200)] == [500, 500, 1000, 1500]
    cfg = SolverConfig(batch_size=1024, eval_fraction=0.1, eval_growth=1.25)
    checks, step, cost = [], 0, 0
    while step < 100_000:
        step = next_check(cfg, step, 16384)
        checks.append(step)
    assert checks[0] == 160 and checks[1] == 320  # 16384 / (0.1 * 1024) steps apart at first
    assert len(checks) < 40  # then geometric: O(log K) evaluations
    assert all(b - a >= 160 for a, b in zip(checks, checks[1:]))  # never above 10% of the fitting cost
    assert all(b <= max(1.25 * a + 1, a + 160) for a, b in zip(checks, checks[1:]))


def test_eval_batch_grows_with_n():
    assert eval_batch_for(1000) == 8192 and eval_batch_for(5000) == 16384
    assert eval_batch_for(10) == 4096 and eval_batch_for(10**7) == 65536
    assert eval_batch_for(5000, threshold=0.5) == 4096
