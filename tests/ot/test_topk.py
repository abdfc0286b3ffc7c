"""The top-k error measure: TV between the top-k renormalised softmax and the full one, per query."""

import math

import pytest
import torch

from sdfm.ot import SemidiscretePotential
from sdfm.ot.kernel import augment_keys, augment_queries, sample_assignment, topk_total_variation


def test_geometric_softmax_has_the_known_tail():
    # One query, p_j proportional to 2^-j (keys in shuffled order): TV(k) = (2^-k - 2^-N) / (1 - 2^-N).
    n, eps = 30, 0.7
    y = torch.randperm(n, generator=torch.Generator().manual_seed(0)).double()[:, None]
    x = torch.tensor([[-eps * math.log(2.0)]], dtype=torch.float64)
    ks = [1, 2, 5, 29, 30, 64]
    tv = topk_total_variation(augment_queries(x), augment_keys(y, torch.zeros(n, dtype=torch.float64)), eps, ks)[0]
    expected = [(2.0**-k - 2.0**-n) / (1 - 2.0**-n) if k < n else 0.0 for k in ks]
    torch.testing.assert_close(tv, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-15)


def test_equal_scores_give_one_minus_k_over_n():
    n = 50
    keys = augment_keys(torch.zeros(n, 3), torch.zeros(n))
    tv = topk_total_variation(augment_queries(torch.randn(4, 3)), keys, 0.1, [1, 10, 25, 50])
    torch.testing.assert_close(tv, torch.tensor([0.98, 0.8, 0.5, 0.0], dtype=torch.float64).expand(4, 4))


@pytest.mark.parametrize("block_elems", [1, 300, 10**9])
def test_matches_the_dense_definition_decreases_with_k_and_vanishes_at_n(block_elems):
    gen = torch.Generator().manual_seed(1)
    n, eps = 40, 0.5
    x, y = torch.randn(25, 3, generator=gen, dtype=torch.float64), torch.randn(n, 3, generator=gen, dtype=torch.float64)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    log_b = torch.log_softmax(torch.randn(n, generator=gen, dtype=torch.float64), 0)
    ks = [1, 2, 4, 8, 16, 39, 40]
    tv = topk_total_variation(augment_queries(x), augment_keys(y, g, eps, log_b), eps, ks, block_elems=block_elems)
    p = torch.softmax((x @ y.T + g) / eps + log_b, dim=1)
    for column, k in enumerate(ks):
        top = p.topk(k, dim=1)
        q = torch.zeros_like(p).scatter_(1, top.indices, top.values / top.values.sum(1, keepdim=True))
        torch.testing.assert_close(tv[:, column], 0.5 * (q - p).abs().sum(1))
    assert (tv[:, 1:] <= tv[:, :-1]).all() and (tv[:, :-1] > 0).all()
    assert (tv[:, -1] == 0).all()


def test_it_is_the_error_of_the_top_k_draw():
    # The empirical law of SemidiscretePotential.assign(top_k=k) is TV(k) away from the exact softmax.
    gen = torch.Generator().manual_seed(3)
    n, eps, k = 8, 1.0, 3
    y, g = torch.randn(n, 2, generator=gen, dtype=torch.float64), torch.randn(n, generator=gen, dtype=torch.float64)
    x = torch.randn(1, 2, generator=gen, dtype=torch.float64)
    pot = SemidiscretePotential(y, g, epsilon=eps)
    draws = pot.assign(x.repeat(100_000, 1), generator=torch.Generator().manual_seed(0), top_k=k)
    freq = torch.bincount(draws, minlength=n).double() / draws.numel()
    p = torch.softmax((x @ y.T + g)[0] / eps + pot.weights.log(), 0)
    tv = topk_total_variation(augment_queries(x), pot.keys, eps, [k])[0, 0]
    assert 0.05 < tv < 0.9 and abs(0.5 * (freq - p).abs().sum() - tv) < 0.01
    queries = augment_queries(x).repeat(100_000, 1)
    exact = sample_assignment(queries, pot.keys, eps, generator=torch.Generator().manual_seed(0))
    assert 0.5 * (torch.bincount(exact, minlength=n).double() / exact.numel() - p).abs().sum() < 0.01


def test_eps_zero_is_refused():
    keys = augment_keys(torch.randn(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="eps > 0"):
        topk_total_variation(augment_queries(torch.randn(2, 2)), keys, 0.0, [1])
