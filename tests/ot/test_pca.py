"""The PCA cost (sdfm.ot.pca) against exact references: numpy's SVD subspace, the Gaussian pushed by P,
rotation invariance at k = D, POT's exact assignment of a discretised projected source, and the
exact product-grid potential carried by the top-2 subspace of rotated 3-D data."""

import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from sdfm.ot import SemidiscretePotential, fit_potential
from sdfm.ot.pca import PCABasis, ProjectedPotential, fit_pca, load_potential, pairing_quality, project_keys
from sdfm.ot.potential import data_fingerprint

from test_references import GRIDS, _check_against_exact, product_grid


def _anisotropic(n, d, seed=0):
    """Points with a well separated spectrum (scales 3, 2.5, 2, ...) in a random orientation, off-centre."""
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.3, d)
    rot = ortho_group.rvs(d, random_state=seed)
    return torch.tensor(rng.standard_normal((n, d)) * scales @ rot + rng.standard_normal(d))


@pytest.mark.parametrize("n, d, k", [(500, 6, 3), (5, 8, 3), (4, 6, 5)])  # eigh (N > D), SVD (N <= D), rank < k
def test_basis_is_orthonormal_and_spans_numpys_svd_subspace(n, d, k):
    y = _anisotropic(n, d)
    basis = fit_pca(y, k)
    p = basis.components
    assert p.shape == (k, d) and p.dtype == torch.float64
    torch.testing.assert_close(p @ p.T, torch.eye(k, dtype=torch.float64), atol=1e-12, rtol=0)
    centred = y.numpy() - y.numpy().mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    rank = min(k, int((s > 1e-9 * s[0]).sum()))
    ref = vt[:rank].T @ vt[:rank]  # the projector onto numpy's top principal directions
    mine = p[:rank].numpy().T @ p[:rank].numpy()
    np.testing.assert_allclose(mine, ref, atol=1e-9)
    np.testing.assert_allclose(basis.explained_variance[:rank].numpy(), s[:rank] ** 2 / (n - 1), rtol=1e-9)
    assert basis.explained_variance_ratio == pytest.approx((s[:rank] ** 2).sum() / (s**2).sum(), rel=1e-9)
    # deterministic sign: each row's largest-magnitude entry is positive, whatever the row order of y
    assert (p[torch.arange(k), p.abs().argmax(dim=1)] > 0).all()
    torch.testing.assert_close(fit_pca(y[torch.randperm(n)], k).components, p, atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="PCA dimension"):
        fit_pca(y, d + 1)


