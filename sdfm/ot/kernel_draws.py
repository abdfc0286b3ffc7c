"""Draws from the semidiscrete coupling: the pairing of each query (:func:`sample_assignment`), the
total variation of its top-k approximation, and the two-level inverse-CDF search they use.

Row blocks and the score buffer are those of :mod:`sdfm.ot.kernel` (:mod:`sdfm.ot.kernel_blocks`);
:mod:`sdfm.ot.kernel` re-exports these functions.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdfm.ot.kernel_blocks import (DEFAULT_BLOCK_ELEMS, Workspace, block_elems_for, exp_rows, min_block_rows,
                                   row_argmax, row_blocks)

__all__ = ["CDF_CHUNK", "inverse_cdf_draw", "sample_assignment", "topk_total_variation"]


def sample_assignment(
    queries: Tensor,
    keys: Tensor,
    epsilon: float,
    *,
    generator: torch.Generator | None = None,
    top_k: int | None = None,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    workspace: Workspace | None = None,
) -> Tensor:
    """Draw ``j ~ pi(x_i)`` for each query; the argmax when eps = 0.

    At eps > 0 the draw is exact over all N by inverting the row's cumulative distribution:
    with ``w_ij = exp((s_ij - max_j s_ij) / eps)`` and one uniform ``u_i``, ``j`` is the first
    index whose cumulative weight exceeds ``u_i sum_j w_ij`` (float64 cumulative sums). This
    costs one exponential per score, against three transcendental functions for Gumbel-max.
    With ``top_k`` the draw is restricted to the k best scores of each row (a categorical over
    the renormalised top-k softmax), the approximation of OTT's dataloader. ``workspace``: as
    in :func:`sdfm.ot.kernel.reduce_scores`.
    """
    n_keys = keys.shape[0]
    if epsilon > 0:
        queries = queries / epsilon
    workspace = workspace if workspace is not None else Workspace()
    block_elems = block_elems_for(block_elems, keys.device, keys.dtype)
    chosen = []
    for rows in row_blocks(queries.shape[0], n_keys, block_elems, min_block_rows(keys.shape[1])):
        scores = workspace.matmul(queries[rows], keys)
        if epsilon == 0:
            chosen.append(row_argmax(scores)[1])  # first maximum, like argmax
        elif top_k is not None and top_k < n_keys:
            best = scores.topk(top_k, dim=1)
            probs = torch.softmax(best.values, dim=1)
            pick = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            chosen.append(best.indices.gather(1, pick[:, None]).squeeze(1))
        else:
            exp_rows(scores)
            weights = scores
            u = torch.rand(weights.shape[0], 1, generator=generator, device=weights.device, dtype=torch.float64)
            chosen.append(inverse_cdf_draw(weights, u))
    return torch.cat(chosen)


def topk_total_variation(
    queries: Tensor,
    keys: Tensor,
    epsilon: float,
    ks,
    *,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> Tensor:
    """Per query, the total variation between the top-k draw and the exact draw of :func:`sample_assignment`.

    With ``p_i = softmax_j(s_ij / eps)`` (the keys carry ``eps log b``) and ``T_k`` the k largest
    entries of ``p_i``, the top-k draw follows ``q_i = p_i 1[T_k] / P_ik`` with
    ``P_ik = sum_(j in T_k) p_ij``, so

        TV(q_i, p_i) = 1/2 sum_j |q_ij - p_ij| = 1/2 [P_ik (1 / P_ik - 1) + (1 - P_ik)] = 1 - P_ik,

    the softmax mass outside the k best scores: computed as (sum of the other terms) / (row sum),
    in float64 (a float64 copy of each score block: twice the memory of :func:`sdfm.ot.kernel.reduce_scores`),
    without cancellation. 0 when ``k >= N``.

    Args:
        queries: (B, d + 1) augmented queries ``[x, 1]``.
        keys: (N, d + 1) augmented keys ``[y, g + eps log b]``.
        epsilon: the regularisation, > 0.
        ks: the values of k.
        block_elems: largest number of scores held at once.

    Returns:
        (B, len(ks)) float64.
    """
    if epsilon <= 0:
        raise ValueError(f"the top-k draw differs from the exact one only at eps > 0, got {epsilon}")
    ks = [int(k) for k in ks]
    n_keys = keys.shape[0]
    k_max = min(max(ks), n_keys)
    out = []
    for rows in row_blocks(queries.shape[0], n_keys, block_elems):
        scores = (queries[rows] / epsilon) @ keys.T
        best = scores.topk(k_max, dim=1)  # sorted, largest first
        top = (best.values - best.values[:, :1]).to(torch.float64).exp_()
        weights = (scores - best.values[:, :1]).to(torch.float64).exp_().scatter_(1, best.indices, 0.0)
        rest = weights.sum(dim=1)  # the terms beyond the k_max best, summed directly (no cancellation)
        total = rest + top.sum(dim=1)
        top_tail = top.flip(1).cumsum(dim=1).flip(1)  # top_tail[:, m] = sum of top[:, m:]
        tv = []
        for k in ks:
            if k >= n_keys:
                tv.append(torch.zeros_like(rest))
            else:
                tv.append((rest + (top_tail[:, k] if k < k_max else 0.0)) / total)
        out.append(torch.stack(tv, dim=1))
        del scores, weights
    return torch.cat(out)


#: Columns per chunk of the two-level search in :func:`inverse_cdf_draw`.
CDF_CHUNK = 64


def inverse_cdf_draw(weights: Tensor, u: Tensor) -> Tensor:
    """Per row i, the first j with ``W_ij >= u_i W_in``, where ``W_ij = sum_{k <= j} w_ik``.

    That is a draw from ``w_i / sum_j w_ij`` for ``u_i ~ U[0, 1)``. The search is two-level, so
    no cumulative sum over all N columns is formed: float64 cumulative sums of the sums of
    chunks of :data:`CDF_CHUNK` columns locate the chunk, then a cumulative sum within that one
    chunk locates the column (about 4x cheaper than a full float64 ``cumsum`` on CPU).

    Args:
        weights: (R, N) non-negative weights, each row with a positive sum.
        u: (R, 1) float64 uniforms in [0, 1).
    """
    n_rows, n = weights.shape
    full = n // CDF_CHUNK * CDF_CHUNK
    sums = [weights[:, :full].view(n_rows, full // CDF_CHUNK, CDF_CHUNK).sum(dim=2)] if full else []
    if full < n:
        sums.append(weights[:, full:].sum(dim=1, keepdim=True))
    chunk_cdf = torch.cat(sums, dim=1).cumsum(dim=1, dtype=torch.float64)
    target = u * chunk_cdf[:, -1:]
    chunk = torch.searchsorted(chunk_cdf, target).clamp_(max=chunk_cdf.shape[1] - 1)
    before = torch.where(chunk > 0, chunk_cdf.gather(1, (chunk - 1).clamp(min=0)), 0.0)
    columns = chunk * CDF_CHUNK + torch.arange(CDF_CHUNK, device=weights.device)
    inside = columns < n
    local = weights.gather(1, columns.clamp(max=n - 1)).masked_fill_(~inside, 0.0)
    position = torch.searchsorted(local.cumsum(dim=1, dtype=torch.float64), target - before)
    return (chunk.squeeze(1) * CDF_CHUNK + position.squeeze(1).clamp_(max=CDF_CHUNK - 1)).clamp_(max=n - 1)
