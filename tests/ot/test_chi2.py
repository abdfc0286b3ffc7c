"""The chi^2 estimator against a direct count and against an exactly known marginal."""

import math

import torch

from sdfm.ot import SemidiscretePotential, chi2_plugin, chi2_unbiased


def test_hard_counts_match_the_formula_by_hand():
    counts = torch.tensor([3.0, 0.0, 1.0, 4.0])
    b = torch.tensor([0.25, 0.25, 0.25, 0.25])
    n = int(counts.sum())
    by_hand = sum((c * c - c) / 0.25 for c in counts.tolist()) / (n * (n - 1)) - 1
    assert math.isclose(chi2_unbiased(counts, counts, n, b), by_hand)


def test_soft_rows_match_a_direct_pair_sum():
    gen = torch.Generator().manual_seed(0)
    rows = torch.softmax(torch.randn(7, 5, generator=gen), 1).double()
    b = torch.softmax(torch.randn(5, generator=gen), 0).double()
    pairs = sum((rows[i] * rows[k] / b).sum() for i in range(7) for k in range(7) if i != k)
    direct = float(pairs) / (7 * 6) - 1
    assert math.isclose(chi2_unbiased(rows.sum(0), rows.square().sum(0), 7, b), direct, rel_tol=1e-12)


def _one_dimensional_potential():
    # Three points on a line, potentials chosen so that the cells are known intervals.
    y = torch.tensor([[-1.0], [0.5], [2.0]], dtype=torch.float64)
    g = torch.tensor([0.0, 0.6, -0.9], dtype=torch.float64)
    return SemidiscretePotential(y, g)


def _exact_marginal(pot):
    # Cells of argmax_j x y_j + g_j in 1-D: boundaries where neighbouring lines cross.
    y, g = pot.y[:, 0], pot.g
    b01 = -(g[1] - g[0]) / (y[1] - y[0])
    b12 = -(g[2] - g[1]) / (y[2] - y[1])
    normal = torch.distributions.Normal(0.0, 1.0)
    cdf = normal.cdf(torch.stack([b01, b12]))
    return torch.stack([cdf[0], cdf[1] - cdf[0], 1 - cdf[1]])


def test_estimator_is_unbiased_for_a_known_marginal():
    pot = _one_dimensional_potential()
    exact = chi2_plugin(_exact_marginal(pot), pot.weights)
    gen = torch.Generator().manual_seed(0)
    estimates = [pot.chi2(torch.randn(50, 1, generator=gen, dtype=torch.float64)) for _ in range(4000)]
    mean = sum(estimates) / len(estimates)
    spread = torch.tensor(estimates).std().item() / math.sqrt(len(estimates))
    assert abs(mean - exact) < 4 * spread
    assert exact > 0.05  # a non-trivial marginal, so a zero estimate would fail
