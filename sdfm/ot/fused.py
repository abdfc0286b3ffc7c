"""Fused matmul + reduction kernels (Triton) for the score matrix on CUDA: no B x N block in memory.

The reductions of :func:`sdfm.ot.kernel.reduce_scores` read every score of a block several
times after the matmul has written it (max, exp, sums, column sums). On a GPU at small d that
memory traffic, not the matmul, sets the time. The kernels here compute score tiles
``s_ij = <q_i, k_j> + a_i h_j`` in registers (``q = queries[:, :-1]``, ``a = queries[:, -1]``,
``k = keys[:, :-1]``, ``h = keys[:, -1]``: the augmented product of ``reduce_scores`` with its
last, rank-one term added after the dot, so d stays a multiple of the tile) and reduce them
where they are:

* :func:`row_reduce`, grid (row tiles) x (column splits): per row and split, the running
  maximum and its first index (eps = 0), or the running maximum m and ``sum_j exp(s_ij - m)``
  (online logsumexp, eps > 0). The splits are combined in torch (a (splits, B) array).
* :func:`column_sums`, grid (column tiles): with the row logsumexps L known, the column sums
  ``sum_i p_ij^k`` for k = 1, 2, 3 of ``p_ij = exp(s_ij - L_i)`` (second pass over the keys;
  no atomics: each program owns its columns and loops over all B rows).

Dots run in IEEE fp32 (``input_precision="ieee"``), the precision of the torch path. The
kernels run in Triton's interpreter on CPU tensors when ``TRITON_INTERPRET=1`` is set before
triton is imported (the tests do that in a subprocess); :func:`fused_available` says whether
they can run on a tensor's device. :func:`sdfm.ot.kernel.reduce_scores` uses them on CUDA only.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

__all__ = ["column_sums", "fused_available", "fused_reduce", "row_reduce"]

try:  # triton is a dependency of CUDA builds of torch; CPU-only installs may lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on installs without triton
    triton = None

#: Tile sizes: rows, columns, and the inner (d) dimension of the dots.
BLOCK_M, BLOCK_N, BLOCK_D = 64, 64, 32


def fused_available(device: torch.device | str) -> bool:
    """Whether the Triton kernels can run on ``device``: CUDA with triton, or triton's CPU interpreter."""
    if triton is None:
        return False
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    return kind == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


