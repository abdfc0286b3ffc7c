"""Unbiased chi^2 divergence between the second marginal of a coupling and the target weights.

With B i.i.d. source samples and rows ``s_i = pi(x_i)`` of the coupling, ``m_j = E s_ij`` and

    chi^2(m, b) = sum_j (m_j - b_j)^2 / b_j = sum_j m_j^2 / b_j - 1.

``(sum_i s_ij)^2 - sum_i s_ij^2 = sum_{i != k} s_ij s_kj`` has expectation ``B (B - 1) m_j^2``,
so (paper Eq. 3.5)

    chi2_hat = 1 / (B (B - 1)) * sum_j (1 / b_j) [(sum_i s_ij)^2 - sum_i s_ij^2] - 1

is unbiased. It can be slightly negative when the coupling is close to optimal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Chi2Estimate", "chi2_confidence", "chi2_from_moments", "chi2_moments", "chi2_plugin", "chi2_sd_at_optimum",
           "chi2_unbiased"]


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


# ---------------------------------------------------------------------------------------------
# Standard deviation of chi2_hat, and the upper confidence bound the solver stops on.
#
# chi2_hat + 1 = U = 1 / (M (M - 1)) sum_{i != k} h(x_i, x_k) is a U-statistic of order 2 with
# kernel h(x, x') = sum_j s_j(x) s_j(x') / b_j (s(x) = pi(x), a row of the coupling). Hoeffding:
#
#     Var U = 2 / (M (M - 1)) * [2 (M - 2) zeta_1 + zeta_2],
#     zeta_1 = Var_x h_1(x),  h_1(x) = E_x' h(x, x') = sum_j s_j(x) r_j,  r_j = m_j / b_j,
#     zeta_2 = Var h(X, X').
#
# With E h = A = sum_j m_j^2 / b_j (= 1 + chi^2), Jensen on the convex square (h_1 and h are
# s(x)-weighted means of r_j and of s_j(x') / b_j, and s_j^2 <= s_j) gives
#
#     zeta_1 <= sum_j m_j^3 / b_j^2 - A^2 = Q_3 - A^2,    zeta_2 <= sum_j m_j^2 / b_j^2 - A^2 = Q_2 - A^2,
#
# with equality for one-hot rows (eps = 0): the bound is exact at eps = 0 and conservative at
# eps > 0. Near the optimum (m = b, uniform b = 1 / N): zeta_1 -> 0, zeta_2 -> N - 1, so
# sd(chi2_hat) -> sqrt(2 (N - 1) / (M (M - 1))) ~ sqrt(2 (N - 1)) / M; a little away from it
# zeta_1 ~ chi^2 (r_j = 1 + delta_j: zeta_1 = chi^2 + sum_j b_j delta_j^3 - chi^4), whose term
# 4 chi^2 / M dominates once M > N / (2 chi^2). A, Q_2 and Q_3 are estimated without bias from
# the column sums S_k,j = sum_i s_ij^k of the M rows (distinct-index sums):
#
#     sum_{i != k} s_ij s_kj = S_1^2 - S_2,   sum_{i, k, l distinct} s_ij s_kj s_lj = S_1^3 - 3 S_1 S_2 + 2 S_3.
#
# Pooling: the column sums of several batches of fresh samples scored with the SAME potential
# add up, and the formulas above with the pooled M are those of one batch of M samples; so the
# evaluation batch is grown by pooling until the bound decides (see the solver). The moment sums
# are additive over shards of the points as well (:func:`chi2_moments`).
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chi2Estimate:
    """An unbiased chi^2 estimate, its standard deviation (upper bound at eps > 0) and sample count."""

    value: float
    sd: float
    n_samples: int

    def upper(self, z: float) -> float:
        """The upper confidence bound ``value + z * sd``."""
        return self.value + z * self.sd


def chi2_moments(mass: Tensor, mass_sq: Tensor, mass_cube: Tensor, n_samples: int, weights: Tensor) -> Tensor:
    """(3,) float64 unbiased estimates of ``A = sum m^2 / b``, ``Q_2 = sum m^2 / b^2``, ``Q_3 = sum m^3 / b^2``.

    Each is a sum over the columns j, so shards of the points add their parts.
    """
    m = n_samples
    if m < 2:
        raise ValueError(f"chi2 needs at least 2 source samples, got {m}")
    s1, s2, s3, b = (t.to(torch.float64) for t in (mass, mass_sq, mass_cube, weights))
    pairs = s1.square() - s2
    triples = s1 * (s1.square() - 3.0 * s2) + 2.0 * s3
    return torch.stack([(pairs / b).sum() / (m * (m - 1.0)), (pairs / b.square()).sum() / (m * (m - 1.0)),
                        (triples / b.square()).sum() / (m * (m - 1.0) * (m - 2.0)) if m > 2 else b.new_tensor(math.inf)])


def chi2_from_moments(moments: Tensor, n_samples: int) -> Chi2Estimate:
    """The estimate ``A - 1`` and ``sd = sqrt(2 / (M (M - 1)) [2 (M - 2) zeta_1 + zeta_2])`` (see above)."""
    a, q2, q3 = (float(v) for v in moments)
    m = n_samples
    if m < 3 or not math.isfinite(q3):
        return Chi2Estimate(a - 1.0, math.inf, m)
    zeta1, zeta2 = max(q3 - a * a, 0.0), max(q2 - a * a, 0.0)
    variance = 2.0 / (m * (m - 1.0)) * (2.0 * (m - 2.0) * zeta1 + zeta2)
    return Chi2Estimate(a - 1.0, variance ** 0.5, m)


def chi2_confidence(mass: Tensor, mass_sq: Tensor, mass_cube: Tensor, n_samples: int, weights: Tensor) -> Chi2Estimate:
    """chi^2 estimate with its standard deviation from the column sums of pi, pi^2 and pi^3."""
    return chi2_from_moments(chi2_moments(mass, mass_sq, mass_cube, n_samples, weights), n_samples)


def chi2_sd_at_optimum(n_points: int, n_samples: int) -> float:
    """``sqrt(2 (N - 1) / (M (M - 1)))``: the sd of chi2_hat for uniform weights at m = b, eps = 0."""
    return (2.0 * (n_points - 1) / (n_samples * (n_samples - 1.0))) ** 0.5
