"""Batch OT pairing: exact against scipy's assignment, Sinkhorn draws against the plan."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from sdfm.ot import batch_ot_pairing, relative_epsilon, sinkhorn_plan


def test_exact_pairing_is_an_optimal_permutation():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 3, generator=gen), torch.randn(64, 3, generator=gen) + 1
    j = batch_ot_pairing(x0, x1)
    assert sorted(j.tolist()) == list(range(64))
    cost = ((x0[:, None] - x1[None]) ** 2).sum(-1).double().numpy()
    rows, cols = linear_sum_assignment(cost)
    assert np.isclose(cost[np.arange(64), j.numpy()].sum(), cost[rows, cols].sum())


def test_sinkhorn_plan_has_uniform_marginals():
    gen = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(50, 2, generator=gen).double(), torch.randn(50, 2, generator=gen).double()
    plan = sinkhorn_plan(-(x0 @ x1.T), relative_epsilon(0.1, x0, x1), tol=1e-9)
    torch.testing.assert_close(plan.sum(1), torch.full((50,), 1 / 50, dtype=plan.dtype), atol=1e-7, rtol=0)
    torch.testing.assert_close(plan.sum(0), torch.full((50,), 1 / 50, dtype=plan.dtype), atol=1e-7, rtol=0)


def test_sinkhorn_draws_follow_the_rows_of_the_plan():
    gen = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(4, 2, generator=gen), torch.randn(4, 2, generator=gen)
    eps = relative_epsilon(0.5, x0, x1)
    plan = sinkhorn_plan(-(x0 @ x1.T).double(), eps)
    draws = torch.stack([batch_ot_pairing(x0, x1, eps, generator=gen) for _ in range(4000)])
    freq = torch.stack([torch.bincount(draws[:, i], minlength=4) for i in range(4)]).double() / 4000
    torch.testing.assert_close(freq, plan / plan.sum(1, keepdim=True), atol=0.03, rtol=0)


def test_mismatched_batches_are_refused():
    with pytest.raises(ValueError, match="as many"):
        batch_ot_pairing(torch.randn(3, 2), torch.randn(4, 2))


def test_the_network_simplex_path_for_2d_batches_is_an_optimal_permutation():
    from sdfm.ot.batch import NETWORK_SIMPLEX_MIN_N, exact_assignment

    rng = np.random.default_rng(3)
    x0, x1 = rng.standard_normal((NETWORK_SIMPLEX_MIN_N, 2)), 2 * rng.standard_normal((NETWORK_SIMPLEX_MIN_N, 2))
    cost = -(x0 @ x1.T)
    pairing = exact_assignment(cost)
    assert np.array_equal(np.sort(pairing), np.arange(len(pairing)))
    rows, cols = linear_sum_assignment(cost)
    assert cost[np.arange(len(pairing)), pairing].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-9)


def test_relative_epsilon_is_eps_rel_times_the_sample_std_of_the_cost_entries():
    # eps = eps_rel * std(C), C_ij = -<x0_i, x1_j>: the standard deviation of the n m entries (ddof 1),
    # computed directly. The data is off-centre, so std(C) is far from other scales such as mean |C|.
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    x1 = torch.randn(30, 3, generator=gen, dtype=torch.float64) * torch.tensor([2.0, 1.0, 0.5]) + 1.5
    cost = -(x0.numpy() @ x1.numpy().T)
    expected = 0.07 * np.sqrt(((cost - cost.mean()) ** 2).sum() / (cost.size - 1))
    assert relative_epsilon(0.07, x0, x1) == pytest.approx(expected, rel=1e-12)
    assert relative_epsilon(0.07, x0.float(), x1.float()) == pytest.approx(expected, rel=1e-5)
    assert abs(np.abs(cost).mean() / cost.std() - 1) > 0.2  # the definition matters on this batch
