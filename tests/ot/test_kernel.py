"""The blocked kernel equals the dense computation, whatever the block size."""

import pytest
import torch

from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores, sample_assignment


def _problem(b=37, n=53, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, d, generator=gen, dtype=torch.float64)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    return x, y, g


@pytest.mark.parametrize("block_elems", [1, 100, 10**9])
def test_hard_reduction_matches_dense(block_elems):
    x, y, g = _problem()
    scores = x @ y.T + g
    red = reduce_scores(augment_queries(x), augment_keys(y, g), 0.0, need_margin=True, block_elems=block_elems)
    best, idx = scores.max(dim=1)
    top2 = scores.topk(2, dim=1).values
    assert torch.equal(red.index, idx)
    torch.testing.assert_close(red.value, best)
    torch.testing.assert_close(red.margin, top2[:, 0] - top2[:, 1])
    assert torch.equal(red.mass, torch.bincount(idx, minlength=y.shape[0]).double())
    assert red.mass_sq is red.mass


@pytest.mark.parametrize("block_elems", [1, 100, 10**9])
def test_soft_reduction_matches_dense(block_elems):
    x, y, g = _problem()
    eps = 0.3
    log_b = torch.log(torch.rand(y.shape[0], dtype=torch.float64) + 0.5)
    log_b = log_b - torch.logsumexp(log_b, 0)
    scores = (x @ y.T + g) / eps + log_b
    probs = torch.softmax(scores, dim=1)
    red = reduce_scores(augment_queries(x), augment_keys(y, g, eps, log_b), eps, block_elems=block_elems)
    torch.testing.assert_close(red.value, eps * torch.logsumexp(scores, dim=1))
    torch.testing.assert_close(red.mass, probs.sum(0))
    torch.testing.assert_close(red.mass_sq, probs.square().sum(0))
    assert red.index is None


def test_exact_draw_follows_the_softmax():
    x, y, g = _problem(b=1, n=6, d=3)
    eps = 0.5
    queries = augment_queries(x).repeat(60_000, 1)
    draws = sample_assignment(queries, augment_keys(y, g), eps, generator=torch.Generator().manual_seed(1), block_elems=5000)
    freq = torch.bincount(draws, minlength=6).double() / draws.numel()
    expected = torch.softmax((x @ y.T + g)[0] / eps, dim=0)
    assert (freq - expected).abs().max() < 0.01


def test_top_k_draw_stays_in_top_k_and_is_exact_for_k_equal_n():
    x, y, g = _problem(b=1, n=8, d=3, seed=3)
    eps = 1.0
    queries = augment_queries(x).repeat(40_000, 1)
    keys = augment_keys(y, g)
    scores = (x @ y.T + g)[0]
    top3 = set(scores.topk(3).indices.tolist())
    draws = sample_assignment(queries, keys, eps, generator=torch.Generator().manual_seed(0), top_k=3)
    assert set(draws.unique().tolist()) <= top3
    full = sample_assignment(queries, keys, eps, generator=torch.Generator().manual_seed(0), top_k=8)
    freq = torch.bincount(full, minlength=8).double() / full.numel()
    assert (freq - torch.softmax(scores / eps, 0)).abs().max() < 0.01


def test_eps_zero_draw_is_the_argmax():
    x, y, g = _problem()
    draws = sample_assignment(augment_queries(x), augment_keys(y, g), 0.0, block_elems=64)
    assert torch.equal(draws, (x @ y.T + g).argmax(1))
