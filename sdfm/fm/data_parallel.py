"""Data-parallel training over torch.distributed ranks (torchrun), the collectives of :func:`sdfm.fm.train.train`.

K ranks hold the same model. At each step every rank draws the random numbers of the whole
global batch of B pairs from its generator (noise, data indices, times: a few numbers per pair)
and keeps its own B / K rows (:func:`batch_rows`): it pairs them against the potential and
computes their loss. The gradients are then averaged over the ranks (:func:`average_gradients`,
one all-reduce of the flattened gradients), so the update is that of the mean loss over the B
pairs: the same as one process on the whole batch, up to float summation order. Everything after
it (clipping, Adam, EMA) runs identically on every rank. Without an initialised process group
every function is the identity of a single process.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["average_gradients", "batch_rows", "gather", "is_main", "mean_value", "rank_and_world"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that logs and writes files."""
    return rank_and_world()[0] == 0


def batch_rows(batch_size: int, rank: int, world: int) -> slice | None:
    """Rank's rows ``[r B / K, (r + 1) B / K)`` of a global batch of B (None for one process).

    Raises:
        ValueError: when K does not divide B (the ranks' losses would weigh pairs unequally).
    """
    if world == 1:
        return None
    if batch_size % world:
        raise ValueError(f"train.batch_size {batch_size} must be a multiple of the {world} processes "
                         f"(train.processes): set it to {batch_size // world * world or world}")
    share = batch_size // world
    return slice(rank * share, (rank + 1) * share)


def average_gradients(model: nn.Module) -> None:
    """Replace every gradient by its mean over the ranks (one all-reduce of the flattened gradients)."""
    _, world = rank_and_world()
    if world == 1:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_value(value: Tensor) -> float:
    """The mean of a scalar tensor over the ranks, as a float (the same on every rank)."""
    _, world = rank_and_world()
    if world == 1:
        return float(value.detach())
    total = value.detach().reshape(1).to(torch.float64).clone()
    dist.all_reduce(total)
    return float(total) / world


def gather(obj) -> list:
    """Every rank's ``obj`` in rank order (a list of one without a process group)."""
    _, world = rank_and_world()
    if world == 1:
        return [obj]
    out = [None] * world
    dist.all_gather_object(out, obj)
    return out
