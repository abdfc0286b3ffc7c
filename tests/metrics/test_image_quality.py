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


def _ssim_by_definition(x, y, L=2.0, size=11, sigma=1.5):
    """Wang et al. (2004) position by position: 2-D Gaussian weights over each valid size x size window."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma**2))
    w = w / w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    values = []
    for b in range(x.shape[0]):
        total, count = 0.0, 0
        for c in range(x.shape[1]):
            for i in range(x.shape[2] - size + 1):
                for j in range(x.shape[3] - size + 1):
                    px, py = x[b, c, i:i + size, j:j + size].double(), y[b, c, i:i + size, j:j + size].double()
                    mx, my = (w * px).sum(), (w * py).sum()
                    vx, vy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2
                    cxy = (w * px * py).sum() - mx * my
                    total += float((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
                    count += 1
        values.append(total / count)
    return torch.tensor(values, dtype=torch.float64)


def test_ssim_matches_the_definition_position_by_position():
    # structured images (a smooth pattern plus noise) so that the contrast/structure term (C2) matters
    g = torch.Generator().manual_seed(4)
    grid = torch.linspace(-1, 1, 16)
    pattern = torch.sin(3 * grid)[:, None] * torch.cos(2 * grid)[None, :]
    x = (pattern + 0.2 * torch.randn(2, 2, 16, 16, generator=g)).clamp(-1, 1)
    y = (0.7 * x + 0.3 * torch.randn(2, 2, 16, 16, generator=g)).clamp(-1, 1)
    expected = _ssim_by_definition(x, y)
    assert ((expected > 0.2) & (expected < 0.9)).all()  # neither trivial extreme
    torch.testing.assert_close(ssim(x, y), expected, rtol=1e-10, atol=1e-12)
    # and for images smaller than the window, the window shrinks to the image (same sigma)
    small_x, small_y = x[:, :, :7, :7], y[:, :, :7, :7]
    torch.testing.assert_close(ssim(small_x, small_y), _ssim_by_definition(small_x, small_y, size=7), rtol=1e-10,
                               atol=1e-12)


def test_psnr_scales_with_the_data_range():
    # 10 log10(L^2 / MSE): doubling L adds 20 log10(2) dB
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 8, 8, generator=g)
    y = x + 0.05 * torch.randn(x.shape, generator=g)
    mse = (x.double() - y.double()).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(psnr(x, y, data_range=1.0), 10 * torch.log10(1.0 / mse))
    torch.testing.assert_close(psnr(x, y, data_range=2.0) - psnr(x, y, data_range=1.0),
                               torch.full((2,), 20 * math.log10(2.0), dtype=torch.float64))
