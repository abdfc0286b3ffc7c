from __future__ import annotations

import itertools
import math

import pytest
import torch

from sdfm.metrics import energy_distance, wasserstein2


def test_w2_point_masses_shifted():
    x = torch.tensor([[0.5, -1.0, 2.0]])
    shift = torch.tensor([3.0, 4.0, 12.0])
    assert wasserstein2(x, x + shift) == pytest.approx(13.0, rel=1e-12)


def test_w2_translated_cloud_is_shift_norm():
    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert wasserstein2(x, x + shift) == pytest.approx(float(shift.norm()), rel=1e-9)


def test_w2_identical_sets_is_zero():
    x = torch.randn(100, 3, 2, generator=torch.Generator().manual_seed(1))
    assert wasserstein2(x, x.clone()) == pytest.approx(0.0, abs=1e-10)


def test_w2_matches_sorting_in_1d():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(300, 1, generator=g), 2.0 * torch.rand(300, 1, generator=g) + 0.3
    expected = math.sqrt(float((x.double().sort(0).values - y.double().sort(0).values).square().mean()))
    assert wasserstein2(x, y) == pytest.approx(expected, rel=1e-9)


def test_w2_subsampling_is_seeded():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(400, 2, generator=g), torch.randn(300, 2, generator=g) + 1.0
    a = wasserstein2(x, y, max_points=100, seed=7)
    assert a == wasserstein2(x, y, max_points=100, seed=7)
    assert a != wasserstein2(x, y, max_points=100, seed=8)


def _energy_brute(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double().flatten(1), y.double().flatten(1)
    n, m = len(x), len(y)
    cross = sum(float((a - b).norm()) for a in x for b in y) / (n * m)
    wx = sum(float((x[i] - x[j]).norm()) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    wy = sum(float((y[i] - y[j]).norm()) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    return 2 * cross - wx - wy


def test_energy_matches_brute_force_with_chunks():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(13, 2, 2, generator=g), torch.randn(9, 2, 2, generator=g) + 0.5
    assert energy_distance(x, y, chunk_size=4) == pytest.approx(_energy_brute(x, y), rel=1e-10)


def test_energy_identical_sets():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(5))
    assert energy_distance(x, x, unbiased=False) == pytest.approx(0.0, abs=1e-12)
    # The U-statistic estimate of identical clouds is exactly -(2/n) E|X - X'|.
    within = float(torch.pdist(x.double()).mean())
    assert energy_distance(x, x) == pytest.approx(-2.0 / len(x) * within, rel=1e-10)


def test_energy_positive_for_shifted_gaussians():
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(500, 4, generator=g), torch.randn(500, 4, generator=g) + 1.0
    assert energy_distance(x, y) > 0.3
    assert abs(energy_distance(x, torch.randn(500, 4, generator=g))) < 0.05
