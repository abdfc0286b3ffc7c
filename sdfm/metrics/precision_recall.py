"""Improved precision and recall (Kynkaanniemi et al. 2019) with k-NN manifold estimates.

The manifold of a feature set ``Phi`` is the union of balls ``B(phi, r_k(phi))`` where
``r_k(phi)`` is the distance from ``phi`` to its k-th nearest neighbour in ``Phi`` (itself
excluded). With ``f(x, Phi) = 1`` iff ``x`` lies in some ball of ``Phi``:

    precision = mean_{fake g} f(g, Phi_real),     recall = mean_{real r} f(r, Phi_fake).

Distances are computed in float64 chunks of rows, so memory stays O(chunk x n).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["precision_recall"]


def _as_feats(feats: np.ndarray | Tensor) -> Tensor:
    feats = torch.as_tensor(np.asarray(feats) if not isinstance(feats, Tensor) else feats.detach())
    if feats.dim() != 2:
        raise ValueError(f"features must be (n, d), got {tuple(feats.shape)}")
    return feats.to("cpu", torch.float64)


def _knn_radii(feats: Tensor, k: int, chunk_size: int) -> Tensor:
    """Distance from each row to its k-th nearest other row (the row itself is neighbour 0)."""
    radii = []
    for start in range(0, len(feats), chunk_size):
        dist = torch.cdist(feats[start : start + chunk_size], feats)
        radii.append(dist.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def _coverage(queries: Tensor, centres: Tensor, radii: Tensor, chunk_size: int) -> float:
    """Fraction of queries inside at least one ball ``B(centres_j, radii_j)``."""
    inside = 0
    for start in range(0, len(queries), chunk_size):
        dist = torch.cdist(queries[start : start + chunk_size], centres)
        inside += int((dist <= radii.unsqueeze(0)).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(
    real_feats: np.ndarray | Tensor, fake_feats: np.ndarray | Tensor, k: int = 3, chunk_size: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall of fake features against real features.

    Args:
        real_feats: (n_real, d) features of real samples (n_real > k).
        fake_feats: (n_fake, d) features of generated samples (n_fake > k).
        k: neighbourhood size of the manifold estimate (3 in the paper).
        chunk_size: rows of a distance block.

    Returns:
        ``(precision, recall)``, each in [0, 1]: precision is the share of fake samples inside the
        real manifold (fidelity), recall the share of real samples inside the fake manifold
        (coverage).
    """
    real, fake = _as_feats(real_feats), _as_feats(fake_feats)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature dimensions differ: {real.shape[1]} vs {fake.shape[1]}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"need more than k={k} samples in each set, got {len(real)} and {len(fake)}")
    real_radii = _knn_radii(real, k, chunk_size)
    fake_radii = _knn_radii(fake, k, chunk_size)
    precision = _coverage(fake, real, real_radii, chunk_size)
    recall = _coverage(real, fake, fake_radii, chunk_size)
    return precision, recall
