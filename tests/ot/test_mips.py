"""MIPS backends return the brute-force argmax of <[x, 1], [y, g]>."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sdfm.ot.kernel import augment_keys, augment_queries
from sdfm.ot.mips import BACKENDS, FaissMips, MipsBackend, TorchMips, choose_backend, get_backend

HAS_FAISS = importlib.util.find_spec("faiss") is not None  # an optional extra (sdfm[faiss])
needs_faiss = pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed (pip install 'sdfm[faiss]')")
SHAPES = [(1, 1, 1), (7, 1, 3), (64, 50, 2), (257, 1000, 17), (33, 4096, 129)]


def _problem(b, n, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=gen)
    y = torch.randn(n, d, generator=gen)
    g = torch.randn(n, generator=gen)
    return augment_queries(x), augment_keys(y, g)


def _brute(queries, keys):
    return (queries.double() @ keys.double().T).argmax(dim=1)


@pytest.mark.parametrize("backend", [TorchMips(), TorchMips(block_elems=100),
                                     pytest.param(FaissMips() if HAS_FAISS else None, marks=needs_faiss, id="FaissMips()")],
                         ids=repr)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_search_matches_brute_force(backend, shape):
    queries, keys = _problem(*shape)
    index = backend.search(queries, keys)
    assert index.dtype == torch.long and index.shape == (shape[0],)
    assert torch.equal(index, _brute(queries, keys))


@pytest.mark.parametrize("name", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_build_reuses_fixed_keys(name):
    queries, keys = _problem(300, 2000, 9, seed=1)
    searcher = get_backend(name).build(keys)
    for part in queries.split(100):
        assert torch.equal(searcher(part), _brute(part, keys))


@needs_faiss
def test_faiss_accepts_float64_and_noncontiguous():
    queries, keys = _problem(50, 300, 5, seed=2)
    q64, k64 = queries.double(), keys.double()
    k_nc = k64.T.contiguous().T  # column-major view, same values
    assert not k_nc.is_contiguous()
    assert torch.equal(FaissMips().search(q64, k_nc), _brute(q64, k64))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="share D"):
        TorchMips().search(torch.zeros(2, 3), torch.zeros(4, 5))


def test_unknown_backend_lists_names():
    with pytest.raises(ValueError, match="faiss.*torch|auto") as err:
        get_backend("annoy")
    for name in ("torch", "faiss", "auto"):
        assert name in str(err.value)


def test_auto_returns_a_registered_backend():
    assert isinstance(get_backend("auto"), MipsBackend)
    for shape in [(100, 3, 64), (10**6, 785, 1024), (10**5, 65, 8192)]:
        assert choose_backend(*shape, device="cpu") in BACKENDS
        backend = get_backend("auto", n_keys=shape[0], dim=shape[1], n_queries=shape[2])
        assert backend.name == choose_backend(*shape, device="cpu")
    assert choose_backend(10**6, 785, 1024, device="cuda") in BACKENDS


def test_fixed_keys_rule_is_cpu_eps0_large_d_large_batch():
    from sdfm.ot.mips import faiss_pays_for_fixed_keys

    assert faiss_pays_for_fixed_keys(785, 256) is HAS_FAISS
    assert faiss_pays_for_fixed_keys(3073, 1024) is HAS_FAISS
    for args, kw in [((784, 256), {}), ((785, 255), {}), ((785, 256), {"device": "cuda"}),
                     ((785, 256), {"epsilon": 0.1}), ((65, 4096), {})]:
        assert not faiss_pays_for_fixed_keys(*args, **kw)


def _near_tie_potential(n, d, seed):
    """Keys with exact duplicates (ties) and near-ties at float32 resolution, g making every cell small."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randn(n, d, generator=gen)
    y[n // 2:n // 2 + 40] = y[:40]  # exact duplicate keys: two columns tie for any query
    g = -0.5 * y.double().square().sum(1)
    g[n // 2 + 40:n // 2 + 80] = g[40:80] - 1e-6 * g[40:80].abs()  # near-ties a rounding away
    y[n // 2 + 40:n // 2 + 80] = y[40:80]
    from sdfm.ot import SemidiscretePotential

    return SemidiscretePotential(y, g.float()), gen


@needs_faiss
def test_training_pairing_uses_faiss_where_the_rule_says_and_equals_the_torch_argmax_up_to_ties():
    pot, gen = _near_tie_potential(3000, 784, seed=5)
    x = torch.cat([pot.y[:40] + 1e-3 * torch.randn(40, 784, generator=gen),  # queries on the tied columns
                   pot.y[40:80] + 1e-3 * torch.randn(40, 784, generator=gen),
                   torch.randn(176, 784, generator=gen)])
    assert pot.pairing_backend(batch_size=256) == "faiss-flat-ip"
    assert pot.pairing_backend(batch_size=255) == "torch-fp32"
    auto, torch_argmax = pot.assign(x), pot.assign(x, method="exact")
    assert torch.equal(auto, pot.assign(x, method="faiss"))
    scores = augment_queries(x).double() @ pot.keys.double().T  # float64 scores of the float32 data
    best = scores.max(dim=1).values
    chosen = scores.gather(1, auto[:, None]).squeeze(1)
    # float32 accumulation of D = 785 products: |error| <= 2 D u |q| |k| (u = 2^-24), for either backend
    queries = augment_queries(x).double()
    tolerance = 2 * 785 * 2.0**-24 * queries.norm(dim=1) * pot.keys.double().norm(dim=1).max()
    assert (best - chosen <= tolerance).all()  # faiss picks a maximiser up to float32 rounding
    differ = auto != torch_argmax
    assert (scores[differ, auto[differ]] - scores[differ, torch_argmax[differ]]).abs().le(tolerance[differ]).all()
    planted = torch.arange(40)  # queries next to a duplicated key: either copy is a maximiser
    assert ((auto[:40] == planted) | (auto[:40] == planted + 1500)).all()
    assert differ.float().mean() < 0.25


@needs_faiss
def test_faiss_pairing_refuses_a_soft_potential():
    from sdfm.ot import SemidiscretePotential

    pot = SemidiscretePotential(torch.randn(300, 784), torch.zeros(300), epsilon=0.1)
    assert pot.pairing_backend(batch_size=1024) == "torch-fp32"
    with pytest.raises(ValueError, match="epsilon = 0"):
        pot.assign(torch.randn(256, 784), method="faiss")
