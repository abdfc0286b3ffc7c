"""SemidiscretePotential's derived views against their definitions (non-uniform weights, eps = 0 and eps > 0).

* ``semi_dual(x) = <b, g> + mean_i f_eps(x_i)``, ``f_0(x) = -max_j (<x, y_j> + g_j)``,
  ``f_eps(x) = -eps log sum_j b_j exp((<x, y_j> + g_j) / eps)``; its gradient in g is ``b - m(g)``,
  the marginal that ``marginal_counts`` estimates on the same samples.
* ``squared_euclidean_g() = g + |y|^2 / 2``: the potential of the same coupling for ``1/2 |x - y|^2``.
* ``to`` and ``save`` / ``load`` keep the weights (the keys carry ``eps log b``).
"""

import pytest
import torch

from sdfm.ot import SemidiscretePotential


def _problem(eps):
    gen = torch.Generator().manual_seed(12)
    y = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(20, generator=gen, dtype=torch.float64)
    b = torch.softmax(torch.randn(20, generator=gen, dtype=torch.float64), 0)
    x = torch.randn(3000, 3, generator=gen, dtype=torch.float64)
    return SemidiscretePotential(y, g, eps, b), x


@pytest.mark.parametrize("eps", [0.0, 0.4])
def test_semi_dual_is_b_dot_g_plus_the_mean_conjugate(eps):
    pot, x = _problem(eps)
    scores = x @ pot.y.T + pot.g
    if eps > 0:
        f = -eps * torch.logsumexp(scores / eps + pot.weights.log(), dim=1)
    else:
        f = -scores.max(dim=1).values
    expected = float((pot.weights * pot.g).sum() + f.mean())
    assert pot.semi_dual(x) == pytest.approx(expected, rel=1e-12)


def test_the_gradient_of_the_semi_dual_is_b_minus_the_marginal():
    # central differences on the same samples: the estimate is smooth in g at eps > 0, error O(h^2)
    pot, x = _problem(0.4)
    mass, _ = pot.marginal_counts(x)
    h = 1e-5
    for j in (0, 7, 19):
        step = torch.zeros_like(pot.g)
        step[j] = h
        up = SemidiscretePotential(pot.y, pot.g + step, pot.epsilon, pot.weights).semi_dual(x)
        down = SemidiscretePotential(pot.y, pot.g - step, pot.epsilon, pot.weights).semi_dual(x)
        assert (up - down) / (2 * h) == pytest.approx(float(pot.weights[j] - mass[j] / x.shape[0]), abs=1e-7)


def test_the_squared_euclidean_potential_gives_the_same_pairs():
    # argmin_j 1/2 |x - y_j|^2 - g'_j = argmax_j <x, y_j> + g_j, and at eps > 0 the same softmax
    pot, x = _problem(0.0)
    g2 = pot.squared_euclidean_g()
    cost = 0.5 * torch.cdist(x, pot.y).square() - g2
    assert torch.equal(cost.argmin(dim=1), pot.assign(x))
    soft, _ = _problem(0.4)
    law = torch.softmax(-(0.5 * torch.cdist(x, soft.y).square() - soft.squared_euclidean_g()) / 0.4
                        + soft.weights.log(), dim=1)
    mass, _ = soft.marginal_counts(x)
    torch.testing.assert_close(law.sum(dim=0), mass, rtol=1e-9, atol=1e-9)


def test_moving_saving_and_loading_keep_the_weights(tmp_path):
    pot, x = _problem(0.4)
    moved = pot.to("cpu")
    torch.testing.assert_close(moved.weights, pot.weights, rtol=0, atol=0)
    pot.save(tmp_path / "p.pt", include_data=False)
    back = SemidiscretePotential.load(tmp_path / "p.pt", y=pot.y)
    torch.testing.assert_close(back.weights, pot.weights, rtol=0, atol=0)
    for other in (moved, back):
        torch.testing.assert_close(other.keys, pot.keys, rtol=0, atol=0)
        assert other.semi_dual(x) == pot.semi_dual(x)
