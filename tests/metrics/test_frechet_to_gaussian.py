"""The Frechet distance from features to N(mu, sigma) against scipy's sqrtm formula and torch-fidelity's."""

import numpy as np
import pytest
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

from sdfm.metrics.frechet import frechet_distance_gaussians, frechet_distance_to_gaussian, gaussian_statistics


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, d) + shift


@pytest.mark.parametrize("n", [5, 40, 300])  # fewer samples than dimensions (singular S_a) and more
def test_it_equals_the_sqrtm_formula_and_torch_fidelity(n):
    d = 40
    gen, ref = _features(n, d, 1, 0.3), _features(500, d, 2)
    mu, sigma = gaussian_statistics(ref)
    ours = frechet_distance_to_gaussian(gen, mu, sigma)
    assert ours == pytest.approx(frechet_distance_gaussians(*gaussian_statistics(gen), mu, sigma), rel=1e-7)
    mu_g, sigma_g = gaussian_statistics(gen)
    fidelity = fid_statistics_to_metric({"mu": mu_g, "sigma": sigma_g}, {"mu": mu, "sigma": sigma}, verbose=False)
    assert ours == pytest.approx(fidelity[KEY_METRIC_FID], rel=1e-7)


def test_closed_form_for_gaussians_with_commuting_covariances():
    """Diagonal covariances: FD = |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2 exactly."""
    rng = np.random.default_rng(0)
    d, n = 6, 7
    feats = rng.normal(size=(n, d))
    mu_a, sigma_a = gaussian_statistics(feats)
    # make the sample covariance diagonal: rotate the centred features onto its eigenvectors
    _, vectors = np.linalg.eigh(sigma_a)
    feats = (feats - mu_a) @ vectors + mu_a
    mu_a, sigma_a = gaussian_statistics(feats)
    diag_a = np.diag(sigma_a)
    mu_b, diag_b = rng.normal(size=d), rng.uniform(0.1, 3.0, d)
    expected = float(np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(diag_a) - np.sqrt(diag_b)) ** 2))
    assert frechet_distance_to_gaussian(feats, mu_b, np.diag(diag_b)) == pytest.approx(expected, rel=1e-9)


def test_a_set_against_its_own_statistics_is_zero_and_shapes_are_checked():
    feats = _features(50, 8, 3)
    assert abs(frechet_distance_to_gaussian(feats, *gaussian_statistics(feats))) < 1e-9
    with pytest.raises(ValueError, match="dimension 8"):
        frechet_distance_to_gaussian(feats, np.zeros(7), np.eye(7))
    with pytest.raises(ValueError, match="n >= 2"):
        frechet_distance_to_gaussian(feats[:1], np.zeros(8), np.eye(8))
