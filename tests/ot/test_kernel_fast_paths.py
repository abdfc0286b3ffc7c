"""The fast paths of the kernel (chunked argmax, cached sub-blocks, reused workspace) change nothing."""

import pytest
import torch

from sdfm.ot.kernel import Workspace, _exp_rows, augment_keys, augment_queries, reduce_scores, row_argmax


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 64])
@pytest.mark.parametrize("n", [1, 5, 48, 53])
def test_row_argmax_equals_max_with_first_index_on_ties(chunk, n):
    gen = torch.Generator().manual_seed(n + chunk)
    scores = torch.randint(0, 4, (41, n), generator=gen).float()  # many ties, across and inside chunks
    scores[0] = 3.0  # a row that is all one value: index 0
    if n > 2:
        scores[1, -1] = 9.0  # the maximum in the (short) tail chunk
        scores[2] = -torch.inf
        scores[2, n // 2] = 1.0
    best, index = row_argmax(scores, chunk=chunk)
    expect = scores.max(dim=1)
    assert torch.equal(best, expect.values)
    assert torch.equal(index, expect.indices)
    assert torch.equal(index, (scores == scores.amax(dim=1, keepdim=True)).float().argmax(dim=1))  # first maximum


def test_row_argmax_all_minus_inf_row_and_nan():
    scores = torch.full((2, 10), -torch.inf)
    scores[1, 6] = torch.nan
    best, index = row_argmax(scores, chunk=4)
    assert index[0] == 0 and best[0] == -torch.inf
    assert index[1] == 6 and torch.isnan(best[1])


@pytest.mark.parametrize("sub_elems", [1, 50, 10**9])
def test_exp_rows_in_sub_blocks_is_the_stable_softmax(sub_elems):
    scores = torch.randn(23, 17, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 30
    dense = scores.clone()
    row_max, row_sum = _exp_rows(scores, sub_elems=sub_elems)
    torch.testing.assert_close(row_max, dense.amax(dim=1), rtol=0, atol=0)
    torch.testing.assert_close(row_max + row_sum.log(), torch.logsumexp(dense, dim=1))
    expect = (dense - dense.amax(dim=1, keepdim=True)).clamp(min=-40.0).exp()
    torch.testing.assert_close(scores, expect, rtol=0, atol=0)


def test_workspace_is_reused_and_grows():
    ws = Workspace()
    like = torch.empty(0)
    first = ws.scores(4, 10, like)
    assert ws.scores(3, 10, like).data_ptr() == first.data_ptr()  # smaller: same storage
    assert ws.scores(8, 10, like).shape == (8, 10)  # larger: a new buffer
    assert ws.scores(2, 3, torch.empty(0, dtype=torch.float64)).dtype == torch.float64
    ws.release()
    assert ws._buffer is None
    q, k = torch.randn(3, 4, requires_grad=True), torch.randn(5, 4)
    ws.matmul(q, k).sum().backward()  # inputs tracked by autograd: a fresh, differentiable product
    torch.testing.assert_close(q.grad, k.sum(0).expand(3, 4))


@pytest.mark.parametrize("epsilon", [0.0, 0.4])
def test_reused_workspace_gives_bit_identical_reductions(epsilon):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=gen)
    y = torch.randn(4000, 6, generator=gen)
    g = torch.randn(4000, generator=gen, dtype=torch.float64)
    keys = augment_keys(y, g, epsilon, torch.full((4000,), -torch.log(torch.tensor(4000.0)), dtype=torch.float64))
    queries = augment_queries(x)
    fresh = reduce_scores(queries, keys, epsilon, block_elems=400_000)  # 100-row blocks: 65-row sub-blocks
    ws = Workspace()
    reduce_scores(queries[:7], keys, epsilon, block_elems=400_000, workspace=ws)  # leaves other scores behind
    again = [reduce_scores(queries, keys, epsilon, block_elems=400_000, workspace=ws) for _ in range(2)]
    for red in again:
        assert torch.equal(red.value, fresh.value) and torch.equal(red.mass, fresh.mass)
        assert torch.equal(red.mass_sq, fresh.mass_sq)
        if epsilon == 0:
            assert torch.equal(red.index, fresh.index)
    if epsilon == 0:
        assert torch.equal(fresh.index, (queries @ keys.T).argmax(dim=1))


def test_row_blocks_keep_the_minimum_rows():
    from sdfm.ot.kernel import min_block_rows, row_blocks

    assert min_block_rows(6) == 1 and min_block_rows(65) == 16 and min_block_rows(785) == 128
    assert [r.stop - r.start for r in row_blocks(300, 10_000, 50_000, min_rows=128)] == [128, 128, 44]
    assert [r.stop - r.start for r in row_blocks(10, 10, 50, min_rows=1)] == [5, 5]


def test_squared_norms_in_chunks_equal_the_one_shot_float64_formula():
    from sdfm.ot.solver import initial_potential, squared_norms

    y = torch.randn(1000, 7, generator=torch.Generator().manual_seed(3))
    full = y.to(torch.float64).square().sum(dim=1)
    assert torch.equal(squared_norms(y, chunk_rows=64), full)
    assert torch.equal(initial_potential(y, "voronoi"), -0.5 * full)