def test_projected_gaussian_noise_is_standard_gaussian():
    basis = fit_pca(_anisotropic(400, 10), 4)
    x = torch.randn(200_000, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = basis.project(x)
    n = x.shape[0]
    assert u.mean(dim=0).abs().max() < 5 / n**0.5  # 5 sigma
    cov = torch.cov(u.T)
    assert (cov - torch.eye(4, dtype=torch.float64)).abs().max() < 5 * (2 / n) ** 0.5
    # fourth moments of a standard Gaussian: E u^4 = 3
    assert (u.pow(4).mean(dim=0) - 3).abs().max() < 5 * (96 / n) ** 0.5


def test_full_rank_pca_potential_pairs_like_the_full_space_potential():
    y = _anisotropic(300, 5, seed=1)
    full = fit_potential(y, steps=500, batch_size=256, progress=False)
    basis = fit_pca(y, 5)  # k = D: a rotation, <P x, P y> = <x, y>
    same_g = ProjectedPotential(basis, SemidiscretePotential(project_keys(basis, y), full.g))
    x = torch.randn(20_000, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert (same_g.assign(x) == full.assign(x)).double().mean() > 0.9999  # identical up to float near-ties
    # fitted on its own (its source draws differ): the same cells up to the fits' accuracy
    fitted = ProjectedPotential(basis, fit_potential(project_keys(basis, y), steps=500, batch_size=256,
                                                     progress=False))
    assert (fitted.assign(x) == full.assign(x)).double().mean() > 0.9
    assert fitted.chi2(x) < 0.1 and full.chi2(x) < 0.1


def test_pairing_equals_pots_exact_assignment_of_a_discretised_projected_source():
    ot = pytest.importorskip("ot")
    y = _anisotropic(4, 6, seed=2)
    basis = fit_pca(_anisotropic(200, 6, seed=3), 2)  # any orthonormal P (k = 2)
    m = 400
    x = torch.randn(m, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    u, keys = basis.project(x), project_keys(basis, y)
    cost = -(u @ keys.T).numpy()  # the PCA cost up to terms in u alone and in P y_j alone (absorbed by g)
    plan, log = ot.emd(np.full(m, 1 / m), np.full(4, 1 / 4), cost, log=True)
    assigned = plan.argmax(axis=1)
    assert np.allclose(plan.max(axis=1), 1 / m)  # an assignment: 100 samples per point
    potential = ProjectedPotential(basis, SemidiscretePotential(keys, torch.tensor(log["v"])))
    ours = potential.assign(x).numpy()
    scores = (u @ keys.T).numpy() + log["v"]
    # POT's pairs attain the max score (complementary slackness); ours is that argmax, so they agree
    # except at the dual's ties (at most N - 1 samples for a basic optimal solution)
    assert np.all(scores[np.arange(m), assigned] >= scores.max(axis=1) - 1e-9)
    assert (ours != assigned).sum() <= 3
    assert np.all(np.isclose(scores[np.arange(m), ours], scores[np.arange(m), assigned], atol=1e-9))


def test_pca_potential_of_rotated_grid_data_is_the_exact_product_grid_potential():
    """y = R [a_i, c_k, z_ik] with z_ik = 0.05 s_i t_k (mean-free s, t: uncorrelated with the grid, variance
    far below it), so the top-2 subspace is span(R e1, R e2) and the k = 2 problem is the product grid
    rotated in the plane: its exact potential is the grid's (the Gaussian is rotation invariant)."""
    a, wa, c, wc = GRIDS["uniform 5x4"]
    y2, g_exact, b, lap = product_grid(a, wa, c, wc)
    s, t = np.array([1.0, -1, 1, -1, 0]), np.array([1.0, -1, 1, -1])
    z = 0.05 * (s[:, None] * t[None, :]).reshape(-1)
    rot = torch.tensor(ortho_group.rvs(3, random_state=7))
    y = torch.cat([y2, torch.tensor(z)[:, None]], dim=1) @ rot.T
    basis = fit_pca(y, 2)
    np.testing.assert_allclose((basis.components @ rot)[:, 2].numpy(), 0, atol=1e-9)  # the subspace of the grid
    inner = fit_potential(project_keys(basis, y), steps=3000, batch_size=512, progress=False)
    potential = ProjectedPotential(basis, inner)
    x3 = torch.randn(400_000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # masses of the full-space noise's cells and the potential meet the exact solution's bounds
    chi2 = _check_against_exact(potential.g.double(), project_keys(basis, y), g_exact, b, lap, basis.project(x3))
    assert chi2 < 2e-3 and potential.chi2(x3) == pytest.approx(chi2)


def test_save_load_guards_the_data_and_the_loader_picks_the_kind(tmp_path):
    y = _anisotropic(200, 6, seed=5)
    basis = fit_pca(y, 3)
    inner = fit_potential(project_keys(basis, y), steps=100, batch_size=128, progress=False)
    pca = ProjectedPotential(basis, inner, fingerprint=data_fingerprint(y))
    pca.save(tmp_path / "pca.pt")
    back = load_potential(tmp_path / "pca.pt", y)
    assert isinstance(back, ProjectedPotential) and back.pca_dim == 3 and back.dim == 6
    x = torch.randn(2000, 6, dtype=torch.float64)
    assert torch.equal(back.assign(x), pca.assign(x))
    with pytest.raises(ValueError, match="fingerprint"):
        load_potential(tmp_path / "pca.pt", y + 1)
    with pytest.raises(ValueError, match="queries of dim"):
        back.assign(torch.randn(3, 3))
    inner.save(tmp_path / "full.pt", include_data=False)
    assert isinstance(load_potential(tmp_path / "full.pt", project_keys(basis, y)), SemidiscretePotential)
    assert isinstance(PCABasis.from_state(basis.state()), PCABasis)


def test_label_coordinates_pass_through():
    y = _anisotropic(150, 6, seed=6)
    labels = torch.nn.functional.one_hot(torch.arange(150) % 3, 3).double()
    keys = torch.cat([y, labels], dim=1)
    basis = fit_pca(y, 2)
    projected = project_keys(basis, keys, extra=3)
    torch.testing.assert_close(projected[:, 2:], labels)
    potential = ProjectedPotential(basis, SemidiscretePotential(projected, torch.zeros(150, dtype=torch.float64)), 3)
    q = torch.cat([torch.randn(10, 6, dtype=torch.float64), labels[:10]], dim=1)
    torch.testing.assert_close(potential.project(q), torch.cat([basis.project(q[:, :6]), labels[:10]], dim=1))


def test_pairing_quality_decomposes_the_full_space_cost():
    """E|x - y_T|^2 = E|P x - P y_T|^2 + (D - k) + sum_j b_j |Q y_j|^2 when the marginal is exact."""
    y = _anisotropic(200, 8, seed=8)
    basis = fit_pca(y, 3)
    keys = project_keys(basis, y)
    pca = ProjectedPotential(basis, fit_potential(keys, steps=600, batch_size=512, progress=False))
    full = fit_potential(y, steps=600, batch_size=512, progress=False)
    x = torch.randn(30_000, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    q = pairing_quality(pca, y, x, reference=full)
    assert q["cost_independent"] == pytest.approx(8 + y.square().sum(dim=1).mean().item())
    index = pca.assign(x)
    k_cost = (basis.project(x) - keys[index]).square().sum(dim=1).mean().item()
    complement = (y.square().sum(dim=1) - keys.square().sum(dim=1)).mean().item()
    assert q["cost"] == pytest.approx(k_cost + (8 - 3) + complement, rel=0.02)
    assert q["cost_reference"] < q["cost"] < q["cost_independent"]
    assert 0 < q["gain_retained"] < 1 and 0 < q["agreement"] < 1
    assert q["excess_cost"] == pytest.approx(q["cost"] - q["cost_reference"])
    # the share of the OT gain over independent pairs that the PCA pairs keep; the share of equal pairs (eps = 0)
    gain = (q["cost_independent"] - q["cost"]) / (q["cost_independent"] - q["cost_reference"])
    assert q["gain_retained"] == pytest.approx(gain, rel=1e-12)
    assert q["agreement"] == pytest.approx(float((index == full.assign(x)).double().mean()), rel=1e-12)
