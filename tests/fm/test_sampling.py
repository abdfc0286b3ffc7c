"""Tests of the ODE solvers, NFE accounting, guidance and MeanFlow sampling (sdfm.fm.sampling)."""

from __future__ import annotations

import math

import pytest
import torch

from sdfm.fm.sampling import generate, guided_velocity, integrate, mean_flow_sample
from sdfm.models import MLPVelocity

A = 1.3


def _linear(x, t):
    return A * x


def _error(solver, nfe):
    x0 = torch.ones(1, dtype=torch.float64)
    return abs(float(integrate(_linear, x0, solver=solver, nfe=nfe).x1) - math.exp(A))


@pytest.mark.parametrize(
    "solver, order, per_step", [("euler", 1, 1), ("midpoint", 2, 2), ("heun", 2, 2), ("rk4", 4, 4)]
)
def test_fixed_solver_order_on_linear_ode(solver, order, per_step):
    coarse, fine = _error(solver, 16 * per_step), _error(solver, 32 * per_step)
    ratio = coarse / fine
    assert 2 ** order * 0.85 < ratio < 2 ** order * 1.15, ratio


@pytest.mark.parametrize("solver, degree", [("euler", 0), ("midpoint", 1), ("heun", 1), ("rk4", 3)])
def test_fixed_solvers_integrate_time_polynomials_of_their_degree_exactly(solver, degree):
    # dx/dt = (p + 1) t^p, x(1) = x(0) + 1: midpoint and trapezoid (Heun) quadrature are exact up to degree 1,
    # Simpson (RK4) up to 3, Euler only for constants. The linear ODE above ignores t, so this checks the
    # times at which each stage evaluates the field.
    per_step = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[solver]
    x0 = torch.zeros(1, dtype=torch.float64)
    for p in range(degree + 2):
        x1 = integrate(lambda x, t, p=p: (p + 1) * t**p * torch.ones_like(x), x0, solver=solver, nfe=3 * per_step).x1
        if p <= degree:
            torch.testing.assert_close(x1, x0 + 1, rtol=0, atol=1e-12)
        else:
            assert abs(float(x1) - 1) > 1e-4  # one degree more is not exact (RK4: 5e-4): the check has teeth


def test_fixed_solver_order_on_a_time_dependent_ode():
    # dx/dt = cos(t) x, x(1) = x(0) e^{sin 1}
    def error(solver, nfe):
        x0 = torch.ones(1, dtype=torch.float64)
        x1 = integrate(lambda x, t: torch.cos(t) * x, x0, solver=solver, nfe=nfe).x1
        return abs(float(x1) - math.exp(math.sin(1)))

    for solver, order, per_step in [("euler", 1, 1), ("midpoint", 2, 2), ("heun", 2, 2), ("rk4", 4, 4)]:
        ratio = error(solver, 16 * per_step) / error(solver, 32 * per_step)
        assert 2 ** order * 0.85 < ratio < 2 ** order * 1.15, (solver, ratio)


def test_fixed_solver_counts_evaluations_and_checks_nfe():
    calls = []

    def velocity(x, t):
        calls.append(float(t))
        assert t.ndim == 0 and t.dtype == x.dtype
        return x

    result = integrate(velocity, torch.ones(3, 2), solver="rk4", nfe=8, return_trajectory=True)
    assert result.nfe == len(calls) == 8
    assert result.trajectory.shape == (3, 3, 2)
    assert calls[:4] == [0.0, 0.25, 0.25, 0.5]
    with pytest.raises(ValueError, match="multiple of 2"):
        integrate(velocity, torch.ones(1), solver="heun", nfe=3)
    with pytest.raises(ValueError, match="nfe=None"):
        integrate(velocity, torch.ones(1), solver="dopri5", nfe=10)


