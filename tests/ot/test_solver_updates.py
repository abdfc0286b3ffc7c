"""The solver's update as its docstrings define it, against direct computations.

Step size: ``delta = mean_i (top-1 minus top-2 score of x_i) + eps`` (the gap scale), and with
``lr=None`` the step is ``lr_scale * delta / min_j b_j`` for SGD, ``lr_scale * delta`` for Adam.
Adam's first step moves every entry by exactly its lr (bias-corrected moments); the Polyak average
is the running mean of the iterates after the burn-in; every iterate keeps ``<b, g> = 0``. A wrong
step size or average does not break a fit outright (it only converges slower or noisier), so the
convergence tests do not see it.
"""

import numpy as np
import pytest
import scipy.linalg
import torch

from sdfm.ot import fit_potential, gap_scale
from sdfm.ot.solver_init import gaussian_conjugate, gaussian_conjugate_from_gram, initial_potential
from sdfm.ot.kernel import augment_keys


def _problem():
    gen = torch.Generator().manual_seed(8)
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(30, generator=gen, dtype=torch.float64)
    log_b = torch.log_softmax(torch.randn(30, generator=gen, dtype=torch.float64), 0)
    x = torch.randn(500, 3, generator=gen, dtype=torch.float64)
    return y, g, log_b, x


@pytest.mark.parametrize("eps", [0.0, 0.25])
def test_gap_scale_is_the_mean_top2_margin_plus_eps(eps):
    y, g, log_b, x = _problem()
    scores = x @ y.T + g + eps * log_b  # the scores of the keys [y, g + eps log b]
    top = scores.topk(2, dim=1).values
    expected = float((top[:, 0] - top[:, 1]).mean()) + eps
    assert gap_scale(x, augment_keys(y, g, eps, log_b), eps) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("optimizer, per_weight", [("sgd", True), ("adam", False)])
def test_the_default_step_is_lr_scale_times_the_gap_scale(optimizer, per_weight):
    y, _, log_b, _ = _problem()
    weights = log_b.exp()
    pot = fit_potential(y, epsilon=0.1, weights=weights, steps=1, eval_batch=256, optimizer=optimizer, lr_scale=0.03,
                        progress=False)
    delta = pot.history["gap_scale"]
    assert delta > 0.1  # it includes eps
    expected = 0.03 * delta / float(weights.min()) if per_weight else 0.03 * delta
    assert pot.history["lr0"] == pytest.approx(expected, rel=1e-12)


def test_adams_first_step_moves_every_entry_by_its_lr():
    # m_1 = 0.1 grad, v_1 = 0.001 grad^2: bias-corrected, the step is lr * grad / |grad| = +-lr per entry
    y, _, log_b, _ = _problem()
    b = log_b.exp()
    pot = fit_potential(y, weights=b, steps=1, batch_size=64, eval_batch=256, optimizer="adam", averaging="none",
                        init="zero", decay_power=0.0, epsilon_schedule="constant",  # hard steps (3-D: not DRAG)
                        progress=False)  # no decay: the first step's lr is lr0
    lr, g = pot.history["lr0"], pot.g
    shift = float((b * g).sum())  # zero: the shift keeps <b, g> = 0 ...
    assert abs(shift) < 1e-12 * lr
    steps = g / lr  # ... so g = lr sign(grad) - <b, lr sign(grad)>: two levels, 2 lr apart
    low, high = float(steps.min()), float(steps.max())
    assert high - low == pytest.approx(2.0, rel=1e-9)
    assert torch.minimum((steps - low).abs(), (steps - high).abs()).max() < 1e-9


def test_polyak_averaging_is_the_mean_of_the_iterates_after_the_burn_in():
    # The path of the first k steps does not depend on the budget (evaluated only at the end), so the
    # iterates g_11 ... g_20 are the last iterates of fits of 11 ... 20 steps without averaging.
    y, _, log_b, _ = _problem()
    options = dict(epsilon=0.2, weights=log_b.exp(), batch_size=64, eval_batch=256, momentum=0.0, progress=False)
    averaged = fit_potential(y, steps=20, eval_every=20, averaging="polyak", burn_in=0.5, **options)
    iterates = [fit_potential(y, steps=k, eval_every=k, averaging="none", **options).g for k in range(11, 21)]
    torch.testing.assert_close(averaged.g, torch.stack(iterates).mean(dim=0), rtol=0, atol=1e-12)
    assert (iterates[-1] - iterates[0]).abs().max() > 1e-3  # the iterates move: the mean is not any one of them


@pytest.mark.parametrize("init", ["gaussian", "voronoi", "zero"])
def test_the_initial_potentials_follow_their_formulas(init):
    # With lr = 0 one step leaves g_0 up to the shift that makes <b, g> = 0. gaussian: the conjugate of the
    # OT map x -> m + S^(1/2) x to the Gaussian fit, g_j = -1/2 (y_j - m)^T S^(-1/2) (y_j - m); voronoi:
    # -|y_j|^2 / 2 (the identity map); zero.
    gen = torch.Generator().manual_seed(9)
    y = torch.randn(40, 3, generator=gen, dtype=torch.float64) @ torch.tensor(
        [[2.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -0.3, 0.4]], dtype=torch.float64) + 1.0
    b = torch.softmax(torch.randn(40, generator=gen, dtype=torch.float64), 0)
    centred = (y - y.mean(dim=0)).numpy()
    inv_sqrt = np.real(scipy.linalg.sqrtm(np.linalg.inv(np.cov(centred, rowvar=False))))
    expected = {"gaussian": -0.5 * np.einsum("ij,jk,ik->i", centred, inv_sqrt, centred),
                "voronoi": -0.5 * (y.numpy() ** 2).sum(axis=1), "zero": np.zeros(40)}[init]
    expected = torch.as_tensor(expected - (b.numpy() * expected).sum())
    pot = fit_potential(y, weights=b, steps=1, lr=0.0, averaging="none", init=init, eval_batch=256, progress=False)
    torch.testing.assert_close(pot.g, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n, d", [(30, 200), (64, 64), (5, 12)])
def test_the_gram_route_of_the_gaussian_start_equals_the_covariance_route(n, d):
    # N <= d: the N x N Gram eigendecomposition gives the d x d route's g_j = -1/2 c_j^T S^(-1/2) c_j, the
    # floored zero eigenvalues of S included (no point has a component along them).
    gen = torch.Generator().manual_seed(n + d)
    y = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3.0, d, dtype=torch.float64)
    centred = y - y.mean(dim=0)
    by_covariance = gaussian_conjugate(centred, centred.T @ centred / (n - 1))
    by_gram = gaussian_conjugate_from_gram(centred)
    torch.testing.assert_close(by_gram, by_covariance, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(initial_potential(y, "gaussian"), by_covariance, rtol=1e-6, atol=1e-8)
    # with C = U diag(s) V^T: c_j^T S^(-1/2) c_j = (N - 1)^(1/2) sum_k U_jk^2 s_k = (N - 1)^(1/2) [(C C^T)^(1/2)]_jj
    gram = (centred @ centred.T).numpy()
    expected = -0.5 * np.sqrt(n - 1) * np.diag(np.real(scipy.linalg.sqrtm(gram)))
    np.testing.assert_allclose(by_gram.numpy(), expected, rtol=1e-5, atol=1e-8)
