"""Entropic batch OT between n points x and m points y without the n x m matrix: log-domain Sinkhorn
on the dual potentials, streamed in row blocks, optionally with y sharded over torch.distributed ranks,
and draws of pairs from the resulting plan.

The problem. The cost is the project's inner-product cost ``c_ij = -<x_i, y_j>``
(:func:`sdfm.ot.batch.inner_product_cost`) and both marginals are uniform, ``a_i = 1 / n``,
``b_j = 1 / m``. The entropic plan at ``eps > 0`` is written through two dual potentials
f (n,) and g (m,) as

    P_ij = exp((f_i + g_j - c_ij) / eps) = exp((f_i + g_j + <x_i, y_j>) / eps).

Sinkhorn alternately makes the rows and then the columns of P sum to their marginals. Solving
``sum_j P_ij = 1 / n`` for f_i with g fixed, and ``sum_i P_ij = 1 / m`` for g_j with f fixed:

    f_i = -eps log n - eps LSE_j ((g_j + <x_i, y_j>) / eps),
    g_j = -eps log m - eps LSE_i ((f_i + <x_i, y_j>) / eps),

where ``LSE_k(z_k) = log sum_k exp(z_k)`` is evaluated stably (these are POT's ``sinkhorn_log``
updates with ``u = f / eps``, ``v = g / eps``). Starting from g = 0, one iteration is the f update
followed by the g update. Just before the g update, the rows of P are exact and the column sums are
``exp(g_j / eps + LSE_i((f_i + <x_i, y_j>) / eps))``: the same column logsumexp gives the stopping
criterion, the L1 error ``sum_j |sum_i P_ij - 1 / m|``, for free. The loop stops (keeping that g,
so the returned state has exact rows and the reported column error) when the error is below
``tol`` or after ``max_iter`` iterations.

Memory. Neither update needs the n x m matrix: x is taken in row blocks of ``block_elems // m``
rows (:func:`sdfm.ot.kernel_blocks.row_blocks`, the semidiscrete kernel's block sizes); the f
update is a row logsumexp per block, and the g update accumulates a running column logsumexp
over the blocks (``logaddexp`` of the per-block column logsumexps). Peak memory is
O(n + m + block_elems), i.e. O(block * m) for the scores.

Sharding. Rank r holds a contiguous shard ``J_r`` of y's rows and its slice ``g_{J_r}``; x and f
are replicated. The f update splits the logsumexp over the shards,

    LSE_j z_ij = LSE_r l_ir,   l_ir = LSE_{j in J_r} z_ij,

so each rank computes its n local row logsumexps and the ranks combine them once per iteration
with the semidiscrete fit's cross-shard logsumexp (:meth:`sdfm.ot.shards.ShardCombine.logsumexp`).
The g update of rank r only involves its own columns (f is replicated): it is local. The stopping
error is the sum over ranks of the local L1 errors (:meth:`sdfm.ot.shards.ShardedReducer.total`,
the same bits on every rank, hence the same stopping decision). The computation is the
one-process one up to the summation order of the logsumexp: equal to float round-off.

Draws. For a row i, the conditional of the plan is ``P(j | i) ∝ exp((g_j + <x_i, y_j>) / eps)``
(f_i is a constant of the row). Gumbel-max draws it exactly without normalising: with
``G_ij`` i.i.d. standard Gumbel, ``argmax_j ((g_j + <x_i, y_j>) / eps + G_ij)`` has that law. The
argmax is taken over column blocks (a running maximum), and across shards by the cross-shard
argmax (:meth:`sdfm.ot.shards.ShardCombine.argmax_of`: the maximum, then the lowest global index
attaining it); since the maximum over a union is the maximum of the maxima, the sharded draw has
the same law as the one-process draw (its noise differs: each rank draws its own, from
:func:`sdfm.ot.shards.rank_generator` seeded by one draw from the caller's generator).

Relative epsilon. :func:`sdfm.ot.batch.relative_epsilon` takes the std of the n x m reference cost
from the matrix; :func:`streamed_cost_std` gets the same number in row blocks: the mean in closed
form (``mean_ij <x_i, y_j> = <mean x, mean y>``, and ``mean |x_i - y_j|^2 = mean |x|^2 + mean |y|^2
- 2 <mean x, mean y>``), then the sum of squared deviations block by block, over ``n m - 1``.
Sharded, each rank sums the squared deviations of its own columns and the ranks add them.

Pairing on ranks (:func:`sharded_ot_pairing`). When K data-parallel ranks need the same plan (the
OT-FM plans of :class:`sdfm.fm.couplings.PlanOTCoupling`, every rank holding the same n noise and
n data points), each rank keeps the contiguous column shard ``shard_bounds(n, K, r)`` of the data
side and runs the sharded solve and draws above: 1/K of the scores per rank, plus one all_gather
of n row logsumexps per iteration. Every rank returns the same pairing, drawn from the plan of
one process (up to round-off) with other Gumbel noise: the same law, not the same pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from sdfm.ot.batch import (batch_ot_pairing, check_epsilon_reference, epsilon_from_std, reference_cost,
                           relative_epsilon)
from sdfm.ot.kernel_blocks import DEFAULT_BLOCK_ELEMS, block_elems_for, row_blocks
from sdfm.ot.reducer import Reducer
from sdfm.ot.shards import ShardedReducer, rank_generator, shard_bounds

__all__ = ["BLOCKED_SINKHORN_MIN_N", "BlockedSinkhorn", "blocked_ot_pairing", "blocked_sinkhorn", "plan_log_entries",
           "relative_ot_pairing", "sample_plan_columns", "sharded_ot_pairing", "streamed_cost_std",
           "streamed_relative_epsilon"]

#: Smallest batch :func:`relative_ot_pairing` solves at eps > 0 without the n x n matrix when asked to
#: (``blocked_min_n=BLOCKED_SINKHORN_MIN_N``): the dense float64 solve holds a few n x n matrices, 2 GiB
#: each at this n; the project's configs use n <= 4096, which stay on the dense solve.
BLOCKED_SINKHORN_MIN_N = 16384


@dataclass
class BlockedSinkhorn:
    """The dual state of a blocked Sinkhorn solve.

    Attributes:
        f: (n,) the potential of the rows x (replicated on every rank).
        g: (m_local,) the potential of this process's points y (all of y in one process).
        epsilon: the absolute regularisation, in units of the cost ``-<x, y>``.
        iterations: the f / g update pairs run (the last g update is skipped, see the module).
        marginal_error: ``sum_j |sum_i P_ij - 1 / m|`` of the returned state (over all shards).
        converged: whether that error is below the solve's ``tol``.
    """

    f: Tensor
    g: Tensor
    epsilon: float
    iterations: int
    marginal_error: float
    converged: bool


def _block_rows(n_rows: int, n_cols: int, block_elems: int, like: Tensor):
    """Row slices of ``n_rows`` rows holding about ``block_elems`` scores against ``n_cols`` columns."""
    return row_blocks(n_rows, n_cols, block_elems_for(block_elems, like.device, like.dtype))


def local_row_logsumexp(x: Tensor, y: Tensor, g: Tensor, epsilon: float, block_elems: int) -> Tensor:
    """(n,) ``LSE_j ((g_j + <x_i, y_j>) / eps)`` over the columns y held here, in row blocks of x."""
    out = x.new_empty(x.shape[0])
    for rows in _block_rows(x.shape[0], y.shape[0], block_elems, x):
        out[rows] = torch.logsumexp((x[rows] @ y.T + g) / epsilon, dim=1)
    return out


def column_logsumexp(x: Tensor, y: Tensor, f: Tensor, epsilon: float, block_elems: int) -> Tensor:
    """(m,) ``LSE_i ((f_i + <x_i, y_j>) / eps)``: a running logaddexp of the row blocks' column logsumexps."""
    running = y.new_full((y.shape[0],), -math.inf)
    for rows in _block_rows(x.shape[0], y.shape[0], block_elems, x):
        block = torch.logsumexp((x[rows] @ y.T + f[rows, None]) / epsilon, dim=0)
        running = torch.logaddexp(running, block)
    return running


