"""Straightness of the ODE paths a flow model integrates.

Two measures, both 0 for perfectly straight (constant-velocity) paths:

- :func:`path_curvature`, geometric: the excess length of the polygonal path over its chord.
- :func:`velocity_curvature`, kinematic (Liu et al. 2023, "Flow straight and fast",
  rectified flow): the mean squared deviation of the velocity from the mean displacement.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["path_curvature", "velocity_curvature"]


def path_curvature(trajectory: Tensor, eps: float = 1e-12) -> float:
    """Mean relative excess length of the sampled paths.

    For sample b with states ``x_0, ..., x_T`` (the ODE solution at times ``0 = t_0 < ... < t_T = 1``)

        kappa_b = (sum_{t=0}^{T-1} |x_{t+1} - x_t|) / |x_T - x_0| - 1,

    and the function returns ``mean_b kappa_b``. ``kappa_b >= 0`` by the triangle inequality, with
    equality iff the path is a straight segment traversed monotonically; it does not depend on
    the time grid as long as the grid resolves the path. A path bent once at its midpoint by an
    angle theta on each side has ``kappa = 1/cos(theta) - 1``.

    Args:
        trajectory: (T+1, B, ...) states; trailing dimensions are flattened.
        eps: lower bound on the chord length, so a closed path gives a large finite value.

    Returns:
        The mean over the B samples, a Python float.
    """
    if trajectory.dim() < 2 or trajectory.shape[0] < 2:
        raise ValueError(f"trajectory must be (T+1, B, ...) with T >= 1, got {tuple(trajectory.shape)}")
    path = trajectory.detach().reshape(trajectory.shape[0], trajectory.shape[1], -1).to(torch.float64)
    length = (path[1:] - path[:-1]).norm(dim=-1).sum(dim=0)
    chord = (path[-1] - path[0]).norm(dim=-1).clamp_min(eps)
    return float((length / chord - 1.0).mean())


def velocity_curvature(velocities: Tensor, displacement: Tensor) -> float:
    """Rectified-flow straightness ``S = mean_t mean_b |v_t(b) - (x_1(b) - x_0(b))|^2``.

    Liu et al. define ``S(Z) = int_0^1 E |(Z_1 - Z_0) - v(Z_t, t)|^2 dt``; on a time grid the
    integral is the mean over the T evaluations. ``|.|^2`` sums over all feature dimensions (it
    is not divided by the dimension). S = 0 iff every path has constant velocity ``x_1 - x_0``.

    Args:
        velocities: (T, B, ...) the velocity field evaluated along the paths (for an Euler solve,
            the T velocities used by the steps).
        displacement: (B, ...) ``x_1 - x_0``, the end state minus the start state of each path.

    Returns:
        The mean over time and samples, a Python float.
    """
    if velocities.shape[1:] != displacement.shape:
        raise ValueError(
            f"velocities (T, B, ...) {tuple(velocities.shape)} and displacement (B, ...) "
            f"{tuple(displacement.shape)} do not match"
        )
    diff = velocities.detach().to(torch.float64) - displacement.detach().to(torch.float64).unsqueeze(0)
    return float(diff.reshape(diff.shape[0], diff.shape[1], -1).square().sum(dim=-1).mean())
