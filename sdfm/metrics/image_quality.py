"""Per-image reconstruction quality: PSNR and SSIM (for super-resolution and inversion).

Images are (B, C, H, W) floats on a range of width ``data_range`` (2 for [-1, 1]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["psnr", "ssim"]


def _check(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"x and y must both be (B, C, H, W), got {tuple(x.shape)} and {tuple(y.shape)}")
    return x.detach().to(torch.float64), y.detach().to(torch.float64)


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """Peak signal-to-noise ratio per image, ``10 log10(L^2 / MSE)`` in dB with ``L = data_range``.

    MSE is the mean over channels and pixels; identical images give ``inf``.

    Returns:
        (B,) float64 tensor.
    """
    x, y = _check(x, y)
    mse = (x - y).square().mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(data_range**2 / mse)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma**2))
    return g / g.sum()


def ssim(x: Tensor, y: Tensor, data_range: float = 2.0, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), Gaussian window, standard constants.

    With local Gaussian-weighted means ``mu``, variances ``s^2`` and covariance ``s_xy``
    (window 11x11, sigma 1.5, "valid" positions only, per channel),

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),

    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range``, averaged over positions and
    channels. Images smaller than the window use a window of ``min(H, W)`` pixels (same sigma).

    Returns:
        (B,) float64 tensor; 1 for identical images.
    """
    x, y = _check(x, y)
    channels = x.shape[1]
    size = min(window_size, x.shape[2], x.shape[3])
    g = _gaussian_window(size, sigma, x.device)
    weight_h = g.view(1, 1, size, 1).expand(channels, 1, size, 1)
    weight_w = g.view(1, 1, 1, size).expand(channels, 1, 1, size)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, weight_h, groups=channels), weight_w, groups=channels)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x.square()
    var_y = blur(y * y) - mu_y.square()
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    denominator = (mu_x.square() + mu_y.square() + c1) * (var_x + var_y + c2)
    return (numerator / denominator).mean(dim=(1, 2, 3))