def _row_update(x: Tensor, y: Tensor, g: Tensor, epsilon: float, block_elems: int, reducer: Reducer) -> Tensor:
    """``f_i = -eps log n - eps LSE_j ((g_j + <x_i, y_j>) / eps)``, the LSE combined over the shards."""
    lse = local_row_logsumexp(x, y, g, epsilon, block_elems)
    if reducer.combine is not None:
        lse = reducer.combine.logsumexp(lse)
    return -epsilon * (math.log(x.shape[0]) + lse)


def blocked_sinkhorn(x: Tensor, y: Tensor, epsilon: float, *, tol: float = 1e-6, max_iter: int = 10_000,
                     block_elems: int = DEFAULT_BLOCK_ELEMS, reducer: Reducer | None = None) -> BlockedSinkhorn:
    """Log-domain Sinkhorn between uniform weights on x (n, d) and y (m, d) for the cost ``-<x, y>``.

    The updates, the stopping rule and the memory bound are those of the module docstring.

    Args:
        x: (n, d) the rows (replicated on every rank when sharded).
        y: (m_local, d) the columns held by this process (a contiguous shard when sharded).
        epsilon: the absolute regularisation (> 0).
        tol: stop once the L1 error of the column marginal is below it.
        max_iter: the most f / g update pairs.
        block_elems: about how many scores a row block holds (on CUDA, as the semidiscrete kernel: more).
        reducer: :class:`sdfm.ot.reducer.Reducer` (default) for one process, or a
            :class:`sdfm.ot.shards.ShardedReducer` built on ``y.shape[0]`` (a collective: every rank
            calls with the same x).
    """
    if epsilon <= 0:
        raise ValueError(f"the blocked Sinkhorn needs epsilon > 0, got {epsilon}")
    reducer = reducer if reducer is not None else Reducer()
    m_total = reducer.count(y.shape[0])
    g = y.new_zeros(y.shape[0])
    for iteration in range(1, max_iter + 1):
        f = _row_update(x, y, g, epsilon, block_elems, reducer)
        col_lse = column_logsumexp(x, y, f, epsilon, block_elems)
        local_error = (torch.exp(g / epsilon + col_lse) - 1.0 / m_total).abs().sum()
        error = float(reducer.total(local_error.to(torch.float64)))
        if error < tol or iteration == max_iter:
            break
        g = -epsilon * (math.log(m_total) + col_lse)
    return BlockedSinkhorn(f, g, float(epsilon), iteration, error, error < tol)


