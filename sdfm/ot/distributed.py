"""The semidiscrete potential with its N points sharded across processes (torch.distributed).

Rank r of a process group of K holds the contiguous shard ``J_r = [o_r, o_r + n_r)`` of the
points y, with their weights b and potential entries g (see :func:`shard_bounds`; the offsets
``o_r`` follow from the shard sizes in rank order). Every rank draws the SAME source batch x
(the solver's generator is seeded identically on each rank), scores it against its own keys
``[y_j, g_j (+ eps log b_j)]`` with the row-blocked kernel, and the ranks combine per row block:

* eps = 0: ``value_i = max_r max_{j in J_r} s_ij`` (all_reduce MAX); the winner is the lowest
  global index attaining it (all_reduce MIN over ``o_r + argmax_r``, or ``N`` on ranks that do
  not attain it), which is the argmax of one process since ``torch.max`` returns the first
  maximal index. Rank r counts ``mass_j = #{i : winner_i = j}`` for its own j. The gap scale
  takes the top two over the all-gathered per-rank top two.
* eps > 0: with ``l_ir = logsumexp_{j in J_r} s_ij / eps`` and local row max ``m_ir``, the
  global ``L_i = logsumexp_r l_ir`` (all_gather of the K values, then a stable logsumexp), and
  rank r computes ``pi_ij = exp(s_ij / eps - m_ir) exp(m_ir - L_i)`` for its own columns: the
  column sums of the global coupling, in the same single pass over the scores.

The SGD direction on the shard is ``b_r - mass_r / B``, and each rank updates only its entries
of g with the solver's optimiser, averaging and step schedule (:class:`ShardedReducer` supplies
the global quantities: ``<b, g>`` for the shift normalisation, ``min_j b_j`` and the gap scale
for the step size, the weight normalisation, and chi^2 as the sum over ranks of
``sum_{j in J_r} (mass_j^2 - mass_sq_j) / b_j``). The code path is the single-process solver's,
so the sharded fit equals the one-process fit up to floating-point reduction order (different
summation orders for the logsumexp, ``<b, g>``, the weight normalisation and the covariance of
the ``"gaussian"`` initial potential): about 1e-12 relative on float64 data. With float32 data
at eps = 0 the hard counts can amplify one-ulp differences in g into a different (equally
valid) SGD path, as a different thread count or BLAS would in one process.

Backends: NCCL for CUDA tensors, gloo on CPU (:func:`init_distributed` picks from the device
and reads RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT from the environment, as torchrun sets
them). Every function here that takes queries is a collective: all ranks call it with the same
queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor

from sdfm.ot.chi2 import chi2_unbiased
from sdfm.ot.kernel import augment_queries, reduce_scores, row_blocks
from sdfm.ot.potential import SemidiscretePotential
from sdfm.ot.shards import (ShardCombine, ShardedReducer, ShardLayout, _all_gather, init_distributed,  # noqa: F401
                            rank_generator, shard_bounds, shard_checkpoint)
from sdfm.ot.solver import SemidiscreteSolver, SolverConfig

__all__ = [
    "ShardCombine",
    "ShardLayout",
    "ShardedPotential",
    "ShardedReducer",
    "fit_potential_sharded",
    "gather_potential",
    "init_distributed",
    "rank_generator",
    "shard_bounds",
    "shard_checkpoint",
]


@dataclass
class ShardedPotential:
    """This rank's shard of a semidiscrete potential, with the collective views over all shards.

    Constructing one is a collective (it gathers the shard sizes). Every method taking ``x`` is
    a collective too: all ranks pass the same ``x`` and get the same result.

    Attributes:
        local: the potential restricted to this rank's points (``local.g``: its entries of g).
        group: the process group (default: the world).
    """

    local: SemidiscretePotential
    group: object = None

    def __post_init__(self) -> None:
        self.layout = ShardLayout.build(self.local.n_points, self.local.y.device, self.group)
        self.combine = ShardCombine(self.layout, self.group)

    @property
    def epsilon(self) -> float:
        return self.local.epsilon

    @property
    def offset(self) -> int:
        return self.layout.offset

    @property
    def n_points(self) -> int:
        """N, the number of points over all shards."""
        return self.layout.n_total

    @property
    def history(self) -> dict:
        return self.local.history

    def _queries(self, x: Tensor) -> Tensor:
        return augment_queries(x.to(self.local.y.device, self.local.y.dtype))

    def assign(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Global data indices paired with the source points ``x`` (the same on every rank).

        At eps = 0 the argmax over all shards (ties: the lowest global index). At eps > 0 an
        exact draw from ``pi(x_i)`` over all N, in two levels: rank r draws ``j_r`` from its
        shard's softmax by inverting its cumulative distribution and computes its log mass
        ``l_r = logsumexp_{j in J_r} s_ij / eps``; the ranks then pick r by Gumbel-max,
        ``argmax_r l_r + G_r`` (all_reduce MAX), so ``P(j) = (e^{l_r} / sum_r' e^{l_r'})
        (e^{s_ij / eps} / e^{l_r}) = pi_j(x_i)``. The Gumbel and uniform noise of rank r come from
        :func:`rank_generator` seeded by (one draw from ``generator``, r): independent across
        ranks even when ``generator`` is the same on every rank (as in a loop seeded alike). As
        in :func:`sdfm.ot.kernel.sample_assignment`, scores more than 40 below the row max of a
        shard are dropped (relative weight below 4e-18).
        """
        queries, keys, layout = self._queries(x), self.local.keys, self.layout
        if self.epsilon == 0:
            return reduce_scores(queries, keys, 0.0, need_mass=False, block_elems=self.local.block_elems,
                                 combine=self.combine).index
        seed = int(torch.randint(2**62, (1,), generator=generator,
                                 device=generator.device if generator is not None else "cpu"))
        gen = rank_generator(seed, layout.rank, keys.device)
        queries = queries / self.epsilon
        picks, log_mass = [], []
        for rows in row_blocks(queries.shape[0], layout.n_local, self.local.block_elems):
            scores = queries[rows] @ keys.T
            row_max = scores.amax(dim=1, keepdim=True)
            cdf = scores.sub_(row_max).clamp_(min=-40.0).exp_().cumsum(dim=1, dtype=torch.float64)
            u = torch.rand(cdf.shape[0], 1, generator=gen, device=cdf.device, dtype=torch.float64)
            picks.append(torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(1).clamp_(max=layout.n_local - 1))
            log_mass.append(row_max.squeeze(1).to(torch.float64) + cdf[:, -1].log())
        uniform = torch.rand(queries.shape[0], generator=gen, device=keys.device, dtype=torch.float64)
        key = torch.cat(log_mass) - (-uniform.log()).log()  # + Gumbel(0, 1)
        best = key.clone()
        dist.all_reduce(best, op=dist.ReduceOp.MAX, group=self.group)
        winner = torch.where(key == best, torch.cat(picks) + layout.offset, layout.n_total)
        dist.all_reduce(winner, op=dist.ReduceOp.MIN, group=self.group)
        return winner

    def marginal_counts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """This shard's columns of the global coupling's column sums: ``(mass, mass_sq)`` float64."""
        reduction = reduce_scores(self._queries(x), self.local.keys, self.epsilon, block_elems=self.local.block_elems,
                                  combine=self.combine)
        return reduction.mass, reduction.mass_sq

    def chi2(self, x: Tensor) -> float:
        """Unbiased chi^2(m(g), b) over all N from the source samples ``x`` (paper Eq. 3.5)."""
        mass, mass_sq = self.marginal_counts(x)
        part = torch.tensor([chi2_unbiased(mass, mass_sq, x.shape[0], self.local.weights) + 1.0],
                            dtype=torch.float64, device=self.local.y.device)
        return float(_all_gather(part, self.group).sum()) - 1.0

    def gather(self, y: Tensor | None = None, dst: int = 0) -> SemidiscretePotential | None:
        """:func:`gather_potential` of this potential."""
        return gather_potential(self, y=y, dst=dst)


