"""Memory-bounded semidiscrete kernel: reductions over N data points without a B x N matrix.

Every quantity the solver and the couplings need is a reduction of the score matrix

    s_ij = <x_i, y_j> + g_j   (+ eps * log b_j when eps > 0),

computed as one matmul of the queries ``[x_i, 1]`` against the keys ``[y_j, h_j]`` where the
last key column ``h`` carries the potential (and the log-weights). The matrix is never
materialised: queries are processed in row blocks of ``max(block_elems // N, min_block_rows(d + 1))``
rows, so peak memory is O(N d + block_elems) whatever the batch size B (the floor on the rows,
at most (d + 1) / 4, keeps a block within a quarter of the keys' own size).

* eps = 0: ``value_i = max_j s_ij`` (so ``f_0(x_i) = -value_i``), ``index_i = argmax_j s_ij``,
  and the hard counts ``mass_j = #{i : index_i = j}``.
* eps > 0: ``value_i = eps * logsumexp_j (s_ij / eps)`` (so ``f_eps(x_i) = -value_i``), and the
  soft counts ``mass_j = sum_i pi_j(x_i)``, ``mass_sq_j = sum_i pi_j(x_i)^2`` needed by the
  unbiased chi^2 estimator.

When the keys are one shard of N points spread over several processes, ``reduce_scores`` takes a
``combine`` hook (:class:`sdfm.ot.distributed.ShardCombine`) that turns each row block's local
statistics into global ones before the column sums are taken: the row max and argmax (eps = 0),
or the row logsumexp (eps > 0). The column sums then cover this shard's columns of the GLOBAL
coupling, in one pass over the scores.

Speed (CPU, where the reductions are memory-bound at small d): the score block is written by
``torch.matmul(..., out=)`` into a :class:`Workspace` that the caller keeps across calls, so no
fresh B x N block is page-faulted at every SGD step; the argmax takes a values-only max per
chunk of :data:`ARGMAX_CHUNK` columns and locates the index inside the winning chunk only
(:func:`row_argmax`, same result as ``max(dim=1)``: first maximum); at eps > 0 the row max,
``exp`` and row sums run on sub-blocks of about :data:`CACHE_ELEMS` scores that stay in cache,
leaving one more read of the block (the column sums) instead of five.

CUDA (selected by the device of the tensors only; CPU results are unchanged): the cache
sub-blocking and the chunked argmax are CPU tunings that would cut a GPU block into thousands
of tiny launches, so on CUDA a block is reduced whole (``max(dim=1)``; max, exp, sum in one
pass each, without the subnormal clamp, which only CPUs need); blocks are sized by the free
device memory (:func:`block_elems_for`); and up to :data:`FUSED_MAX_DIM` dimensions the
fused Triton kernels of :mod:`sdfm.ot.fused` compute the matmul and the row / column
reductions without writing the scores at all (``fused=`` forces either path).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from sdfm.ot.kernel_blocks import (ARGMAX_CHUNK, CACHE_ELEMS, CUDA_MEMORY_FRACTION, DEFAULT_BLOCK_ELEMS,  # noqa: F401
                                   FUSED_MAX_DIM, MIN_BLOCK_ROWS, Reduction, Workspace, augment_keys, augment_queries,
                                   block_elems_for, key_column, min_block_rows, row_argmax, row_blocks)
from sdfm.ot.kernel_blocks import exp_rows as _exp_rows
from sdfm.ot.kernel_draws import CDF_CHUNK, inverse_cdf_draw, sample_assignment, topk_total_variation  # noqa: F401

__all__ = [
    "ARGMAX_CHUNK",
    "CACHE_ELEMS",
    "CUDA_MEMORY_FRACTION",
    "DEFAULT_BLOCK_ELEMS",
    "FUSED_MAX_DIM",
    "MIN_BLOCK_ROWS",
    "Workspace",
    "Reduction",
    "augment_queries",
    "augment_keys",
    "block_elems_for",
    "key_column",
    "row_blocks",
    "reduce_scores",
    "min_block_rows",
    "row_argmax",
    "sample_assignment",
    "topk_total_variation",
]

def _use_fused(fused: bool | None, queries: Tensor, keys: Tensor, combine, need_margin: bool) -> bool:
    """The fused kernels: when asked, else on CUDA for float32 at d <= FUSED_MAX_DIM (env SDFM_FUSED=0: never)."""
    if fused is not None:
        if fused and (combine is not None or need_margin):
            raise ValueError("the fused kernels compute neither margins nor sharded (combine) reductions")
        return fused
    if not queries.is_cuda or combine is not None or need_margin or os.environ.get("SDFM_FUSED") == "0":
        return False
    if keys.dtype != torch.float32 or keys.shape[1] - 1 > FUSED_MAX_DIM:
        return False
    from sdfm.ot.fused import fused_available

    return fused_available(queries.device)


def reduce_scores(
    queries: Tensor,
    keys: Tensor,
    epsilon: float = 0.0,
    *,
    need_mass: bool = True,
    need_mass_sq: bool = True,
    need_margin: bool = False,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
    combine=None,
    workspace: Workspace | None = None,
    need_mass_cube: bool = False,
    fused: bool | None = None,
) -> Reduction:
    """Reduce the scores ``queries @ keys.T`` block by block.

    Args:
        queries: (B, d + 1) augmented queries ``[x, 1]``.
        keys: (N, d + 1) augmented keys ``[y, g (+ eps log b)]``.
        epsilon: entropic regularisation, absolute, in units of the cost -<x, y>.
        need_mass: also accumulate the column sums of the coupling.
        need_mass_sq: at eps > 0, also the column sums of its square (only chi^2 needs them).
        need_margin: at eps = 0, also return the top-1 minus top-2 score gap per query.
        block_elems: largest number of scores held at once (but at least ``min_block_rows(D)`` rows).
        combine: the keys are one shard of a set spread across processes (a collective: every
            process calls with the same queries). Rows are then blocked by ``combine.block_keys``
            (the same plan on every process), ``value``, ``index`` (global) and ``margin`` are
            those of all shards, and ``mass`` / ``mass_sq`` are this shard's columns of the
            global coupling. With eps > 0 and local row max m_i and logsumexp l_i, the global
            logsumexp L_i gives ``pi_ij = exp(s_ij - m_i) * exp(m_i - L_i)`` (scores over eps).
        workspace: where the score blocks are written; keep one across calls to skip allocating
            (and page-faulting) a fresh block every time. ``None``: a temporary one.
        need_mass_cube: at eps > 0, also the column sums of pi^3 (the variance bound of the
            chi^2 estimate, :func:`sdfm.ot.chi2.chi2_confidence`, uses them).
        fused: the Triton kernels of :mod:`sdfm.ot.fused` (True), the torch ops (False), or
            ``None``: fused on CUDA for float32 keys of at most ``FUSED_MAX_DIM + 1`` columns.

    Returns:
        A :class:`Reduction`.
    """
    n_keys = keys.shape[0]
    plan_keys = n_keys if combine is None else combine.block_keys
    values, indices, margins = [], [], []
    mass = torch.zeros(n_keys, dtype=torch.float64, device=keys.device) if need_mass else None
    mass_sq = torch.zeros_like(mass) if (need_mass and need_mass_sq and epsilon > 0) else None
    mass_cube = torch.zeros_like(mass) if (mass_sq is not None and need_mass_cube) else None
    if epsilon > 0:
        queries = queries / epsilon  # scores come out divided by eps, saving a pass over them
    if _use_fused(fused, queries, keys, combine, need_margin):
        return _fused_reduction(queries, keys, epsilon, mass, mass_sq, mass_cube, need_mass_cube)
    workspace = workspace if workspace is not None else Workspace()
    block_elems = block_elems_for(block_elems, keys.device, keys.dtype)
    for rows in row_blocks(queries.shape[0], plan_keys, block_elems, min_block_rows(keys.shape[1])):
        scores = workspace.matmul(queries[rows], keys)
        if epsilon == 0:
            best, idx = _hard_rows(scores, combine, need_margin, margins)
            values.append(best)
            indices.append(idx)
            if need_mass:
                own = idx if combine is None else combine.local_indices(idx)
                mass += torch.bincount(own, minlength=n_keys).to(torch.float64)
        else:
            values.append(_soft_rows(scores, epsilon, combine, mass, mass_sq, mass_cube))
        del scores
    return _reduction(epsilon, torch.cat(values), torch.cat(indices) if epsilon == 0 else None, mass, mass_sq,
                      mass_cube, need_mass_cube, torch.cat(margins) if margins else None)


def _hard_rows(scores: Tensor, combine, need_margin: bool, margins: list) -> tuple[Tensor, Tensor]:
    """eps = 0: the row max and (global) argmax of one score block; its top-1 minus top-2 gaps go to ``margins``."""
    if combine is not None:
        best, idx, margin = combine.argmax(scores, need_margin)
        if margin is not None:
            margins.append(margin)
        return best, idx
    if need_margin and scores.shape[1] > 1:
        top = scores.topk(2, dim=1)
        margins.append(top.values[:, 0] - top.values[:, 1])
        return top.values[:, 0], top.indices[:, 0]
    return row_argmax(scores)


def _soft_rows(scores: Tensor, epsilon: float, combine, mass, mass_sq, mass_cube) -> Tensor:
    """eps > 0: ``eps * logsumexp`` of each row of one block of scores over eps (overwritten), and the block's
    column sums of pi (and of pi^2, pi^3 where those sums are given) added to ``mass`` (``mass_sq``, ``mass_cube``)."""
    # logsumexp by hand (torch's is several times slower on CPU); the column sums of
    # pi = exp(s - max) / rowsum are GEMVs with 1 / rowsum, not a normalised copy.
    row_max, row_sum = _exp_rows(scores)
    unnormalised = scores
    if combine is None:
        value = epsilon * (row_max + row_sum.log())
    else:
        total = combine.logsumexp(row_max + row_sum.log())
        value = epsilon * total
    if mass is not None:
        inverse = row_sum.reciprocal() if combine is None else (row_max - total).exp()
        mass += (inverse @ unnormalised).to(torch.float64)
        if mass_cube is not None:
            squared = unnormalised.square()
            mass_sq += (inverse.square() @ squared).to(torch.float64)
            mass_cube += (inverse.pow(3) @ squared.mul_(unnormalised)).to(torch.float64)
        elif mass_sq is not None:
            mass_sq += (inverse.square() @ unnormalised.square_()).to(torch.float64)
    return value


def _reduction(epsilon, value, index, mass, mass_sq, mass_cube, need_mass_cube, margin=None) -> Reduction:
    """The :class:`Reduction`; at eps = 0 the powers of the one-hot rows are the counts themselves."""
    hard = mass is not None and epsilon == 0
    return Reduction(value=value, index=index, mass=mass, mass_sq=mass if hard else mass_sq, margin=margin,
                     mass_cube=mass if (hard and need_mass_cube) else mass_cube)


def _fused_reduction(queries: Tensor, keys: Tensor, epsilon: float, mass, mass_sq, mass_cube,
                     need_mass_cube: bool) -> Reduction:
    """:func:`reduce_scores` through the fused kernels (queries already divided by eps)."""
    from sdfm.ot.fused import fused_reduce

    powers = 3 if mass_cube is not None else (2 if mass_sq is not None else 1)
    value, index, sums = fused_reduce(queries, keys, epsilon, mass is not None, powers)
    if mass is not None and epsilon == 0:
        mass += torch.bincount(index, minlength=keys.shape[0]).to(torch.float64)
    elif mass is not None:
        for total, row in zip((mass, mass_sq, mass_cube), sums):
            if total is not None:
                total += row.to(torch.float64)
    return _reduction(epsilon, value, index, mass, mass_sq, mass_cube, need_mass_cube)
