"""Frechet distance between Gaussians fitted to two feature sets (the formula behind FID).

For features with means ``mu_a, mu_b`` and covariances ``S_a, S_b``,

    FD = |mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)),

the squared Wasserstein-2 distance between ``N(mu_a, S_a)`` and ``N(mu_b, S_b)`` (Heusel et al.
2017). Computed in float64 with ``scipy.linalg.sqrtm``; when the square root is not finite (a
near-singular product, e.g. fewer samples than dimensions) ``eps I`` is added to both
covariances and the root recomputed. The (numerically tiny) imaginary part is dropped.

:func:`frechet_distance_to_gaussian` takes the samples' features themselves and the reference's
statistics. It uses that ``S_a S_b`` is similar to the symmetric PSD ``S_a^(1/2) S_b S_a^(1/2)``, so
``tr((S_a S_b)^(1/2)) = sum_i sqrt(lambda_i)`` over the eigenvalues of a symmetric matrix: with
``A`` the (n, d) centred features over ``sqrt(n - 1)`` (``S_a = A^T A``), the nonzero eigenvalues of
``A^T A S_b`` are those of the n x n matrix ``A S_b A^T`` (n <= d), else of ``R S_b R`` with
``R = S_a^(1/2)`` from ``eigh``. Exact, and a small symmetric eigenproblem instead of a general one
on d x d (2048 x 2048 for Inception: a minute on two cores when the product is singular).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
from torch import Tensor

__all__ = ["frechet_distance_features", "frechet_distance_to_gaussian", "gaussian_statistics",
           "frechet_distance_gaussians"]


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


def frechet_distance_to_gaussian(feats: np.ndarray | Tensor, mu: np.ndarray, sigma: np.ndarray) -> float:
    """Frechet distance between the Gaussian fitted to (n, d) features and ``N(mu, sigma)``.

    The same number as ``frechet_distance_gaussians(*gaussian_statistics(feats), mu, sigma)``,
    computed through a symmetric eigenproblem of size min(n, d) (see the module docstring);
    rounding-level negative eigenvalues count as 0.
    """
    if isinstance(feats, Tensor):
        feats = feats.detach().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float64)
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise ValueError(f"features must be (n, d) with n >= 2, got shape {feats.shape}")
    n, d = feats.shape
    if mu.shape != (d,) or sigma.shape != (d, d):
        raise ValueError(f"statistics of shape {mu.shape}/{sigma.shape} do not match features of dimension {d}")
    mean = feats.mean(axis=0)
    factor = (feats - mean) / np.sqrt(n - 1)  # S_a = factor^T factor
    if n <= d:
        inner = factor @ sigma @ factor.T
    else:
        values, vectors = np.linalg.eigh(factor.T @ factor)
        root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
        inner = root @ sigma @ root
    eigenvalues = np.linalg.eigvalsh((inner + inner.T) / 2)
    trace_root = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    diff = mean - mu
    return float(diff @ diff + np.square(factor).sum() + np.trace(sigma) - 2.0 * trace_root)
