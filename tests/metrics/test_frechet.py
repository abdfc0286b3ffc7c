from __future__ import annotations

import numpy as np
import pytest
import torch

from sdfm.metrics import frechet_distance_features


def _with_moments(rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """n samples whose sample mean and (unbiased) sample covariance are exactly mean and cov."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T
    return z @ np.linalg.cholesky(cov).T + mean


def test_frechet_matches_gaussian_closed_form():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    d_a, d_b = np.array([1.0, 2.0, 0.5, 3.0, 0.1]), np.array([0.2, 2.0, 1.5, 1.0, 4.0])
    cov_a, cov_b = rotation @ np.diag(d_a) @ rotation.T, rotation @ np.diag(d_b) @ rotation.T
    mu_a, mu_b = rng.standard_normal(5), rng.standard_normal(5)
    feats_a, feats_b = _with_moments(rng, 400, mu_a, cov_a), _with_moments(rng, 300, mu_b, cov_b)
    # Commuting covariances: tr(S_a + S_b - 2 (S_a S_b)^(1/2)) = sum (sqrt(d_a) - sqrt(d_b))^2.
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(d_a) - np.sqrt(d_b)) ** 2)
    assert frechet_distance_features(feats_a, feats_b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance_features(torch.from_numpy(feats_a), feats_b) == pytest.approx(expected, rel=1e-9)


def test_frechet_identical_is_zero_and_rank_deficient_is_finite():
    x = np.random.default_rng(1).standard_normal((10, 32))  # fewer samples than dimensions
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-6)
    y = np.random.default_rng(2).standard_normal((10, 32)) + 1.0
    assert np.isfinite(frechet_distance_features(x, y))
