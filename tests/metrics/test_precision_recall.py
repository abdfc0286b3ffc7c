from __future__ import annotations

import torch

from sdfm.metrics import precision_recall


def test_identical_sets():
    x = torch.randn(60, 5, generator=torch.Generator().manual_seed(0))
    assert precision_recall(x, x.clone(), chunk_size=16) == (1.0, 1.0)


def test_disjoint_far_sets():
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(50, 4, generator=g), torch.randn(40, 4, generator=g) + 100.0
    assert precision_recall(real, fake.numpy()) == (0.0, 0.0)


def test_half_of_fakes_off_manifold():
    g = torch.Generator().manual_seed(2)
    real = torch.randn(80, 3, generator=g)
    fake = torch.cat([real[:20], torch.randn(20, 3, generator=g) + 50.0])
    precision, _ = precision_recall(real, fake, k=3, chunk_size=7)
    assert precision == 0.5
