"""The PCA basis of points sharded across processes (torch.distributed), for sharded PCA-cost fits.

A sharded fit of the PCA cost (:mod:`sdfm.ot.pca`) needs one basis P on every rank, each rank
then projecting its own shard of the keys: one (n_r, D) x (D, k) matmul. :func:`fit_pca_sharded`
computes the basis of the whole set from all-reduced moments, without gathering the points.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from sdfm.ot.distributed import ShardLayout
from sdfm.ot.pca import PCABasis, basis_from_covariance, fit_pca

__all__ = ["fit_pca_sharded"]


def fit_pca_sharded(y_shard: Tensor, k: int, process_group=None, chunk: int = 65536) -> PCABasis:
    """:func:`sdfm.ot.pca.fit_pca` of the points of every rank, each holding a contiguous shard; a collective.

    For N > D the moments are all-reduced: the sum of the points (hence the mean m), then each
    shard's scatter ``sum_j (y_j - m)(y_j - m)^T``, accumulated in float64 over row chunks on the
    shard's device; the sum over ranks divided by N - 1 is the covariance of the whole set. Rank 0
    diagonalises it (:func:`sdfm.ot.pca.basis_from_covariance`, float64 on the CPU, as ``fit_pca``)
    and broadcasts the basis, so every rank projects with the same P. For N <= D (few points) the
    shards are all-gathered and every rank runs ``fit_pca`` on all of them. Up to the summation
    order of the moments, the basis is ``fit_pca`` of the concatenated shards.

    Args:
        y_shard: (n_r, D) this rank's points, in rank order (n_r >= 1 on every rank).
        k: the PCA dimension, 1 <= k <= D.
        process_group: the group (default: the world).
    """
    layout = ShardLayout.build(y_shard.shape[0], y_shard.device, process_group)
    n, d = layout.n_total, y_shard.shape[1]
    if not 1 <= k <= d:
        raise ValueError(f"the PCA dimension must be in 1..{d} (the data dimension), got {k}")
    if n <= d:
        return fit_pca(layout.gather_rows(y_shard.to(torch.float64), process_group), k)
    total = torch.zeros(d, dtype=torch.float64, device=y_shard.device)
    for start in range(0, y_shard.shape[0], chunk):
        total += y_shard[start:start + chunk].to(torch.float64).sum(dim=0)
    dist.all_reduce(total, group=process_group)
    mean = total / n
    scatter = torch.zeros(d, d, dtype=torch.float64, device=y_shard.device)
    for start in range(0, y_shard.shape[0], chunk):
        block = y_shard[start:start + chunk].to(torch.float64) - mean
        scatter += block.T @ block
    dist.all_reduce(scatter, group=process_group)
    packed = torch.zeros(k * d + k + 1, dtype=torch.float64, device=y_shard.device)
    if layout.rank == 0:
        basis = basis_from_covariance(scatter / (n - 1), mean, k)
        packed.copy_(torch.cat([basis.components.reshape(-1), basis.explained_variance,
                                torch.tensor([basis.total_variance], dtype=torch.float64)]))
    dist.broadcast(packed, src=0, group=process_group)
    packed = packed.cpu()
    return PCABasis(packed[: k * d].reshape(k, d).contiguous(), mean.cpu(), packed[k * d: k * d + k].clone(),
                    float(packed[-1]))
