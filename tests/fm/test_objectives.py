"""Tests of the flow-matching and MeanFlow objectives (sdfm.fm.objectives)."""

from __future__ import annotations

import math

import numpy as np

import pytest
import torch

from sdfm.fm.objectives import (
    draw_unit_times,
    draw_label_dropout,
    draw_mean_flow_times,
    flow_matching_loss,
    interpolate,
    mean_flow_loss,
    mean_flow_target,
    objective_loss,
)


class _Constant(torch.nn.Module):
    """v(x, t) = c, the exact field of the single pair (x0, x0 + c)."""

    def __init__(self, c):
        super().__init__()
        self.c = torch.nn.Parameter(c.clone())

    def forward(self, x, t, labels=None, r=None, drop_labels=False):
        return self.c.expand_as(x)


def test_fm_loss_zero_for_exact_constant_field_and_positive_otherwise():
    x0, x1 = torch.tensor([[0.5, -1.0]]), torch.tensor([[2.0, 3.0]])
    t = torch.rand(1)
    assert float(flow_matching_loss(_Constant(x1 - x0), x0, x1, t).detach()) == 0.0
    assert float(flow_matching_loss(_Constant(x1 - x0 + 0.1), x0, x1, t).detach()) == pytest.approx(0.01, rel=1e-4)
    gen = torch.Generator().manual_seed(0)
    loss = objective_loss("meanflow", _Constant(x1 - x0), x0.repeat(8, 1), x1.repeat(8, 1), gen)
    assert float(loss.detach()) == 0.0


def test_interpolation_endpoints():
    x0, x1 = torch.randn(3, 2), torch.randn(3, 2)
    torch.testing.assert_close(interpolate(x0, x1, torch.zeros(3)), x0)
    torch.testing.assert_close(interpolate(x0, x1, torch.ones(3)), x1)


class _LinearU(torch.nn.Module):
    """u(z, r, t) = a z + b t + c r: du/dr along (v, 1, 0) is a v + c."""

    a, b, c = 0.7, -0.3, 2.0

    def forward(self, z, t, labels=None, r=None, drop_labels=False):
        return self.a * z + self.b * t[:, None] + self.c * r[:, None]


def test_mean_flow_target_hand_computed_jvp():
    z, v = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    r = torch.tensor([0.0, 0.2, 0.5, 0.9], dtype=torch.float64)
    t = torch.tensor([1.0, 0.6, 0.5, 0.95], dtype=torch.float64)
    model = _LinearU()
    u, target = mean_flow_target(model, z, r, t, v)
    torch.testing.assert_close(u, model(z, t, r=r))
    torch.testing.assert_close(target, v + (t - r)[:, None] * (model.a * v + model.c))
    assert not target.requires_grad


class _ExactMeanFlow(torch.nn.Module):
    """True average velocity of dz/ds = lam z over [r, t] through z at r: z (e^{lam h} - 1) / h."""

    lam = -0.8

    def forward(self, z, t, labels=None, r=None, drop_labels=False):
        h = (t - r)[:, None]
        return z * torch.expm1(self.lam * h) / h


