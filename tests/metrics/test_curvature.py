from __future__ import annotations

import math

import pytest
import torch

from sdfm.metrics import path_curvature, velocity_curvature


def test_straight_paths_have_zero_curvature():
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(8, 3, 4, generator=g), torch.randn(8, 3, 4, generator=g)
    t = torch.tensor([0.0, 0.1, 0.35, 0.6, 1.0]).view(-1, 1, 1, 1)
    trajectory = (1 - t) * x0 + t * x1
    assert path_curvature(trajectory) == pytest.approx(0.0, abs=1e-12)
    velocities = (x1 - x0).expand(4, -1, -1, -1)
    assert velocity_curvature(velocities, x1 - x0) == pytest.approx(0.0, abs=1e-12)


def test_bent_path_known_value():
    theta = 0.6
    bent = torch.tensor([[0.0, 0.0], [0.5, 0.5 * math.tan(theta)], [1.0, 0.0]], dtype=torch.float64).unsqueeze(1)
    straight = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], dtype=torch.float64).unsqueeze(1)
    trajectory = torch.cat([bent, straight], dim=1)  # (3, 2, 2): one bent, one straight sample
    assert path_curvature(trajectory) == pytest.approx(0.5 * (1 / math.cos(theta) - 1), rel=1e-12)


def test_velocity_curvature_known_value():
    displacement = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    deviation = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[0.0, -2.0], [1.0, 1.0]]])  # (T=2, B=2, 2)
    # squared norms 1, 0, 4, 2 -> mean 7/4
    assert velocity_curvature(displacement + deviation, displacement) == pytest.approx(7 / 4)


def test_velocity_curvature_shape_check():
    with pytest.raises(ValueError):
        velocity_curvature(torch.zeros(3, 4, 2), torch.zeros(5, 2))
