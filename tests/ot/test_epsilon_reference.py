"""epsilon_reference: the relative epsilon made absolute from the spread of -<x, y> or of |x - y|^2."""

from __future__ import annotations

import math

import pytest
import torch

from sdfm.fm.couplings import BatchOTCoupling
from sdfm.ot.batch import reference_cost_std, relative_epsilon, sinkhorn_plan
from sdfm.ot.problem import absolute_epsilon, plain_problem


def _closed_form_ratio(d: int, sx: float, sy: float, mu_sq: float) -> float:
    """std |x - y|^2 / std <x, y> for x ~ N(0, sx^2 I_d), y ~ N(mu, sy^2 I_d), |mu|^2 = mu_sq."""
    var_ip = sx**2 * (d * sy**2 + mu_sq)
    var_sq = 2 * d * sx**4 + 2 * d * sy**4 + 4 * sy**2 * mu_sq + 4 * var_ip
    return math.sqrt(var_sq / var_ip)


@pytest.mark.parametrize("d, sx, sy, mu", [(16, 1.0, 1.0, 0.0), (64, 1.0, 0.5, 0.3), (8, 2.0, 1.0, 1.0)])
def test_ratio_of_the_two_references_matches_the_closed_form_on_gaussians(d, sx, sy, mu):
    gen = torch.Generator().manual_seed(d)
    n = 2048
    x = sx * torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = mu + sy * torch.randn(n, d, generator=gen, dtype=torch.float64)
    ratio = reference_cost_std(x, y, "sq_euclidean") / reference_cost_std(x, y, "inner_product")
    assert ratio == pytest.approx(_closed_form_ratio(d, sx, sy, d * mu**2), rel=0.03)
    if mu == 0 and sx == sy == 1:
        assert ratio == pytest.approx(2 * math.sqrt(2), rel=0.03)


def test_absolute_epsilon_follows_the_selected_definition():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 5, generator=gen, dtype=torch.float64), torch.randn(200, 5, generator=gen, dtype=torch.float64)
    ip = -(x @ y.T)
    sq = torch.cdist(x, y).square()
    assert relative_epsilon(0.1, x, y) == pytest.approx(0.1 * float(ip.std()), rel=1e-12)
    assert relative_epsilon(0.1, x, y, "sq_euclidean") == pytest.approx(0.1 * float(sq.std()) / 2, rel=1e-9)
    with pytest.raises(ValueError, match="epsilon_reference"):
        relative_epsilon(0.1, x, y, "euclidean")


def test_sq_euclidean_epsilon_gives_the_plan_of_the_squared_cost_at_eps_rel_times_its_std():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 3, generator=gen, dtype=torch.float64), torch.randn(40, 3, generator=gen, dtype=torch.float64)
    sq = torch.cdist(x, y).square()
    ours = sinkhorn_plan(-(x @ y.T), relative_epsilon(0.3, x, y, "sq_euclidean"), tol=1e-12)
    theirs = sinkhorn_plan(sq, 0.3 * float(sq.std()), tol=1e-12)  # OTT-JAX's convention on |x - y|^2
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-9)


def test_potential_problem_and_otfm_use_the_reference():
    y = torch.randn(500, 4, generator=torch.Generator().manual_seed(2))
    a = absolute_epsilon(0.2, y, 256, seed=3)
    b = absolute_epsilon(0.2, y, 256, seed=3, epsilon_reference="sq_euclidean")
    # the same seeded batch: the ratio is the two stds' (about 2 sqrt(2) / 2 on standard Gaussians)
    assert b / a == pytest.approx(math.sqrt(2), rel=0.1)
    problem = plain_problem(y).with_epsilon(0.2, 256, seed=3, epsilon_reference="sq_euclidean")
    assert problem.epsilon_abs == b and problem.defining_fields()["epsilon_reference"] == "sq_euclidean"
    assert "epsilon_reference" not in plain_problem(y).with_epsilon(0.2, 256, seed=3).defining_fields()
    with pytest.raises(ValueError, match="auto"):
        plain_problem(y).with_epsilon("auto", 256, epsilon_reference="sq_euclidean")
    coupling = BatchOTCoupling(y, epsilon_rel=0.2, epsilon_reference="sq_euclidean")
    gen = torch.Generator().manual_seed(4)
    coupling.sample(32, gen)
    replay = torch.Generator().manual_seed(4)
    x0 = torch.randn(32, 4, generator=replay)
    x1 = y[torch.randint(500, (32,), generator=replay)]
    assert coupling.last_epsilon == pytest.approx(relative_epsilon(0.2, x0, x1, "sq_euclidean"), rel=1e-6)