def test_mean_flow_target_equals_true_average_velocity():
    model = _ExactMeanFlow()
    z = torch.randn(6, 2, dtype=torch.float64)
    r = torch.tensor([0.0, 0.1, 0.3, 0.5, 0.2, 0.7], dtype=torch.float64)
    t = torch.tensor([1.0, 0.9, 0.4, 0.8, 0.25, 1.0], dtype=torch.float64)
    u, target = mean_flow_target(model, z, r, t, model.lam * z)  # v(z_r, r) of the same field
    torch.testing.assert_close(target, u)
    # Geng et al.'s end-state form v - (t - r) du/dt does not hold for a start-state network.
    _, dudt = torch.func.jvp(lambda z_, r_, t_: model(z_, t_, r=r_), (z, r, t), (model.lam * z, 0 * r, 1 + 0 * t))
    assert not torch.allclose(model.lam * z - (t - r)[:, None] * dudt, u)
    # Integrating from 0 to 1 in one jump gives the exact flow.
    z0 = torch.randn(3, 2, dtype=torch.float64)
    jump = z0 + model(z0, torch.ones(3, dtype=torch.float64), r=torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(jump, z0 * math.exp(model.lam))


def test_mean_flow_times_and_dropout_draws():
    gen = torch.Generator().manual_seed(0)
    r, t = draw_mean_flow_times(10_000, gen, equal_fraction=0.75)
    assert bool((r <= t).all()) and 0.72 < float((r == t).float().mean()) < 0.78
    assert abs(float(t[r == t].mean()) - 0.5) < 0.02  # r = t rows are uniform in time
    mask = draw_label_dropout(10_000, 0.1, gen)
    assert 0.08 < float(mask.float().mean()) < 0.12
    assert draw_label_dropout(5, 0.0, gen) is False


def test_mean_flow_loss_backpropagates():
    model = _Constant(torch.zeros(2))
    x0, x1 = torch.randn(8, 2), torch.randn(8, 2)
    loss = mean_flow_loss(model, x0, x1, torch.zeros(8), torch.ones(8), adaptive_power=1.0)
    loss.backward()
    assert model.c.grad is not None and float(model.c.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="objective"):
        objective_loss("nope", model, x0, x1, torch.Generator())


class _LabelledU(torch.nn.Module):
    """u(z, r, t, label, drop) = a z + b t + c r + (label + 1) [not dropped]: every input changes the output."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.b, self.c = -0.3, 2.0

    def forward(self, z, t, labels=None, r=None, drop_labels=False):
        r = torch.zeros_like(t) if r is None else r
        shift = (labels + 1).to(z.dtype) * ~torch.as_tensor(drop_labels).expand(z.shape[0])
        return self.a * z + self.b * t[:, None] + self.c * r[:, None] + shift[:, None]


def _pairs(n=64):
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x1 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return x0, x1, torch.randint(3, (n,), generator=gen)


def test_objective_loss_draws_fm_times_then_the_dropout_mask_and_passes_both():
    x0, x1, labels = _pairs()
    model = _LabelledU()
    loss = objective_loss("fm", model, x0, x1, torch.Generator().manual_seed(1), labels=labels, label_dropout=0.3)
    replay = torch.Generator().manual_seed(1)
    t = torch.rand(64, generator=replay)  # float32, as objective_loss draws them
    drop = torch.rand(64, generator=replay) < 0.3
    assert 0 < int(drop.sum()) < 64
    expected = flow_matching_loss(model, x0, x1, t, labels, drop)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_objective_loss_passes_the_mean_flow_options(power):
    # equal_fraction, the dropout mask and the adaptive power reach the loss (non-default values)
    x0, x1, labels = _pairs()
    model = _LabelledU()
    loss = objective_loss("meanflow", model, x0, x1, torch.Generator().manual_seed(2), labels=labels,
                          label_dropout=0.3, mean_flow_equal_fraction=0.2, adaptive_power=power)
    replay = torch.Generator().manual_seed(2)
    r, t = draw_mean_flow_times(64, replay, equal_fraction=0.2)
    drop = draw_label_dropout(64, 0.3, replay)
    expected = mean_flow_loss(model, x0, x1, r, t, labels, drop, adaptive_power=power)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)


def test_adaptive_weighting_divides_by_the_stopped_error():
    # loss = mean_i e_i / stop_grad(|err_i|^2 + c)^p, e_i the per-sample mean squared error, |err_i|^2 its sum
    # over coordinates (Geng et al.'s squared L2 norm), c = 1e-3: the weights carry no gradient, so
    # d loss = mean_i d e_i / (|err_i|^2 + c)^p.
    x0, x1, labels = _pairs()
    r = torch.linspace(0.0, 0.5, 64, dtype=torch.float64)
    t = torch.linspace(0.5, 1.0, 64, dtype=torch.float64)
    power = 0.75
    model = _LabelledU()
    loss = mean_flow_loss(model, x0, x1, r, t, labels, adaptive_power=power)
    (grad,) = torch.autograd.grad(loss, model.a)
    u, target = mean_flow_target(model, interpolate(x0, x1, r), r, t, x1 - x0, labels)
    error = (u - target).square().mean(dim=1)
    weights = 1.0 / ((u - target).square().sum(dim=1).detach() + 1e-3) ** power
    expected = (error * weights).mean()
    (expected_grad,) = torch.autograd.grad(expected, model.a, retain_graph=True)
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-12)
    assert float(grad) == pytest.approx(float(expected_grad), rel=1e-10)
    assert abs(float(expected_grad) / float(torch.autograd.grad(error.mean(), model.a)[0]) - 1) > 0.1  # weights matter


def test_adaptive_power_zero_is_exactly_the_plain_mean_squared_error():
    x0, x1, labels = _pairs()
    r = torch.linspace(0.0, 0.5, 64, dtype=torch.float64)
    t = torch.linspace(0.5, 1.0, 64, dtype=torch.float64)
    model = _LabelledU()
    loss = mean_flow_loss(model, x0, x1, r, t, labels, adaptive_power=0.0)
    u, target = mean_flow_target(model, interpolate(x0, x1, r), r, t, x1 - x0, labels)
    assert torch.equal(loss, (u - target).square().mean())
    # with p > 0 the gradient differs from that of the un-stopped weighted loss e / (|err|^2 + c)^p
    loss = mean_flow_loss(model, x0, x1, r, t, labels, adaptive_power=1.0)
    (grad,) = torch.autograd.grad(loss, model.a)
    u, target = mean_flow_target(model, interpolate(x0, x1, r), r, t, x1 - x0, labels)
    sq = (u - target).square()
    unstopped = (sq.mean(dim=1) / (sq.sum(dim=1) + 1e-3)).mean()
    (grad_unstopped,) = torch.autograd.grad(unstopped, model.a)
    assert abs(float(grad) - float(grad_unstopped)) > 1e-3 * abs(float(grad))


@pytest.mark.parametrize("mean, std", [(0.4, 1.0), (-2.0, 2.0)])
def test_logit_normal_times_follow_their_distribution(mean, std):
    from scipy import stats

    def cdf(s):
        return stats.norm.cdf((np.log(s) - np.log1p(-s) - mean) / std)

    time = {"distribution": "logit_normal", "mean": mean, "std": std}
    gen = torch.Generator().manual_seed(7)
    r, t = draw_mean_flow_times(20_000, gen, equal_fraction=1.0, time=time)
    assert torch.equal(r, t)
    assert stats.kstest(t.double().numpy(), cdf).pvalue > 1e-3
    r, t = draw_mean_flow_times(20_000, gen, equal_fraction=0.0, time=time)
    assert bool((r <= t).all())
    assert stats.kstest(t.double().numpy(), lambda s: cdf(s) ** 2).pvalue > 1e-3  # max of two draws
    assert stats.kstest(r.double().numpy(), lambda s: 1 - (1 - cdf(s)) ** 2).pvalue > 1e-3  # min of two
    # a wrong mean is rejected: the test can fail
    assert stats.kstest(t.double().numpy(), lambda s: stats.norm.cdf((np.log(s) - np.log1p(-s) - mean - 0.1) / std)
                        ** 2).pvalue < 1e-3


def test_uniform_times_keep_the_random_stream_and_bad_distributions_fail():
    a = draw_mean_flow_times(50, torch.Generator().manual_seed(1), 0.5)
    b = draw_mean_flow_times(50, torch.Generator().manual_seed(1), 0.5, time={"distribution": "uniform"})
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="logit_normal"):
        draw_unit_times(3, torch.Generator(), {"distribution": "beta"})
