"""Adaptive epsilon (sdfm.ot.auto_epsilon): the renormalised entropy is 0 for a permutation and 1 for
independent pairs, is nondecreasing in epsilon under both criteria, and the bisection returns the
smallest epsilon that reaches the target within its tolerance."""

import math

import numpy as np
import ot
import pytest
import torch

from sdfm.ot.auto_epsilon import (choose_epsilon, conditional_entropy, entropy_curve, relative_entropy_at,
                                  renormalised_entropy)
from sdfm.ot.batch import inner_product_cost, sinkhorn_plan


def _gaussian(n, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64), torch.randn(n, d, generator=gen,
                                                                              dtype=torch.float64) * 0.5 + 1.0


def test_entropy_of_a_permutation_is_0_and_of_the_product_is_1():
    n = 50
    perm = torch.zeros(n, n, dtype=torch.float64)
    perm[torch.arange(n), torch.randperm(n)] = 1.0 / n
    assert renormalised_entropy(perm) == pytest.approx(0.0, abs=1e-12)
    assert renormalised_entropy(torch.full((n, n), 1.0 / n**2, dtype=torch.float64)) == pytest.approx(1.0, abs=1e-12)
    # each row spread evenly over k partners: H(J|I) = log k
    k = 5
    spread = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        spread[i, [(i + j) % n for j in range(k)]] = 1.0 / (n * k)
    assert renormalised_entropy(spread) == pytest.approx(math.log(k) / math.log(n), abs=1e-12)


def test_conditional_entropy_limits():
    scores = torch.randn(40, 30, dtype=torch.float64)
    assert conditional_entropy(scores, 1e-6) == pytest.approx(0.0, abs=1e-6)
    assert conditional_entropy(scores, 1e6) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("criterion", ["sinkhorn", "semidiscrete"])
def test_entropy_is_monotone_in_epsilon_from_0_to_1(criterion):
    x, y = _gaussian(96, 2)
    curve, std = entropy_curve(x, y, criterion, potential_steps=300)
    eps = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 30.0]
    values = [curve(e) for e in eps]
    assert all(b >= a - 1e-6 for a, b in zip(values, values[1:])), values
    assert values[0] < 0.25 and values[-1] > 0.95
    assert std == pytest.approx(float(inner_product_cost(x, y).std()))


def test_the_sinkhorn_entropy_is_that_of_pots_plan():
    x, y = _gaussian(64, 3, seed=1)
    cost = inner_product_cost(x, y)
    curve, std = entropy_curve(x, y, "sinkhorn")
    a = np.full(64, 1 / 64)
    plan = ot.sinkhorn(a, a, (cost - cost.min()).numpy(), 0.2 * std, method="sinkhorn_log", stopThr=1e-10,
                       numItermax=100_000)
    reference = (-(plan * np.log(plan)).sum() - math.log(64)) / math.log(64)
    assert curve(0.2) == pytest.approx(reference, abs=1e-4)


def test_the_semidiscrete_criterion_is_close_to_sinkhorn_away_from_0():
    """g frozen at its eps = 0 value: the module docstring's approximation, measured here at n = 256."""
    x, y = _gaussian(256, 2, seed=2)
    sd, _ = entropy_curve(x, y, "semidiscrete", potential_steps=1000)
    sk, _ = entropy_curve(x, y, "sinkhorn")
    for e in (0.03, 0.1, 0.3):
        assert sd(e) == pytest.approx(sk(e), abs=0.04), e


@pytest.mark.parametrize("criterion,target,d", [("sinkhorn", 0.6, 2), ("sinkhorn", 0.6, 8),
                                                ("semidiscrete", 0.05, 2), ("semidiscrete", 0.2, 8)])
def test_bisection_hits_the_target(criterion, target, d):
    x, y = _gaussian(128, d, seed=3)
    choice = choose_epsilon(x, y, target, criterion=criterion, potential_steps=300, rtol=0.01, entropy_tol=0.002)
    curve, std = entropy_curve(x, y, criterion, potential_steps=300)
    assert choice.entropy >= target and choice.entropy == pytest.approx(curve(choice.epsilon_rel), abs=1e-6)
    below = choice.epsilon_rel / 1.01
    assert choice.entropy - target <= 0.002 or curve(below) < target  # the smallest one, up to rtol
    assert choice.epsilon_abs == pytest.approx(choice.epsilon_rel * std)
    assert choice.curve["epsilon_rel"] == sorted(choice.curve["epsilon_rel"])


def test_relative_entropy_at_takes_the_std_of_the_cost_by_default():
    x, y = _gaussian(32, 2, seed=4)
    cost = -(x @ y.T)
    plan = sinkhorn_plan(cost, 0.3 * float(cost.std()), tol=1e-9, max_iter=100_000)
    # the solve behind relative_entropy_at stops at marginal error 1e-5: its entropy is that close
    assert relative_entropy_at(cost, 0.3) == pytest.approx(renormalised_entropy(plan), abs=1e-4)
    assert relative_entropy_at(cost, 0.3) == relative_entropy_at(cost, 0.3, float(cost.std()))


def test_bad_targets_are_refused():
    x, y = _gaussian(16, 2)
    for target in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="target entropy"):
            choose_epsilon(x, y, target)
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_epsilon(x, y, 0.1, criterion="magic")
