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
from dataclasses import dataclass

import torch
from torch import Tensor

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

#: Largest number of score entries held at once (2^26 float32 = 256 MiB).
DEFAULT_BLOCK_ELEMS = 1 << 26
#: Columns per chunk of :func:`row_argmax` (values-only max per chunk, index in one chunk; measured there).
ARGMAX_CHUNK = 256
#: Scores per sub-block of the eps > 0 row reductions on CPU (2^18 float32 = 1 MiB, within L2).
CACHE_ELEMS = 1 << 18
#: On CUDA, the share of the free device memory a score block may take.
CUDA_MEMORY_FRACTION = 0.25
#: Largest data dimension d for which CUDA reductions use the fused kernels by default: above
#: it the matmul dominates and cuBLAS (the torch path) is the faster matmul. A first guess, to
#: be set from ``benchmarks/bench_gpu.py`` (its kernel rows time both paths).
FUSED_MAX_DIM = 256


def block_elems_for(block_elems: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> int:
    """Scores per block on ``device``: ``block_elems`` on CPU; on CUDA at least that, and up to
    :data:`CUDA_MEMORY_FRACTION` of the free device memory (fewer, larger launches; below 2^31)."""
    device = torch.device(device)
    if device.type != "cuda":
        return block_elems
    free, _ = torch.cuda.mem_get_info(device)
    by_memory = int(CUDA_MEMORY_FRACTION * free) * 8 // torch.finfo(dtype).bits
    return max(block_elems, min(by_memory, (1 << 31) - 1))


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


class Workspace:
    """A score buffer reused across calls (one per solver, searcher or benchmark state).

    :meth:`scores` returns a contiguous (rows, cols) view of one flat buffer, reallocated only
    when it is too small or on another device / dtype. Reuse saves the page faults of a fresh
    B x N block at every call (on CPU they cost as much as the matmul at small d); the buffer
    never holds more than the largest block asked for, at most ``block_elems`` scores.
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None

    def scores(self, rows: int, cols: int, like: Tensor) -> Tensor:
        """An uninitialised (rows, cols) tensor with the device and dtype of ``like``."""
        need = rows * cols
        buf = self._buffer
        if buf is None or buf.numel() < need or buf.device != like.device or buf.dtype != like.dtype:
            self._buffer = buf = None  # free the old buffer before allocating its successor
            self._buffer = buf = torch.empty(need, device=like.device, dtype=like.dtype)
        return buf[:need].view(rows, cols)

    def matmul(self, queries: Tensor, keys: Tensor) -> Tensor:
        """``queries @ keys.T`` written into the buffer (a fresh tensor when autograd tracks the inputs)."""
        if torch.is_grad_enabled() and (queries.requires_grad or keys.requires_grad):
            return queries @ keys.T  # out= does not support autograd
        return torch.matmul(queries, keys.T, out=self.scores(queries.shape[0], keys.shape[0], keys))

    def release(self) -> None:
        """Drop the buffer (the next call allocates again)."""
        self._buffer = None


def row_argmax(scores: Tensor, chunk: int = ARGMAX_CHUNK) -> tuple[Tensor, Tensor]:
    """``scores.max(dim=1)`` (values, first index of the maximum), without its per-element index work.

    The maximum of each chunk of ``chunk`` columns is a values-only reduction (several times
    cheaper than max-with-index on CPU); the first chunk holding the row maximum is found on the
    (rows, N / chunk) chunk maxima, and the index is located inside that chunk alone (a copy of
    its ``chunk`` contiguous scores per row). Ties go to the lowest index, as with ``max(dim=1)``:
    the first maximal chunk, then the first maximal column in it. Measured (1 CPU thread, process
    time, vs ``max(dim=1)`` / values-only ``amax``): B x N = 256 x 1e4: 1.3 ms vs 3.1 / 0.45;
    1024 x 1e4: 7.5 vs 10.8 / 5.5; 256 x 1e5: 13.0 vs 24.0 / 11.4; 64 x 1e6: 30.7 vs 66.7 / 28.6
    (chunk 256; 2048 was 2x slower at N = 1e4, 128 no faster).
    """
    rows, n = scores.shape
    if n <= chunk or scores.is_cuda:  # the chunking is a CPU tuning; one launch on a GPU
        return scores.max(dim=1)
    full = n // chunk * chunk
    chunks = scores[:, :full].unflatten(1, (full // chunk, chunk))  # (rows, k, chunk), a view
    maxima = chunks.amax(dim=2)
    if full < n:  # the short tail chunk: its max-with-index directly (fewer than `chunk` columns)
        tail_best, tail_index = scores[:, full:].max(dim=1)
        maxima = torch.cat([maxima, tail_best[:, None]], dim=1)
    best, which = maxima.max(dim=1)
    inside = which.clamp(max=chunks.shape[1] - 1)
    # one contiguous row of `chunk` scores per query (a copy of rows x chunk, not a gather)
    index = inside * chunk + chunks[torch.arange(rows, device=scores.device), inside].argmax(dim=1)
    if full < n:
        index = torch.where(which == chunks.shape[1], full + tail_index, index)
    return best, index


@dataclass
class Reduction:
    """Row and column reductions of the score matrix for one batch of queries.

    Attributes:
        value: (B,) ``max_j s_ij`` at eps = 0, ``eps logsumexp_j s_ij / eps`` at eps > 0.
        index: (B,) the argmax at eps = 0, ``None`` otherwise.
        mass: (N,) float64 column sums of the coupling rows pi(x_i) (counts at eps = 0).
        mass_sq: (N,) float64 column sums of pi(x_i)^2 (equal to ``mass`` at eps = 0).
        margin: (B,) gap between the best and second best score at eps = 0, else ``None``.
        mass_cube: (N,) float64 column sums of pi(x_i)^3 when asked for (``mass`` at eps = 0).
    """

    value: Tensor
    index: Tensor | None
    mass: Tensor | None
    mass_sq: Tensor | None
    margin: Tensor | None = None
    mass_cube: Tensor | None = None


def augment_queries(x: Tensor) -> Tensor:
    """Return ``[x, 1]`` so that one matmul against :func:`augment_keys` adds the potential."""
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)


def key_column(g: Tensor, dtype: torch.dtype, epsilon: float = 0.0, log_weights: Tensor | None = None) -> Tensor:
    """The last column of :func:`augment_keys`: ``g + eps log b`` computed in ``dtype``."""
    shift = g.to(dtype)
    if epsilon > 0 and log_weights is not None:
        shift = shift + epsilon * log_weights.to(dtype)
    return shift


def augment_keys(y: Tensor, g: Tensor, epsilon: float = 0.0, log_weights: Tensor | None = None) -> Tensor:
    """Return the keys ``[y_j, g_j + eps log b_j]`` of the maximum inner product search."""
    return torch.cat([y, key_column(g, y.dtype, epsilon, log_weights)[:, None]], dim=1)


#: Most rows :func:`min_block_rows` asks a block to keep.
MIN_BLOCK_ROWS = 128


def min_block_rows(dim: int) -> int:
    """Fewest query rows per block worth keeping for keys of dimension ``dim``: ``min(128, dim // 4)``.

    Every row block reads all N keys; with few rows the matmul is bound by that read (measured,
    1 CPU thread, N = 2e5, D = 785, 256 queries: blocks of 16 / 67 / 128 rows cost 2.5 / 1.38 /
    1.00 x one matmul; 67 rows is what 2^26 scores leave at N = 1e6). The floor costs at most
    ``N dim / 4`` scores of memory, a quarter of the keys themselves.
    """
    return max(1, min(MIN_BLOCK_ROWS, dim // 4))


def row_blocks(n_rows: int, n_keys: int, block_elems: int = DEFAULT_BLOCK_ELEMS, min_rows: int = 1):
    """Yield slices of ``max(1, min_rows, block_elems // n_keys)`` query rows (the last may be shorter)."""
    step = max(1, min_rows, block_elems // max(1, n_keys))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


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
            if combine is not None:
                best, idx, margin = combine.argmax(scores, need_margin)
                if margin is not None:
                    margins.append(margin)
            elif need_margin and n_keys > 1:
                top = scores.topk(2, dim=1)
                best, idx = top.values[:, 0], top.indices[:, 0]
                margins.append(top.values[:, 0] - top.values[:, 1])
            else:
                best, idx = row_argmax(scores)
            values.append(best)
            indices.append(idx)
            if need_mass:
                own = idx if combine is None else combine.local_indices(idx)
                mass += torch.bincount(own, minlength=n_keys).to(torch.float64)
        else:
            # logsumexp by hand (torch's is several times slower on CPU); the column sums of
            # pi = exp(s - max) / rowsum are GEMVs with 1 / rowsum, not a normalised copy.
            row_max, row_sum = _exp_rows(scores)
            unnormalised = scores
            if combine is None:
                values.append(epsilon * (row_max + row_sum.log()))
            else:
                total = combine.logsumexp(row_max + row_sum.log())
                values.append(epsilon * total)
            if need_mass:
                inverse = row_sum.reciprocal() if combine is None else (row_max - total).exp()
                mass += (inverse @ unnormalised).to(torch.float64)
                if mass_cube is not None:
                    squared = unnormalised.square()
                    mass_sq += (inverse.square() @ squared).to(torch.float64)
                    mass_cube += (inverse.pow(3) @ squared.mul_(unnormalised)).to(torch.float64)
                elif mass_sq is not None:
                    mass_sq += (inverse.square() @ unnormalised.square_()).to(torch.float64)
        del scores
    return _reduction(epsilon, torch.cat(values), torch.cat(indices) if epsilon == 0 else None, mass, mass_sq,
                      mass_cube, need_mass_cube, torch.cat(margins) if margins else None)


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


def _exp_rows(scores: Tensor, sub_elems: int = CACHE_ELEMS) -> tuple[Tensor, Tensor]:
    """In place ``s_ij <- exp(max(s_ij - m_i, -40))``; returns the row maxima m and row sums.

    Row sub-blocks of about ``sub_elems`` scores go through max, subtract, clamp, exp and sum
    while they sit in cache (one trip through memory instead of five). exp of inputs below
    about -87 takes a slow subnormal path on CPU (up to 1000x); terms below e^-40 change a row
    sum by at most N * 4e-18 relative, so they are clamped first.
    """
    rows, n = scores.shape
    if scores.is_cuda:  # one pass per op over the whole block; no subnormal slow path to avoid
        row_max = scores.amax(dim=1, keepdim=True)
        row_sum = scores.sub_(row_max).exp_().sum(dim=1)
        return row_max.squeeze(1), row_sum
    step = max(1, sub_elems // max(1, n))
    if step >= rows:
        row_max = scores.amax(dim=1, keepdim=True)
        row_sum = scores.sub_(row_max).clamp_(min=-40.0).exp_().sum(dim=1)
        return row_max.squeeze(1), row_sum
    row_max = scores.new_empty(rows)
    row_sum = scores.new_empty(rows)
    for start in range(0, rows, step):
        part = scores[start:start + step]
        top = part.amax(dim=1, keepdim=True)
        torch.sum(part.sub_(top).clamp_(min=-40.0).exp_(), dim=1, out=row_sum[start:start + step])
        row_max[start:start + step] = top.squeeze(1)
    return row_max, row_sum


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
    in :func:`reduce_scores`.
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
            _exp_rows(scores)
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
    in float64 (a float64 copy of each score block: twice the memory of :func:`reduce_scores`),
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
