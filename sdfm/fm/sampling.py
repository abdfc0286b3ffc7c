"""Sampling: integrate dx/dt = v(x, t) from noise (t = 0) to data (t = 1), counting evaluations.

Fixed-step solvers spend exactly ``nfe`` velocity evaluations on a uniform grid of ``h = 1 / K``:

| solver | order p | evaluations per step | steps K |
|---|---|---|---|
| euler    | 1 | 1 | nfe     |
| midpoint | 2 | 2 | nfe / 2 |
| heun     | 2 | 2 | nfe / 2 |
| rk4      | 4 | 4 | nfe / 4 |

``dopri5`` is torchdiffeq's adaptive Dormand-Prince 5(4) at tolerances ``rtol``/``atol``; the
number of evaluations it actually made is counted and reported. One evaluation of a guided
velocity (classifier-free guidance) is one batched network call on the conditional and the
unconditional inputs together.

MeanFlow models map noise to data in one or two evaluations of the average velocity:
``x1 = x0 + u(x0, 0, 1)``, or ``z = x0 + u(x0, 0, 1/2) / 2, x1 = z + u(z, 1/2, 1) / 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

#: Default ``rtol = atol`` of the adaptive dopri5 solver.
DOPRI5_TOL = 1e-5

__all__ = ["DOPRI5_TOL", "FIXED_SOLVERS", "SolveResult", "generate", "guided_velocity", "integrate", "mean_flow_sample"]

Velocity = Callable[[Tensor, Tensor], Tensor]


def _euler(v: Velocity, x: Tensor, t: float, h: float, T) -> Tensor:
    return x + h * v(x, T(t))


def _midpoint(v: Velocity, x: Tensor, t: float, h: float, T) -> Tensor:
    return x + h * v(x + 0.5 * h * v(x, T(t)), T(t + 0.5 * h))


def _heun(v: Velocity, x: Tensor, t: float, h: float, T) -> Tensor:
    k1 = v(x, T(t))
    k2 = v(x + h * k1, T(t + h))
    return x + 0.5 * h * (k1 + k2)


def _rk4(v: Velocity, x: Tensor, t: float, h: float, T) -> Tensor:
    k1 = v(x, T(t))
    k2 = v(x + 0.5 * h * k1, T(t + 0.5 * h))
    k3 = v(x + 0.5 * h * k2, T(t + 0.5 * h))
    k4 = v(x + h * k3, T(t + h))
    return x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


#: name -> (step function, evaluations per step).
FIXED_SOLVERS = {"euler": (_euler, 1), "midpoint": (_midpoint, 2), "heun": (_heun, 2), "rk4": (_rk4, 4)}


@dataclass
class SolveResult:
    """Output of :func:`integrate`.

    Attributes:
        x1: the state at t = 1.
        nfe: velocity evaluations made.
        trajectory: (K + 1, B, ...) states on the step grid (dopri5: on 33 uniform times, by
            dense output), or ``None``.
    """

    x1: Tensor
    nfe: int
    trajectory: Tensor | None = None


def integrate(
    velocity: Velocity,
    x0: Tensor,
    *,
    solver: str = "euler",
    nfe: int | None = None,
    rtol: float = DOPRI5_TOL,
    atol: float = DOPRI5_TOL,
    return_trajectory: bool = False,
) -> SolveResult:
    """Solve dx/dt = velocity(x, t) on [0, 1] from ``x0``.

    Args:
        velocity: called as ``velocity(x, t)`` with ``t`` a 0-d tensor of x's dtype and device.
        x0: (B, ...) initial states (noise).
        solver: ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` or ``"dopri5"``.
        nfe: total evaluations for a fixed-step solver (a multiple of its evaluations per
            step); must be ``None`` for dopri5.
        rtol, atol: dopri5 tolerances.
        return_trajectory: also return the intermediate states.
    """
    T = lambda s: torch.tensor(s, dtype=x0.dtype, device=x0.device)  # noqa: E731
    if solver == "dopri5":
        if nfe is not None:
            raise ValueError("dopri5 chooses its own steps: pass nfe=None (the count is reported)")
        return _dopri5(velocity, x0, rtol, atol, return_trajectory)
    if solver not in FIXED_SOLVERS:
        raise ValueError(f"unknown solver {solver!r}: expected one of {sorted(FIXED_SOLVERS)} or 'dopri5'")
    step, per_step = FIXED_SOLVERS[solver]
    if nfe is None or nfe < per_step or nfe % per_step:
        raise ValueError(f"solver {solver!r} needs nfe a positive multiple of {per_step}, got {nfe}")
    steps = nfe // per_step
    x, states = x0, [x0]
    for k in range(steps):
        t0, t1 = k / steps, (k + 1) / steps
        x = step(velocity, x, t0, t1 - t0, T)
        if return_trajectory:
            states.append(x)
    return SolveResult(x, nfe, torch.stack(states) if return_trajectory else None)


def _dopri5(velocity: Velocity, x0: Tensor, rtol: float, atol: float, return_trajectory: bool) -> SolveResult:
    from torchdiffeq import odeint

    count = 0

    def counted(t: Tensor, x: Tensor) -> Tensor:
        nonlocal count
        count += 1
        return velocity(x, t)

    points = 33 if return_trajectory else 2
    times = torch.linspace(0.0, 1.0, points, dtype=x0.dtype, device=x0.device)
    states = odeint(counted, x0, times, method="dopri5", rtol=rtol, atol=atol)
    return SolveResult(states[-1], count, states if return_trajectory else None)


def _call(model, x: Tensor, t: Tensor, labels: Tensor | None, r=None, drop=False) -> Tensor:
    kwargs = {} if labels is None else {"labels": labels}
    if r is not None:
        kwargs["r"] = r
    if isinstance(drop, Tensor) or drop:
        kwargs["drop_labels"] = drop
    return model(x, t, **kwargs)


def guided_velocity(model, labels: Tensor | None, scale: float = 1.0) -> Velocity:
    """Classifier-free guidance ``v = v_uncond + scale (v_cond - v_uncond)`` as ``velocity(x, t)``.

    ``scale = 1`` (or ``labels=None``) is the plain (conditional) model, one call per
    evaluation; otherwise the conditional and the null-class inputs go through one batched call.
    """
    if labels is None or scale == 1.0:
        return lambda x, t: _call(model, x, t, labels)

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        n = x.shape[0]
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(x.device)
        both = _call(model, torch.cat([x, x]), t, torch.cat([labels, labels]), drop=drop)
        v_cond, v_uncond = both[:n], both[n:]
        return v_uncond + scale * (v_cond - v_uncond)

    return velocity


def mean_flow_sample(model, x0: Tensor, steps: int = 1, labels: Tensor | None = None) -> Tensor:
    """Map noise to data with ``steps`` (1 or 2) jumps of the MeanFlow average velocity."""
    if steps not in (1, 2):
        raise ValueError(f"mean_flow_sample takes 1 or 2 steps, got {steps}")
    x = x0
    grid = [0.0, 1.0] if steps == 1 else [0.0, 0.5, 1.0]
    for r, t in zip(grid[:-1], grid[1:]):
        rr = torch.full((x.shape[0],), r, dtype=x.dtype, device=x.device)
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        x = x + (t - r) * _call(model, x, tt, labels, r=rr)
    return x


class _NoiseStream:
    """Standard normal samples drawn in fixed blocks, so the i-th sample does not depend on the batch size."""

    block = 1024

    def __init__(self, sample_shape: tuple[int, ...], generator: torch.Generator, dtype: torch.dtype) -> None:
        self.shape, self.generator, self.dtype = tuple(sample_shape), generator, dtype
        self.buffer = torch.empty(0, *self.shape, dtype=dtype)

    def take(self, k: int) -> Tensor:
        while self.buffer.shape[0] < k:
            fresh = torch.randn(self.block, *self.shape, generator=self.generator, dtype=self.dtype)
            self.buffer = torch.cat([self.buffer, fresh])
        out, self.buffer = self.buffer[:k], self.buffer[k:]
        return out


@torch.no_grad()
def generate(
    model,
    n: int,
    sample_shape: tuple[int, ...],
    *,
    solver: str = "euler",
    nfe: int | None = None,
    labels: Tensor | None = None,
    guidance: float = 1.0,
    seed: int = 0,
    batch_size: int = 512,
    device: str | torch.device | None = None,
    tol: float = DOPRI5_TOL,
) -> tuple[Tensor, int]:
    """Draw ``n`` samples of shape ``sample_shape`` from a trained model.

    Noise comes from a CPU generator seeded with ``seed``, in blocks of 1024 samples, so sample i
    is the same on any device and for any ``batch_size``.
    ``solver="meanflow"`` uses :func:`mean_flow_sample` with ``nfe`` (1 or 2) steps; guidance
    applies to the ODE solvers only. ``tol`` is dopri5's ``rtol = atol``. The model is put in eval
    mode and restored afterwards.

    Returns:
        ``(samples, nfe)``: samples (n, *sample_shape) on the CPU, and the evaluations per
        sample path (for dopri5 the mean over batches, rounded).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    if labels is not None and labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    noise = _NoiseStream(sample_shape, torch.Generator().manual_seed(seed), dtype)
    was_training = model.training
    model.eval()
    outputs, counts = [], []
    try:
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            x0 = noise.take(size).to(device)
            z = labels[start : start + size].to(device) if labels is not None else None
            if solver == "meanflow":
                outputs.append(mean_flow_sample(model, x0, nfe or 1, z).cpu())
                counts.append(nfe or 1)
                continue
            result = integrate(guided_velocity(model, z, guidance), x0, solver=solver, nfe=nfe, rtol=tol, atol=tol)
            outputs.append(result.x1.cpu())
            counts.append(result.nfe)
    finally:
        model.train(was_training)
    return torch.cat(outputs), int(round(sum(counts) / len(counts)))