def fit_potential_sharded(
    y_shard: Tensor,
    *,
    epsilon: float = 0.0,
    steps: int = SolverConfig.steps,
    batch_size: int = SolverConfig.batch_size,
    lr: float | None = None,
    weights: Tensor | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    chi2_threshold: float | None = None,
    callback: Callable[[int, dict], None] | None = None,
    checkpoint: str | Path | None = None,
    source: Callable[[int, torch.Generator], Tensor] | None = None,
    process_group=None,
    **options,
) -> ShardedPotential:
    """Fit the semidiscrete potential from N(0, I_d) to points sharded across a process group.

    A collective: every rank of ``process_group`` (default: the world, see
    :func:`init_distributed`) calls it with its own contiguous shard, in rank order (rank r holds
    points ``[o_r, o_r + n_r)``, e.g. from :func:`shard_bounds`), and the same other arguments.
    Each SGD step draws the same B source samples on every rank; with s_ij = <x_i, y_j> + g_j,

    * eps = 0: winner_i = the global argmax_j s_ij (all_reduce MAX of the per-rank best score,
      then MIN of the global index of the ranks attaining it); rank r's ascent direction on its
      entries is ``b_j - #{i : winner_i = j} / B``;
    * eps > 0: ``L_i = logsumexp_r logsumexp_{j in J_r} (s_ij / eps + log b_j)``, then
      ``pi_ij = exp(s_ij / eps + log b_j - L_i)`` and the direction ``b_j - sum_i pi_ij / B``;

    followed by the solver's update on the shard only (momentum, averaging and the step
    schedule of :class:`~sdfm.ot.solver.SemidiscreteSolver`, whose loop this runs), with the
    step scale from the global ``min_j b_j`` and gap scale, and the global shift that keeps
    ``<b, g> = 0``. See the module docstring for the agreement with a one-process fit.

    Args:
        y_shard: (n_r, d) this rank's points (n_r >= 1 on every rank).
        weights: (n_r,) this rank's target weights (normalised over all ranks), uniform by default.
        device: where this rank computes (default: where ``y_shard`` lives); NCCL needs CUDA.
        checkpoint: checkpoint path; each rank writes ``shard_checkpoint(checkpoint, r, K)`` and
            a resumption needs every rank's file at the same step.
        process_group: the group (default: the world).
        epsilon, steps, batch_size, lr, seed, chi2_threshold, callback, source, **options: as in
            :func:`sdfm.ot.solver.fit_potential` (the callback runs on every rank, with the same
            values). ``init="multiscale"`` is not supported yet.

    Returns:
        This rank's :class:`ShardedPotential`; :func:`gather_potential` assembles the full one.
    """
    y = torch.as_tensor(y_shard)
    if not y.is_floating_point():
        y = y.float()
    if device is not None:
        y = y.to(device)
    if y.ndim != 2 or y.shape[0] < 1:
        raise ValueError(f"y_shard must be an (n, d) tensor with n >= 1, got shape {tuple(y.shape)}")
    options.setdefault("init", "gaussian")  # the one-process default, multiscale, has no sharded form yet
    config = SolverConfig(steps=steps, batch_size=batch_size, lr=lr, chi2_threshold=chi2_threshold, **options)
    if config.init == "multiscale":
        raise NotImplementedError("init='multiscale' is not available for a sharded fit: use 'gaussian'")
    reducer = ShardedReducer(y.shape[0], y.device, process_group)
    if reducer.any(not bool(torch.isfinite(y).all())):
        raise ValueError("y contains NaN or inf values (on some rank)")
    local = SemidiscreteSolver(config)(y, epsilon=epsilon, weights=weights, seed=seed, callback=callback,
                                       checkpoint=checkpoint, source=source, reducer=reducer)
    return ShardedPotential(local, process_group)


