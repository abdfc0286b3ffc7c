"""Frechet distance between Gaussians fitted to two feature sets (the formula behind FID).

For features with means ``mu_a, mu_b`` and covariances ``S_a, S_b``,

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)),

the squared Wasserstein-2 distance between ``N(mu_a, S_a)`` and ``N(mu_b, S_b)`` (Heusel et al.
2017). Computed in float64 with ``scipy.linalg.sqrtm``; when the square root is not finite (a
near-singular product, e.g. fewer samples than dimensions) ``eps I`` is added to both
covariances and the root recomputed. The (numerically tiny) imaginary part is dropped.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from torch import Tensor

__all__ = ["frechet_distance_features", "gaussian_statistics", "frechet_distance_gaussians"]


def gaussian_statistics(feats: np.ndarray | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (d,) and unbiased covariance (d, d) of (n, d) features, in float64."""
    if isinstance(feats, Tensor):
        feats = feats.detach().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"features must be (n, d) with n >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_distance_gaussians(
    mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray, sigma_b: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between ``N(mu_a, sigma_a)`` and ``N(mu_b, sigma_b)`` (see module docstring)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.asarray(sigma_a, np.float64), np.asarray(sigma_b, np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"statistics differ in shape: {mu_a.shape}/{sigma_a.shape} vs {mu_b.shape}/{sigma_b.shape}")
    covmean = scipy.linalg.sqrtm(sigma_a @ sigma_b)
    if not np.isfinite(covmean).all():
        warnings.warn(f"sqrtm of the covariance product is not finite; adding {eps} to the diagonals", stacklevel=2)
        offset = eps * np.eye(len(sigma_a))
        covmean = scipy.linalg.sqrtm((sigma_a + offset) @ (sigma_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * np.trace(covmean))


def frechet_distance_features(feats_a: np.ndarray | Tensor, feats_b: np.ndarray | Tensor) -> float:
    """Frechet distance between Gaussians fitted to two (n, d) feature sets.

    Args:
        feats_a: (n_a, d) features, e.g. of generated samples.
        feats_b: (n_b, d) features, e.g. of reference samples.

    Returns:
        ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2))``, a Python float. Which
        feature space it lives in (Inception pool3 for FID, a FeatureNet embedding, ...) is the
        caller's to record in the metric name.
    """
    return frechet_distance_gaussians(*gaussian_statistics(feats_a), *gaussian_statistics(feats_b))
