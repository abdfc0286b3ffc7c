"""The draws at eps > 0, per query: over a batch of DIFFERENT queries, each row follows its own law.

A draw that mixes rows (a softmax over the batch instead of over the candidates, one uniform
shared by all rows, ...) is invisible when every row is the same query; here B distinct queries
are each repeated R times in one call, and the counts of every query are compared with its own
law by a chi-square statistic: under the right law it is chi-square with (support - 1) degrees of
freedom per query, so the bound below fails with probability 1e-6 (the seeds are fixed anyway).
"""

import pytest
import torch
from scipy.stats import chi2 as chi2_distribution

from sdfm.ot import SemidiscretePotential

B, N, D, EPS, REPEATS = 6, 9, 2, 0.7, 20_000


def _potential(block_elems=None):
    gen = torch.Generator().manual_seed(7)
    y = torch.randn(N, D, generator=gen, dtype=torch.float64) * 1.5
    g = torch.randn(N, generator=gen, dtype=torch.float64)
    weights = torch.rand(N, generator=gen, dtype=torch.float64) + 0.2  # non-uniform: the keys carry eps log b
    options = {} if block_elems is None else {"block_elems": block_elems}
    pot = SemidiscretePotential(y, g, epsilon=EPS, weights=weights / weights.sum(), **options)
    x = torch.randn(B, D, generator=gen, dtype=torch.float64) * 1.5
    return pot, x


def _softmax(pot, x):
    """``pi_j(x_i) = softmax_j((<x_i, y_j> + g_j) / eps + log b_j)``, (B, N)."""
    return torch.softmax((x @ pot.y.T + pot.g) / pot.epsilon + pot.weights.log(), dim=1)


def _top_k_law(p, k):
    """``q_ij = p_ij 1[j in T_k(i)] / P_ik``: the softmax renormalised on each row's k largest entries."""
    top = p.topk(k, dim=1)
    return torch.zeros_like(p).scatter_(1, top.indices, top.values / top.values.sum(1, keepdim=True))


def _assert_rows_follow(draws, law):
    """Query i of the batch is row ``r % B``; its R draws must follow ``law[i]`` (no mass off its support)."""
    rows = torch.arange(draws.numel()) % B
    counts = torch.bincount(rows * N + draws, minlength=B * N).view(B, N).double()
    support = law > 0
    assert counts[~support].sum() == 0, "draws outside the support of their query's law"
    expected = REPEATS * law[support]
    statistic = float(((counts[support] - expected).square() / expected).sum())
    dof = int(support.sum()) - B
    bound = chi2_distribution.isf(1e-6, dof) if dof > 0 else 0.0  # one candidate per query: no randomness
    assert statistic <= bound, (statistic, dof)


def test_the_queries_of_the_problem_have_different_laws():
    # otherwise a draw that mixes rows could not be told from a right one
    pot, x = _potential()
    p = _softmax(pot, x)
    tv = 0.5 * (p[:, None] - p[None]).abs().sum(-1)
    assert tv[~torch.eye(B, dtype=torch.bool)].min() > 0.1
    assert len({tuple(sorted(row.tolist())) for row in p.topk(3, dim=1).indices}) > 2


@pytest.mark.parametrize("block_elems", [None, 1 << 16])
def test_exact_draw_follows_each_querys_softmax(block_elems):
    pot, x = _potential(block_elems)
    draws = pot.assign(x.repeat(REPEATS, 1), generator=torch.Generator().manual_seed(0))
    _assert_rows_follow(draws, _softmax(pot, x))


@pytest.mark.parametrize("k, block_elems", [(1, None), (3, None), (3, 1 << 16), (N, None)])
def test_top_k_draw_follows_each_querys_renormalised_top_k_softmax(k, block_elems):
    # q_ij = p_j / P_k on the k best candidates of query i (sdfm.ot.kernel.topk_total_variation)
    pot, x = _potential(block_elems)
    draws = pot.assign(x.repeat(REPEATS, 1), generator=torch.Generator().manual_seed(1), top_k=k)
    _assert_rows_follow(draws, _top_k_law(_softmax(pot, x), k))
