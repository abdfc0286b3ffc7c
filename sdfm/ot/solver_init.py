"""Starting potentials of the semi-dual SGD and the target weights b (float64).

:func:`initial_potential` is the conjugate of a simple map from N(0, I) to the data; the
coarse-to-fine start (:meth:`sdfm.ot.solver.SemidiscreteSolver.coarse_to_fine`) builds on
:func:`nearest_centre`. :mod:`sdfm.ot.distributed` computes the Gaussian start of a sharded fit
from all-reduced moments with :func:`gaussian_conjugate`, or, for N <= d, with
:func:`gaussian_conjugate_from_gram` of the gathered centred shards.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores

__all__ = ["gaussian_conjugate", "gaussian_conjugate_from_gram", "initial_potential", "nearest_centre", "squared_norms", "target_weights"]


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
    if y.shape[0] <= y.shape[1]:  # fewer points than dimensions: the N x N Gram matrix is the cheaper route
        return gaussian_conjugate_from_gram(centred)
    cov = centred.T @ centred / (y.shape[0] - 1)
    return gaussian_conjugate(centred, cov)


def gaussian_conjugate_from_gram(centred: Tensor) -> Tensor:
    """:func:`gaussian_conjugate` from the N x N Gram matrix ``C C^T = U diag(s^2) U^T`` (for N <= d).

    The covariance ``S = C^T C / (N - 1)`` has the eigenvalues ``lambda_k = s_k^2 / (N - 1)`` with
    eigenvectors ``v_k = C^T u_k / s_k``, and every point lies in their span: ``c_j . v_k = U_jk s_k``, so

        ``g_j = -1/2 sum_k U_jk^2 s_k^2 max(lambda_k, floor)^(-1/2)``

    with the same floor as the d x d route (its other eigenvalues are 0 and meet no point). One N x N
    eigendecomposition instead of a d x d one: a 64 x 64 x 3 image set of a few hundred points
    otherwise spends minutes in a 12288 x 12288 ``eigh`` on a CPU.
    """
    gram_evals, u = torch.linalg.eigh(centred @ centred.T)
    gram_evals = gram_evals.clamp(min=0.0)
    cov_evals = gram_evals / max(centred.shape[0] - 1, 1)
    floor = 1e-6 * float(cov_evals.max().clamp(min=1e-12))
    return -0.5 * (u.square() * (gram_evals * cov_evals.clamp(min=floor).rsqrt())).sum(dim=1)


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
