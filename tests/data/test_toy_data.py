"""2-D toy distributions."""

from __future__ import annotations

import math

import pytest
import torch

from sdfm.data import build_dataset

TOYS = ["checkerboard", "eight_gaussians", "moons", "two_rings", "spiral"]


@pytest.mark.parametrize("name", TOYS)
def test_shapes_dtype_and_scale(name):
    data = build_dataset(name, n_train=300, n_test=40, seed=1)
    assert data.kind == "points" and data.name == name
    assert data.train.shape == (300, 2) and data.test.shape == (40, 2)
    assert data.train.dtype == torch.float32 and data.test.dtype == torch.float32
    assert data.train_labels is None and data.test_labels is None and data.num_classes is None
    assert torch.isfinite(data.train).all()
    assert data.train.abs().max() < 3.5
    assert data.train.std() > 0.3


@pytest.mark.parametrize("name", TOYS)
def test_seeded(name):
    a = build_dataset(name, n_train=50, n_test=5, seed=3)
    b = build_dataset(name, n_train=50, n_test=5, seed=3)
    c = build_dataset(name, n_train=50, n_test=5, seed=4)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert not torch.equal(a.train, c.train)
    assert not torch.equal(a.train[:5], a.test)


def test_defaults():
    data = build_dataset("moons")
    assert data.train.shape == (5000, 2) and data.test.shape == (2000, 2)


def test_checkerboard_uses_dark_squares_only():
    points = build_dataset("checkerboard", n_train=2000, n_test=0).train
    assert points.min() >= -2 and points.max() <= 2
    cells = torch.floor(points + 2).long()
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).all()
    assert len({tuple(c) for c in cells.tolist()}) == 8


def test_eight_gaussians_sit_on_the_radius_two_circle():
    points = build_dataset("eight_gaussians", n_train=4000, n_test=0).train
    angles = torch.round(torch.atan2(points[:, 1], points[:, 0]) / (math.pi / 4)) * (math.pi / 4)
    centres = 2 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    assert (points - centres).std().item() == pytest.approx(0.2, rel=0.1)
    assert len(torch.unique(angles.remainder(2 * math.pi).mul(4 / math.pi).round())) == 8