def plan_log_entries(x: Tensor, y: Tensor, solution: BlockedSinkhorn) -> Tensor:
    """The (n, m_local) matrix ``(f_i + g_j + <x_i, y_j>) / eps = log P_ij``: for checks on small problems only."""
    return (solution.f[:, None] + solution.g[None, :] + x @ y.T) / solution.epsilon


def _gumbel(shape: tuple[int, int], generator: torch.Generator, like: Tensor) -> Tensor:
    """Standard Gumbel noise ``-log(-log U)``, U uniform on (0, 1)."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return -torch.log(-torch.log(u.clamp_min_(torch.finfo(like.dtype).tiny)))


def local_gumbel_argmax(x_rows: Tensor, y: Tensor, g: Tensor, epsilon: float, generator: torch.Generator,
                        block_elems: int) -> tuple[Tensor, Tensor]:
    """Per row, ``max_j`` and first ``argmax_j`` of ``(g_j + <x_i, y_j>) / eps + G_ij`` over the local columns.

    Rows go in blocks of ``block_elems // m`` (at least one), columns in blocks of
    ``block_elems // rows`` (at least one), with a running maximum over the column blocks
    (a strict improvement replaces it, so ties keep the lowest index).
    """
    best = x_rows.new_full((x_rows.shape[0],), -math.inf)
    index = torch.zeros(x_rows.shape[0], dtype=torch.long, device=x_rows.device)
    m = y.shape[0]
    for rows in _block_rows(x_rows.shape[0], m, block_elems, x_rows):
        width = max(1, block_elems // (rows.stop - rows.start))
        for start in range(0, m, width):
            cols = slice(start, min(start + width, m))
            scores = (x_rows[rows] @ y[cols].T + g[cols]) / epsilon
            scores += _gumbel(tuple(scores.shape), generator, scores)
            block_best, block_index = scores.max(dim=1)
            better = block_best > best[rows]
            best[rows] = torch.where(better, block_best, best[rows])
            index[rows] = torch.where(better, block_index + start, index[rows])
    return best, index


def sample_plan_columns(x_rows: Tensor, y: Tensor, g: Tensor, epsilon: float, *,
                        generator: torch.Generator | None = None, block_elems: int = DEFAULT_BLOCK_ELEMS,
                        reducer: Reducer | None = None) -> Tensor:
    """One column per row, ``j ~ P(j | i) ∝ exp((g_j + <x_i, y_j>) / eps)``, by Gumbel-max (global indices).

    Args:
        x_rows: (k, d) the rows to draw for (``x[rows]`` of the solve; a row may repeat).
        y, g: this process's columns and their potential (a :class:`BlockedSinkhorn`'s ``g``).
        epsilon: the solve's epsilon.
        generator: one seed is drawn from it; the noise of rank r comes from
            ``rank_generator(seed, r)`` (r = 0 in one process), so ranks whose generators agree
            draw independent noise and return the same indices.
        reducer: as in :func:`blocked_sinkhorn`; sharded, the winner is the cross-shard argmax.
    """
    reducer = reducer if reducer is not None else Reducer()
    combine = reducer.combine
    gen_device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(2**62, (1,), generator=generator, device=gen_device))
    noise = rank_generator(seed, combine.layout.rank if combine is not None else 0, y.device)
    best, index = local_gumbel_argmax(x_rows, y, g, epsilon, noise, block_elems)
    if combine is None:
        return index
    return combine.argmax_of(best, index)[1]


def streamed_cost_std(x: Tensor, y: Tensor, reference: str = "inner_product",
                      block_elems: int = DEFAULT_BLOCK_ELEMS, *, columns: slice | None = None,
                      reducer: Reducer | None = None) -> float:
    """:func:`sdfm.ot.batch.reference_cost_std` (sample std over the n x m entries) in row blocks.

    Sharded (a collective): every rank passes all of x and y, its own ``columns`` of y and a
    :class:`sdfm.ot.shards.ShardedReducer`; the mean is the closed form over all of y, the squared
    deviations are summed over this rank's columns, and the ranks' sums are added.
    """
    check_epsilon_reference(reference)
    n, m = x.shape[0], y.shape[0]
    mean = -float(x.mean(dim=0) @ y.mean(dim=0))
    if reference == "sq_euclidean":
        mean = float(x.square().sum(dim=1).mean() + y.square().sum(dim=1).mean()) + 2 * mean
    local = y[columns] if columns is not None else y
    squares = x.new_zeros((), dtype=torch.float64)
    for rows in _block_rows(n, local.shape[0], block_elems, x):
        squares += (reference_cost(x[rows], local, reference) - mean).square().sum().double()
    if reducer is not None:
        squares = reducer.total(squares)
    return math.sqrt(float(squares) / max(n * m - 1, 1))


def streamed_relative_epsilon(epsilon_rel: float, x: Tensor, y: Tensor, reference: str = "inner_product",
                              block_elems: int = DEFAULT_BLOCK_ELEMS) -> float:
    """:func:`sdfm.ot.batch.relative_epsilon` without the n x m matrix."""
    return epsilon_from_std(epsilon_rel, streamed_cost_std(x, y, reference, block_elems), reference)


def blocked_ot_pairing(x0: Tensor, x1: Tensor, epsilon: float, generator: torch.Generator | None = None, *,
                       tol: float = 1e-3, max_iter: int = 10_000, block_elems: int = DEFAULT_BLOCK_ELEMS,
                       reducer: Reducer | None = None) -> Tensor:
    """:func:`sdfm.ot.batch.batch_ot_pairing` at eps > 0 without the n x n matrix: one ``j ~ P(j | i)`` per row.

    The plan is :func:`blocked_sinkhorn`'s (``tol`` bounds the L1 error of its column marginal),
    the draws :func:`sample_plan_columns`' (Gumbel-max), in float64 as in ``batch_ot_pairing``.
    With a sharded ``reducer``, x1 is this rank's shard and the indices are global (a collective).
    """
    x0, x1 = x0.double(), x1.double()
    solution = blocked_sinkhorn(x0, x1, epsilon, tol=tol, max_iter=max_iter, block_elems=block_elems, reducer=reducer)
    return sample_plan_columns(x0, x1, solution.g, epsilon, generator=generator, block_elems=block_elems,
                               reducer=reducer)


def sharded_ot_pairing(x0: Tensor, x1: Tensor, epsilon_rel: float, reference: str = "inner_product",
                       generator: torch.Generator | None = None, *, group=None, tol: float = 1e-3,
                       max_iter: int = 10_000, block_elems: int = DEFAULT_BLOCK_ELEMS) -> tuple[Tensor, float]:
    """``(pairing, absolute epsilon)`` of :func:`blocked_ot_pairing` with x1 split over the ranks of ``group``.

    A collective: every rank passes the same x0 (n, d), x1 (m, d) and a generator in the same
    state, keeps the columns ``shard_bounds(m, K, rank)`` of x1, and gets the same pairing back
    (global indices into x1). The epsilon is :func:`streamed_relative_epsilon`'s, the plan the
    sharded :func:`blocked_sinkhorn`, the draws the cross-shard Gumbel-max of
    :func:`sample_plan_columns` (see the module: the law of one process's draws, other noise).
    """
    x0, x1 = x0.double(), x1.double()
    start, stop = shard_bounds(x1.shape[0], dist.get_world_size(group), dist.get_rank(group))
    y = x1[start:stop]
    reducer = ShardedReducer(y.shape[0], y.device, group)
    std = streamed_cost_std(x0, x1, reference, block_elems, columns=slice(start, stop), reducer=reducer)
    epsilon = epsilon_from_std(epsilon_rel, std, reference)
    return blocked_ot_pairing(x0, y, epsilon, generator, tol=tol, max_iter=max_iter, block_elems=block_elems,
                              reducer=reducer), epsilon


def _ranks() -> int:
    """The number of torch.distributed ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def relative_ot_pairing(x0: Tensor, x1: Tensor, epsilon_rel: float, reference: str = "inner_product",
                        generator: torch.Generator | None = None, *, blocked_min_n: int | None = None,
                        shard_over_ranks: bool = False) -> tuple[Tensor, float]:
    """``(pairing, absolute epsilon)``: batch OT pairs at the relative epsilon ``epsilon_rel``.

    eps = 0, or fewer than ``blocked_min_n`` pairs (None: always): the dense route,
    :func:`sdfm.ot.batch.relative_epsilon` and :func:`sdfm.ot.batch.batch_ot_pairing`. Otherwise
    the same epsilon from :func:`streamed_cost_std` and the pairs from :func:`blocked_ot_pairing`;
    with ``shard_over_ranks`` and more than one torch.distributed rank, from :func:`sharded_ot_pairing`
    (then a collective: every rank must pass the same x0, x1 and generator state).
    """
    if epsilon_rel == 0:
        return batch_ot_pairing(x0, x1, 0.0, generator), 0.0
    if blocked_min_n is None or x0.shape[0] < blocked_min_n:
        epsilon = relative_epsilon(epsilon_rel, x0, x1, reference)
        return batch_ot_pairing(x0, x1, epsilon, generator), epsilon
    if shard_over_ranks and _ranks() > 1:
        return sharded_ot_pairing(x0, x1, epsilon_rel, reference, generator)
    x0, x1 = x0.double(), x1.double()
    epsilon = streamed_relative_epsilon(epsilon_rel, x0, x1, reference)
    return blocked_ot_pairing(x0, x1, epsilon, generator), epsilon
