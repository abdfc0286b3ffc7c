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