if triton is not None:

    @triton.jit
    def _score_tile(q_ptr, k_ptr, a_ptr, h_ptr, rows, cols, row_ok, col_ok, dim, stride_q, stride_k,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        """``<q_i, k_j> + a_i h_j`` for a (BLOCK_M, BLOCK_N) tile, fp32."""
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        offs_d = tl.arange(0, BLOCK_D)
        for d0 in range(0, dim, BLOCK_D):
            d_ok = (d0 + offs_d) < dim
            q = tl.load(q_ptr + rows[:, None] * stride_q + (d0 + offs_d)[None, :],
                        mask=row_ok[:, None] & d_ok[None, :], other=0.0)
            k = tl.load(k_ptr + cols[:, None] * stride_k + (d0 + offs_d)[None, :],
                        mask=col_ok[:, None] & d_ok[None, :], other=0.0)
            acc += tl.dot(q, tl.trans(k), input_precision="ieee")
        a = tl.load(a_ptr + rows * stride_q, mask=row_ok, other=0.0)
        h = tl.load(h_ptr + cols * stride_k, mask=col_ok, other=0.0)
        return acc + a[:, None] * h[None, :]

    @triton.jit
    def _row_kernel(q_ptr, k_ptr, a_ptr, h_ptr, out_v, out_s, out_i, n_rows, n_cols, dim, stride_q, stride_k,
                    cols_per_split, SOFT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr):
        pid_m = tl.program_id(0)
        split = tl.program_id(1)
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        start = split * cols_per_split
        stop = tl.minimum(start + cols_per_split, n_cols)
        best = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
        total = tl.zeros((BLOCK_M,), dtype=tl.float32)
        where = tl.zeros((BLOCK_M,), dtype=tl.int32)
        for n0 in range(start, stop, BLOCK_N):
            cols = n0 + tl.arange(0, BLOCK_N)
            col_ok = cols < stop
            s = _score_tile(q_ptr, k_ptr, a_ptr, h_ptr, rows, cols, row_ok, col_ok, dim, stride_q, stride_k,
                            BLOCK_M, BLOCK_N, BLOCK_D)
            s = tl.where(col_ok[None, :], s, float("-inf"))
            tile_max = tl.max(s, axis=1)
            if SOFT:
                new = tl.maximum(best, tile_max)
                scale = tl.where(best == float("-inf"), 0.0, tl.exp(best - new))
                total = total * scale + tl.sum(tl.exp(s - new[:, None]), axis=1)
                best = new
            else:
                # first column of the tile holding its maximum; a later tile must beat it strictly
                hit = (s == tile_max[:, None]) & col_ok[None, :]
                first = tl.min(tl.where(hit, cols[None, :], n_cols), axis=1)
                better = tile_max > best
                where = tl.where(better, first, where)
                best = tl.where(better, tile_max, best)
        tl.store(out_v + split * n_rows + rows, best, mask=row_ok)
        if SOFT:
            tl.store(out_s + split * n_rows + rows, total, mask=row_ok)
        else:
            tl.store(out_i + split * n_rows + rows, where, mask=row_ok)

    @triton.jit
    def _column_kernel(q_ptr, k_ptr, a_ptr, h_ptr, lse_ptr, out_ptr, n_rows, n_cols, dim, stride_q, stride_k,
                       POWERS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        pid_n = tl.program_id(0)
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        col_ok = cols < n_cols
        sum1 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        sum2 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        sum3 = tl.zeros((BLOCK_N,), dtype=tl.float32)
        for m0 in range(0, n_rows, BLOCK_M):
            rows = m0 + tl.arange(0, BLOCK_M)
            row_ok = rows < n_rows
            s = _score_tile(q_ptr, k_ptr, a_ptr, h_ptr, rows, cols, row_ok, col_ok, dim, stride_q, stride_k,
                            BLOCK_M, BLOCK_N, BLOCK_D)
            lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
            p = tl.exp(s - lse[:, None])
            p = tl.where(row_ok[:, None] & col_ok[None, :], p, 0.0)
            sum1 += tl.sum(p, axis=0)
            if POWERS >= 2:
                sq = p * p
                sum2 += tl.sum(sq, axis=0)
                if POWERS >= 3:
                    sum3 += tl.sum(sq * p, axis=0)
        tl.store(out_ptr + cols, sum1, mask=col_ok)
        if POWERS >= 2:
            tl.store(out_ptr + n_cols + cols, sum2, mask=col_ok)
        if POWERS >= 3:
            tl.store(out_ptr + 2 * n_cols + cols, sum3, mask=col_ok)


def _operands(queries: Tensor, keys: Tensor):
    if queries.dtype != torch.float32 or keys.dtype != torch.float32:
        raise TypeError(f"the fused kernels take float32 queries and keys, got {queries.dtype} and {keys.dtype}")
    if queries.shape[1] != keys.shape[1] or queries.shape[1] < 2:
        raise ValueError(f"augmented queries (B, D) and keys (N, D) with D >= 2, got {tuple(queries.shape)}, "
                         f"{tuple(keys.shape)}")
    queries = queries if queries.stride(1) == 1 else queries.contiguous()
    keys = keys if keys.stride(1) == 1 else keys.contiguous()
    return queries, keys


def _splits(n_rows: int, n_cols: int, device: torch.device) -> int:
    """Column splits so that (row tiles x splits) fills the device about four times over."""
    if device.type != "cuda":
        return max(1, min(4, triton.cdiv(n_cols, BLOCK_N)))
    programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    tiles = triton.cdiv(n_rows, BLOCK_M)
    return max(1, min(triton.cdiv(programs, tiles), triton.cdiv(n_cols, 4 * BLOCK_N)))


def row_reduce(queries: Tensor, keys: Tensor, soft: bool) -> tuple[Tensor, Tensor]:
    """Row reduction of ``queries @ keys.T`` (augmented, float32) without the matrix.

    Returns ``(max, first argmax)`` when ``soft`` is False, ``(max, logsumexp)`` when True
    (both (B,), float32; the index int64).
    """
    queries, keys = _operands(queries, keys)
    n_rows, n_cols, dim = queries.shape[0], keys.shape[0], queries.shape[1] - 1
    splits = _splits(n_rows, n_cols, queries.device)
    per_split = triton.cdiv(triton.cdiv(n_cols, splits), BLOCK_N) * BLOCK_N
    splits = triton.cdiv(n_cols, per_split)
    value = torch.empty(splits, n_rows, device=queries.device, dtype=torch.float32)
    second = torch.empty_like(value) if soft else torch.empty(1, device=queries.device)
    index = torch.empty(splits, n_rows, device=queries.device, dtype=torch.int32) if not soft else second
    grid = (triton.cdiv(n_rows, BLOCK_M), splits)
    _row_kernel[grid](queries, keys, queries[:, dim:], keys[:, dim:], value, second, index, n_rows, n_cols, dim,
                      queries.stride(0), keys.stride(0), per_split, SOFT=soft, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                      BLOCK_D=BLOCK_D)
    best = value.amax(dim=0)
    if soft:
        total = (second * (value - best).exp()).sum(dim=0)
        return best, best + total.log()
    first_split = (value == best).to(torch.int8).argmax(dim=0)  # ties: the lowest split holds the lower index
    return best, index.gather(0, first_split[None]).squeeze(0).long()


def column_sums(queries: Tensor, keys: Tensor, lse: Tensor, powers: int = 1) -> Tensor:
    """(powers, N) float32: ``sum_i p_ij^k`` for k = 1..powers, ``p_ij = exp(s_ij - lse_i)``."""
    queries, keys = _operands(queries, keys)
    n_rows, n_cols, dim = queries.shape[0], keys.shape[0], queries.shape[1] - 1
    out = torch.empty(powers, n_cols, device=queries.device, dtype=torch.float32)
    lse = lse.to(torch.float32).contiguous()
    _column_kernel[(triton.cdiv(n_cols, BLOCK_N),)](queries, keys, queries[:, dim:], keys[:, dim:], lse, out, n_rows,
                                                    n_cols, dim, queries.stride(0), keys.stride(0), POWERS=powers,
                                                    BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D)
    return out


def fused_reduce(queries: Tensor, keys: Tensor, epsilon: float, need_mass: bool, powers: int):
    """What :func:`sdfm.ot.kernel.reduce_scores` computes for one row block, with the fused kernels.

    ``queries`` are already divided by eps when eps > 0. Returns ``(value, index, sums)``:
    value as ``reduce_scores`` reports it (max, or eps * logsumexp), the argmax (eps = 0) and
    the (powers, N) column sums of the coupling (eps > 0, when ``need_mass``).
    """
    if epsilon == 0:
        best, index = row_reduce(queries, keys, soft=False)
        return best, index, None
    _, lse = row_reduce(queries, keys, soft=True)
    sums = column_sums(queries, keys, lse, powers) if need_mass else None
    return epsilon * lse, None, sums