def test_dopri5_counts_evaluations_and_is_accurate():
    calls = 0

    def velocity(x, t):
        nonlocal calls
        calls += 1
        return A * x

    x0 = torch.ones(4, dtype=torch.float64)
    result = integrate(velocity, x0, solver="dopri5", rtol=1e-9, atol=1e-9)
    assert result.nfe == calls > 6
    torch.testing.assert_close(result.x1, x0 * math.exp(A), rtol=1e-7, atol=0)
    loose = integrate(velocity, x0, solver="dopri5", rtol=1e-3, atol=1e-3)
    assert loose.nfe < result.nfe


def test_euler_one_step_is_exact_on_straight_gaussian_flow():
    # OT flow N(0, I) -> N(m, s^2 I): x1 = m + s x0, straight paths, marginal field below.
    m, s = torch.tensor([2.0, -1.0], dtype=torch.float64), 0.5

    def velocity(x, t):
        x0 = (x - t * m) / (1 - t + t * s)
        return m + (s - 1) * x0

    x0 = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for solver, nfe in [("euler", 1), ("rk4", 4), ("dopri5", None)]:
        torch.testing.assert_close(integrate(velocity, x0, solver=solver, nfe=nfe).x1, m + s * x0)
    assert _error("euler", 1) > 0.5  # a curved flow is not integrated exactly in one step


class _Affine(torch.nn.Module):
    """v(x, t, label) = x * 0 + (label + 1), null class -> 0: guidance is checkable by hand."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, labels=None, r=None, drop_labels=False):
        value = torch.zeros(x.shape[0]) if labels is None else (labels + 1).float()
        value = torch.where(torch.as_tensor(drop_labels).expand(x.shape[0]), torch.zeros_like(value), value)
        return x * self.weight + value[:, None]


def test_guided_velocity_combines_conditional_and_null():
    model, x = _Affine(), torch.zeros(2, 1)
    labels = torch.tensor([0, 2])
    t = torch.tensor(0.0)
    torch.testing.assert_close(guided_velocity(model, labels, 1.0)(x, t), torch.tensor([[1.0], [3.0]]))
    torch.testing.assert_close(guided_velocity(model, labels, 2.5)(x, t), torch.tensor([[2.5], [7.5]]))
    samples, nfe = generate(model, 2, (1,), solver="euler", nfe=4, labels=labels, guidance=2.0, batch_size=1)
    assert nfe == 4
    noise = torch.randn(1024, 1, generator=torch.Generator().manual_seed(0))[:2, 0]
    torch.testing.assert_close(samples[:, 0] - noise, torch.tensor([2.0, 6.0]))


class _ExactMeanFlow(torch.nn.Module):
    """Average velocity of dz/ds = A z over [r, t] through z at r: z (e^{A h} - 1) / h."""

    def forward(self, z, t, labels=None, r=None, drop_labels=False):
        h = (t - r).reshape(-1, *([1] * (z.ndim - 1)))
        return z * torch.where(h > 0, torch.expm1(A * h) / h.clamp(min=1e-12), torch.full_like(h, A))


def test_mean_flow_sample_with_exact_average_velocity():
    x0 = torch.randn(5, 3, dtype=torch.float64)
    for steps in (1, 2):
        torch.testing.assert_close(mean_flow_sample(_ExactMeanFlow(), x0, steps=steps), x0 * math.exp(A))


def test_generate_is_seeded_and_shaped():
    model = MLPVelocity(4, hidden=16, depth=1)
    a, nfe = generate(model, 1100, (1, 2, 2), solver="heun", nfe=4, seed=3, batch_size=300)
    b, _ = generate(model, 1100, (1, 2, 2), solver="heun", nfe=4, seed=3, batch_size=2000)
    assert a.shape == (1100, 1, 2, 2) and nfe == 4
    torch.testing.assert_close(a, b)  # sample i does not depend on the batch size
    c, _ = generate(model, 1100, (1, 2, 2), solver="heun", nfe=4, seed=4)
    assert not torch.allclose(a, c)
    mf = MLPVelocity(4, hidden=16, depth=1, mean_flow=True)
    d, nfe = generate(mf, 3, (4,), solver="meanflow", nfe=2)
    assert d.shape == (3, 4) and nfe == 2 and torch.isfinite(d).all()