def gather_potential(potential: ShardedPotential, y: Tensor | None = None, dst: int = 0):
    """The full :class:`SemidiscretePotential` on rank ``dst`` (``None`` on the others); a collective.

    g and the weights are gathered; so are the points unless rank ``dst`` passes the full ``y``
    (which saves sending N x d values when it already holds the data set; the other ranks'
    ``y`` is ignored).
    """
    layout, group, local = potential.layout, potential.group, potential.local
    on_dst = layout.rank == dst
    if on_dst and y is not None and y.shape[0] != layout.n_total:
        raise ValueError(f"y has {y.shape[0]} points, the sharded potential {layout.n_total}")

    def gather(t: Tensor) -> Tensor | None:
        padded = t.new_zeros((layout.max_local, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in layout.sizes] if on_dst else None
        dist.gather(padded, parts, dst=dst, group=group)
        return torch.cat([part[:n] for part, n in zip(parts, layout.sizes)]) if on_dst else None

    g, weights = gather(local.g), gather(local.weights)
    need_points = torch.tensor([int(on_dst and y is None)], dtype=torch.int64, device=local.y.device)
    dist.broadcast(need_points, src=dst, group=group)
    points = gather(local.y) if int(need_points) else None
    if not on_dst:
        return None
    points = points if points is not None else y.to(local.y.device, local.y.dtype)
    return SemidiscretePotential(points, g, local.epsilon, weights, local.history, local.block_elems)
