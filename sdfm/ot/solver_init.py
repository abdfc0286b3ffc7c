"""Starting potentials of the semi-dual SGD and the target weights b (float64).

:func:`initial_potential` is the conjugate of a simple map from N(0, I) to the data; the
coarse-to-fine start (:meth:`sdfm.ot.solver.SemidiscreteSolver.coarse_to_fine`) builds on
:func:`nearest_centre`. :mod:`sdfm.ot.distributed` computes the Gaussian start of a sharded fit
from all-reduced moments with :func:`gaussian_conjugate`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores

__all__ = ["gaussian_conjugate", "initial_potential", "nearest_centre", "squared_norms", "target_weights"]


def nearest_centre(points: Tensor, centres: Tensor, block_elems: int) -> Tensor:
    """Index of the nearest centre (Euclidean) of each point: a MIPS against ``[c, -|c|^2 / 2]``."""
    keys = augment_keys(centres, -0.5 * centres.to(torch.float64).square().sum(dim=1))
    return reduce_scores(augment_queries(points), keys, 0.0, need_mass=False, block_elems=block_elems).index


def squared_norms(y: Tensor, chunk_rows: int = 1 << 16) -> Tensor:
    """``|y_j|^2`` in float64, a chunk of rows at a time.

    A float64 copy of all of y and its square would hold 4x the float32 data at once (12.6 GB
    at N = 1e6, d = 784: the peak of the whole fit, measured by ``benchmarks/bench_memory.py``).
    """
    return torch.cat([y[start:start + chunk_rows].to(torch.float64).square().sum(dim=1)
                      for start in range(0, y.shape[0], chunk_rows)])


def initial_potential(y: Tensor, init: str) -> Tensor:
    """Starting potential (float64): the conjugate of a simple map from N(0, I) to the data.

    * ``"gaussian"``: the OT map to the Gaussian fit N(m, S) of the data, ``x -> m + S^(1/2) x``,
      whose conjugate potential gives ``g_j = -1/2 (y_j - m)^T S^(-1/2) (y_j - m)``; each cell
      starts where the affine map sends it, at the right scale.
    * ``"voronoi"``: the identity map, ``g_j = -|y_j|^2 / 2`` (nearest-neighbour cells).
    * ``"zero"``: ``g = 0``.
    """
    if init == "zero":
        return torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
    if init == "voronoi" or y.shape[0] < 2:
        return -0.5 * squared_norms(y)
    y64 = y.to(torch.float64)
    centred = y64 - y64.mean(dim=0)
    cov = centred.T @ centred / (y.shape[0] - 1)
    return gaussian_conjugate(centred, cov)


def gaussian_conjugate(centred: Tensor, cov: Tensor) -> Tensor:
    """``g_j = -1/2 c_j^T S^(-1/2) c_j`` for the centred points c (float64) and their covariance S."""
    evals, evecs = torch.linalg.eigh(cov)
    floor = 1e-6 * float(evals.max().clamp(min=1e-12))
    inv_sqrt = (evecs * evals.clamp(min=floor).rsqrt()) @ evecs.T
    return -0.5 * ((centred @ inv_sqrt) * centred).sum(dim=1)


def target_weights(weights: Tensor | None, n: int, device) -> Tensor:
    """The target weights b: uniform, or ``weights`` normalised to sum to one (checked positive and finite)."""
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    b = torch.as_tensor(weights, dtype=torch.float64, device=device)
    if b.shape != (n,) or (b <= 0).any() or not torch.isfinite(b).all():
        raise ValueError(f"weights must be {n} positive finite numbers")
    return b / b.sum()
