from __future__ import annotations

import math

import pytest
import torch

from sdfm.metrics import psnr, ssim


def test_identical_images():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert torch.isinf(psnr(x, x)).all()
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))


def test_psnr_known_noise_level():
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sigma = torch.tensor([0.1, 0.02]).view(2, 1, 1, 1)
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    expected = torch.tensor([10 * math.log10(4 / 0.1**2), 10 * math.log10(4 / 0.02**2)], dtype=torch.float64)
    assert torch.allclose(psnr(x, x + sigma * signs), expected)


def test_ssim_constant_images_is_luminance_term():
    a, b, L = 0.3, -0.2, 2.0
    c1 = (0.01 * L) ** 2
    x, y = torch.full((1, 3, 20, 20), a), torch.full((1, 3, 20, 20), b)
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_small_images_and_noise():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    values = ssim(x, noisy)
    assert values.shape == (4,)
    assert ((values > -1) & (values < 0.99)).all()
