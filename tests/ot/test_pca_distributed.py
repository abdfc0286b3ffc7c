"""The PCA basis of sharded points (2 gloo ranks) against :func:`sdfm.ot.pca.fit_pca` of all of them.

Tolerance: the sharded basis sums the moments in another order (per-shard scatter, then the
all-reduce), so it differs from the one-process covariance by float64 rounding; with the test's
well-separated spectrum the eigenvectors move by ~1e-15 (we ask for 1e-10).
"""

import pytest
import torch
from gloo_spawn import run_ranks

from sdfm.ot.distributed import shard_bounds
from sdfm.ot.pca import fit_pca
from sdfm.ot.pca_distributed import fit_pca_sharded

pytestmark = pytest.mark.timeout(180)

WORLD = 2
K = 3


def _points(n: int, d: int) -> torch.Tensor:
    """Points with distinct variances along d directions (a well-separated spectrum) and a nonzero mean."""
    gen = torch.Generator().manual_seed(n)
    scales = torch.linspace(3.0, 0.5, d, dtype=torch.float64)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) * scales + 1.0


CASES = {"many": (501, 6), "few": (5, 6)}  # N > D (moments all-reduced) and N <= D (shards gathered)


def _rank_main(rank: int, world: int, out: str) -> dict:
    results = {}
    for name, (n, d) in CASES.items():
        start, stop = shard_bounds(n, world, rank)
        basis = fit_pca_sharded(_points(n, d)[start:stop].to(torch.float32 if name == "many" else torch.float64),
                                K, chunk=64)
        results[name] = basis.state()
    return results


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return run_ranks(_rank_main, WORLD, tmp_path_factory.mktemp("pca_sharded"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_sharded_basis_is_the_basis_of_all_points(sharded, name):
    n, d = CASES[name]
    y = _points(n, d)
    one = fit_pca(y.to(torch.float32) if name == "many" else y, K)  # the same float32 points for "many"
    for rank in sharded:  # every rank holds the same basis
        torch.testing.assert_close(rank[name]["components"], sharded[0][name]["components"], rtol=0, atol=0)
    two = sharded[0][name]
    torch.testing.assert_close(two["components"], one.components, rtol=0, atol=1e-10)
    torch.testing.assert_close(two["explained_variance"], one.explained_variance, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(two["mean"], one.mean, rtol=0, atol=1e-12)
    assert two["total_variance"] == pytest.approx(one.total_variance, rel=1e-12)
    # orthonormal rows: P P^T = I_k
    torch.testing.assert_close(two["components"] @ two["components"].T, torch.eye(K, dtype=torch.float64),
                               rtol=0, atol=1e-12)
