"""Unbiased chi^2 divergence between the second marginal of a coupling and the target weights.

With B i.i.d. source samples and rows ``s_i = pi(x_i)`` of the coupling, ``m_j = E s_ij`` and

    chi^2(m, b) = sum_j (m_j - b_j)^2 / b_j = sum_j m_j^2 / b_j - 1.

``(sum_i s_ij)^2 - sum_i s_ij^2 = sum_{i != k} s_ij s_kj`` has expectation ``B (B - 1) m_j^2``,
so (paper Eq. 3.5)

    chi2_hat = 1 / (B (B - 1)) * sum_j (1 / b_j) [(sum_i s_ij)^2 - sum_i s_ij^2] - 1

is unbiased. It can be slightly negative when the coupling is close to optimal.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["chi2_unbiased", "chi2_plugin"]


def chi2_unbiased(mass: Tensor, mass_sq: Tensor, n_samples: int, weights: Tensor) -> float:
    """Unbiased chi^2 estimate from the column sums of the coupling rows.

    Args:
        mass: (N,) ``sum_i s_ij``.
        mass_sq: (N,) ``sum_i s_ij^2`` (equal to ``mass`` for one-hot rows).
        n_samples: B, the number of source samples (at least 2).
        weights: (N,) target weights b, summing to one.
    """
    if n_samples < 2:
        raise ValueError(f"chi2 needs at least 2 source samples, got {n_samples}")
    mass, mass_sq, weights = (t.to(torch.float64) for t in (mass, mass_sq, weights))
    cross = (mass.square() - mass_sq) / weights
    return float(cross.sum() / (n_samples * (n_samples - 1)) - 1.0)


def chi2_plugin(marginal: Tensor, weights: Tensor) -> float:
    """Plug-in ``sum_j (m_j - b_j)^2 / b_j`` for a known (or exactly computed) marginal."""
    marginal, weights = marginal.to(torch.float64), weights.to(torch.float64)
    return float(((marginal - weights).square() / weights).sum())
