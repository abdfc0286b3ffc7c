"""The collectives of a sharded semi-dual fit: which points a rank holds, and the combination of
its row-block statistics with the other ranks' (the math is in the docstring of :mod:`sdfm.ot.distributed`).

:class:`ShardCombine` is the ``combine`` hook of :func:`sdfm.ot.kernel.reduce_scores`;
:class:`ShardedReducer` gives the solver's loop the global quantities of the fit. Both are
re-exported by :mod:`sdfm.ot.distributed`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from sdfm.ot.chi2 import chi2_unbiased
from sdfm.ot.kernel_blocks import row_argmax
from sdfm.ot.reducer import Reducer
from sdfm.ot.solver_init import gaussian_conjugate, gaussian_conjugate_from_gram, initial_potential

__all__ = ["ShardCombine", "ShardLayout", "ShardedReducer", "init_distributed", "rank_generator", "shard_bounds",
           "shard_checkpoint"]


def shard_bounds(n: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank's contiguous shard of n points; the first ``n % K`` ranks get one more."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + int(rank < extra)


def init_distributed(device: str | torch.device | None = None) -> torch.device:
    """Join the process group (``env://``, as set by torchrun) and return this rank's device.

    The backend follows the device: NCCL for CUDA (``cuda`` alone means ``cuda:LOCAL_RANK``),
    gloo otherwise. Default device: CUDA when available, else CPU. A group already initialised
    is kept.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def rank_generator(seed: int, rank: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator for rank's own noise, decorrelated from other ranks and seeds (SeedSequence mixing)."""
    words = np.random.SeedSequence([int(seed), int(rank)]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(((int(words[0]) << 32) | int(words[1])) & (2**63 - 1))


def shard_checkpoint(path: str | Path, rank: int, world_size: int) -> Path:
    """Rank's own checkpoint file for the solver's ``checkpoint`` argument: ``name.rank{r}of{K}.suffix``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rank{rank}of{world_size}{path.suffix}")


def _all_gather(t: Tensor, group) -> Tensor:
    """The ranks' copies of ``t`` stacked in rank order, (K, *t.shape), the same on every rank."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, t.contiguous(), group=group)
    return torch.stack(parts)


@dataclass(frozen=True)
class ShardLayout:
    """Where this rank's shard sits in the full set of points."""

    rank: int
    world_size: int
    offset: int
    n_local: int
    n_total: int
    max_local: int
    sizes: tuple[int, ...]

    @classmethod
    def build(cls, n_local: int, device, group=None) -> "ShardLayout":
        """Gather the shard sizes (a collective); shards are contiguous in rank order."""
        sizes = _all_gather(torch.tensor([n_local], dtype=torch.int64, device=device), group).flatten().tolist()
        rank = dist.get_rank(group)
        if min(sizes) < 1:
            raise ValueError(f"every rank needs at least one point, got shard sizes {sizes}")
        return cls(rank, len(sizes), sum(sizes[:rank]), n_local, sum(sizes), max(sizes), tuple(sizes))

    def gather_rows(self, t: Tensor, group=None) -> Tensor:
        """Every rank's ``t`` (this shard's rows) concatenated in rank order, (n_total, ...), on every rank.

        Shards may differ in size by one, so each is padded to ``max_local`` rows for the all_gather.
        """
        padded = t.new_zeros((self.max_local, *t.shape[1:]))
        padded[: t.shape[0]] = t
        return torch.cat([part[:size] for part, size in zip(_all_gather(padded, group), self.sizes)])


class ShardCombine:
    """The cross-shard hook of :func:`sdfm.ot.kernel.reduce_scores` (see :mod:`sdfm.ot.distributed`).

    Rows are blocked by the largest shard size so that every rank runs the same number of row
    blocks, hence the same sequence of collectives.
    """

    def __init__(self, layout: ShardLayout, group=None) -> None:
        self.layout, self.group = layout, group
        self.offset, self.block_keys = layout.offset, layout.max_local

    def argmax(self, scores: Tensor, need_margin: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        """Global ``(best score, global argmax, top-1 minus top-2 margin or None)`` of a row block."""
        n_total, group = self.layout.n_total, self.group
        if need_margin and n_total > 1:
            top = scores.topk(min(2, scores.shape[1]), dim=1)
            values = top.values
            if values.shape[1] < 2:  # a one-point shard: its second best is -inf
                values = torch.cat([values, torch.full_like(values, -torch.inf)], dim=1)
            all_values = _all_gather(values, group)  # (K, rows, 2)
            all_index = _all_gather(top.indices[:, 0] + self.offset, group)  # (K, rows)
            top2 = all_values.permute(1, 0, 2).reshape(values.shape[0], -1).topk(2, dim=1).values
            best = top2[:, 0]
            winner = torch.where(all_values[:, :, 0] == best, all_index, n_total).amin(dim=0)
            return best, winner, top2[:, 0] - top2[:, 1]
        best, winner = self.argmax_of(*row_argmax(scores))
        return best, winner, None

    def argmax_of(self, local_best: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """Global ``(best, winner)`` from each rank's per-row best value and its local index.

        ``best`` is the maximum over the ranks (all_reduce MAX); ``winner`` the lowest global index
        attaining it (all_reduce MIN over ``offset + index``, or ``n_total`` on ranks that do not).
        """
        best = local_best.clone()
        dist.all_reduce(best, op=dist.ReduceOp.MAX, group=self.group)
        winner = torch.where(local_best == best, index + self.offset, self.layout.n_total)
        dist.all_reduce(winner, op=dist.ReduceOp.MIN, group=self.group)
        return best, winner

    def local_indices(self, index: Tensor) -> Tensor:
        """The global winners that are this shard's points, as local indices."""
        own = index - self.offset
        return own[(own >= 0) & (own < self.layout.n_local)]

    def logsumexp(self, local: Tensor) -> Tensor:
        """``logsumexp_r l_ir`` of the ranks' row logsumexps (all_gather, then a stable logsumexp)."""
        return torch.logsumexp(_all_gather(local, self.group), dim=0)


class ShardedReducer(Reducer):
    """The solver's global quantities over a process group; each rank holds one shard of the points.

    Args:
        n_local: the number of points of this rank's shard.
        device: where this rank's tensors (and, for NCCL, the collectives) live.
        group: the process group (default: the world).
    """

    def __init__(self, n_local: int, device, group=None) -> None:
        self.device, self.group = torch.device(device), group
        self.layout = ShardLayout.build(n_local, self.device, group)
        self.combine = ShardCombine(self.layout, group)
        self.is_main = self.layout.rank == 0

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` holds on some rank (so that every rank raises together)."""
        t = torch.tensor([int(bool(flag))], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())

    def target_weights(self, weights: Tensor | None, n: int, device) -> Tensor:
        if weights is None:
            return torch.full((n,), 1.0 / self.layout.n_total, dtype=torch.float64, device=device)
        b = torch.as_tensor(weights, dtype=torch.float64, device=device)
        bad = b.shape != (n,) or bool((b <= 0).any()) or not bool(torch.isfinite(b).all())
        if self.any(bad):
            raise ValueError(f"weights must be one positive finite number per point of each shard ({n} here)")
        return b / self.total(b.sum())

    def initial_potential(self, y: Tensor, init: str) -> Tensor:
        """As :func:`sdfm.ot.solver_init.initial_potential`, the Gaussian fit from all-reduced moments.

        The mean is all-reduced; with more points than dimensions (N > d) so is the scatter
        ``sum_j c_j c_j^T`` of the centred points, and each rank takes its own ``g_j`` from the d x d
        covariance. With N <= d the centred shards are all-gathered instead and every rank runs the
        N x N Gram route of the one-process start (:func:`gaussian_conjugate_from_gram`) on all of
        them, keeping its own slice: no d x d eigendecomposition (d = 12288 for 64 x 64 images).
        """
        layout = self.layout
        if init in ("zero", "voronoi") or layout.n_total < 2:
            return initial_potential(y, init if layout.n_total >= 2 else "voronoi")
        y64 = y.to(torch.float64)
        mean = y64.sum(dim=0)
        dist.all_reduce(mean, group=self.group)
        centred = y64 - mean / layout.n_total
        if layout.n_total <= y.shape[1]:
            g = gaussian_conjugate_from_gram(layout.gather_rows(centred, self.group))
            return g[layout.offset:layout.offset + layout.n_local]
        cov = centred.T @ centred
        dist.all_reduce(cov, group=self.group)
        return gaussian_conjugate(centred, cov / (layout.n_total - 1))

    def minimum(self, value: float) -> float:
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN, group=self.group)
        return float(t.item())

    def total(self, value: Tensor) -> Tensor:
        # all_gather, then one sum in rank order: the same bits on every rank
        return _all_gather(value.reshape(1), self.group).sum()

    def sum_vector(self, value: Tensor) -> Tensor:
        return _all_gather(value.to(self.device), self.group).sum(dim=0)  # rank order: the same bits everywhere

    def count(self, n_local: int) -> int:
        return self.layout.n_total

    def chi2(self, mass: Tensor, mass_sq: Tensor, n_samples: int, weights: Tensor) -> float:
        # chi2_unbiased + 1 is this shard's sum_j (mass_j^2 - mass_sq_j) / b_j / (B (B - 1))
        part = torch.tensor([chi2_unbiased(mass, mass_sq, n_samples, weights) + 1.0], dtype=torch.float64,
                            device=self.device)
        return float(_all_gather(part, self.group).sum()) - 1.0

    def checkpoint(self, path: str | Path) -> Path:
        return shard_checkpoint(path, self.layout.rank, self.layout.world_size)

    def agree(self, value, what: str):
        t = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        low, high = t.clone(), t.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(high, op=dist.ReduceOp.MAX, group=self.group)
        if int(low) != int(high):
            raise RuntimeError(f"the ranks disagree on {what} (from {int(low)} to {int(high)}): delete the "
                               "checkpoints of every rank to start afresh")
        return value
