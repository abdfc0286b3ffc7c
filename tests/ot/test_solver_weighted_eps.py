"""Non-uniform target weights at eps > 0, where the keys carry ``g_j + eps log b_j``.

At eps = 0 the weights enter the fit only through the gradient ``b - m``; at eps > 0 they also
enter every score, so a wrong key column (a sign, a missing factor) fits a potential whose
coupling misses b. Both the plain fit and the coarse levels of the multiscale start (whose
subsample carries the target mass of its cells: non-uniform weights even for uniform data) run
through it.

Tolerances: the marginal is estimated from M = 200,000 source samples; its relative standard
error on a point of weight b_j is at most ``1 / sqrt(M b_j)`` (1.7% for the smallest weight
here), so 10% is six of them. The chi^2 bound is that of the eps > 0 solver test (0.01).
"""

import torch

from sdfm.ot import SemidiscretePotential, fit_potential
from sdfm.ot.solver import SemidiscreteSolver, SolverConfig, initial_potential

SAMPLES = 200_000


def test_weighted_targets_get_their_mass_at_eps_positive():
    gen = torch.Generator().manual_seed(5)
    y = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    weights = torch.arange(1, 11, dtype=torch.float64)
    b = weights / weights.sum()
    pot = fit_potential(y, epsilon=0.3, weights=weights, steps=300, batch_size=1024, eval_every=300, eval_batch=4096,
                        progress=False)
    torch.testing.assert_close(pot.weights, b)
    mass, _ = pot.marginal_counts(torch.randn(SAMPLES, 2, generator=gen, dtype=torch.float64))
    assert ((mass / SAMPLES - b).abs() / b).max() < 0.1
    assert pot.chi2(torch.randn(SAMPLES, 2, generator=gen, dtype=torch.float64)) < 0.01


def _clusters(n=256, seed=0):
    """Four clusters; the first holds 4/7 of the target mass (points of weight 4 against 1)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 3.0], [0.0, -3.0]], dtype=torch.float64)
    cluster = torch.arange(n) % 4
    y = centres[cluster] + 0.3 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    weights = torch.where(cluster == 0, 4.0, 1.0).double()
    return y, weights / weights.sum(), cluster


def test_the_multiscale_start_at_eps_positive_already_carries_the_cluster_masses():
    # The coarse levels are weighted fits at eps > 0; their extension to every point settles the
    # mass moved across clusters (measured: chi^2 0.0008 for the start, 0.31 for the Gaussian start).
    y, b, cluster = _clusters()
    eps = 0.5
    cfg = SolverConfig(steps=400, batch_size=256, eval_every=200, eval_batch=4096, coarsest=32, coarsen_factor=4,
                       progress=False)
    start = SemidiscreteSolver(cfg).coarse_to_fine(y, b, eps, seed=0)
    x = torch.randn(SAMPLES, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    multiscale = SemidiscretePotential(y, start, eps, b)
    gaussian = SemidiscretePotential(y, initial_potential(y, "gaussian"), eps, b)
    mass, _ = multiscale.marginal_counts(x)
    per_cluster = torch.zeros(4, dtype=torch.float64).index_add_(0, cluster, mass / SAMPLES)
    target = torch.zeros(4, dtype=torch.float64).index_add_(0, cluster, b)
    assert ((per_cluster - target).abs() / target).max() < 0.1
    assert multiscale.chi2(x) < 0.01 < gaussian.chi2(x)
