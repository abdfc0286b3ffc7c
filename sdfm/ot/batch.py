"""Batch OT pairing for OT-FM (Zhang et al. 2025): pair n noise samples with n data samples.

The cost is ``-<x0_i, x1_j>``; it induces the same optimal (and the same entropic) coupling
as ``1/2 |x0_i - x1_j|^2`` because the two differ by terms in i alone and j alone.

* eps = 0: an exact optimal permutation (``scipy.optimize.linear_sum_assignment``).
* eps > 0: the entropic plan of uniform marginals from POT's log-domain Sinkhorn, then one
  draw ``j ~ P[i, :] / P[i, :].sum()`` per row (pairs are not deduplicated: each noise sample
  keeps exactly one partner, as in Zhang et al.).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: Largest (max cost - min cost) / eps for which the kernel-domain Sinkhorn is used.
PLAIN_SINKHORN_MAX_RANGE = 700.0
#: Cost matrices of rank at most this (2-D data), in batches of at least
#: NETWORK_SIMPLEX_MIN_N, go to the network simplex.
SMALL_RANK = 2
NETWORK_SIMPLEX_MIN_N = 512

#: How a relative epsilon is made absolute: the spread of ``-<x, y>`` or of ``|x - y|^2``.
EPSILON_REFERENCES = ("inner_product", "sq_euclidean")

__all__ = ["EPSILON_REFERENCES", "batch_ot_pairing", "check_epsilon_reference", "epsilon_from_std",
           "inner_product_cost", "reference_cost", "reference_cost_std", "relative_epsilon", "sinkhorn_plan"]


def inner_product_cost(x0: Tensor, x1: Tensor) -> Tensor:
    """The (n, m) cost matrix ``C_ij = -<x0_i, x1_j>``."""
    return -(x0 @ x1.T)


def check_epsilon_reference(reference: str) -> None:
    """Raise ``ValueError`` unless ``reference`` is one of :data:`EPSILON_REFERENCES`."""
    if reference not in EPSILON_REFERENCES:
        raise ValueError(f"epsilon_reference must be one of {EPSILON_REFERENCES}, got {reference!r}")


def reference_cost(x0: Tensor, x1: Tensor, reference: str = "inner_product") -> Tensor:
    """The (n, m) reference cost of a relative epsilon: ``-<x0_i, x1_j>`` or ``|x0_i - x1_j|^2`` (clamped at 0)."""
    cost = inner_product_cost(x0, x1)
    if reference == "sq_euclidean":
        cost = (x0.square().sum(dim=1, keepdim=True) + x1.square().sum(dim=1)[None, :] + 2 * cost).clamp_min(0)
    return cost


def reference_cost_std(x0: Tensor, x1: Tensor, reference: str = "inner_product") -> float:
    """The sample std over the n x m entries of the reference cost: ``-<x0_i, x1_j>`` or ``|x0_i - x1_j|^2``."""
    check_epsilon_reference(reference)
    return float(reference_cost(x0, x1, reference).std())


def relative_epsilon(epsilon_rel: float, x0: Tensor, x1: Tensor, reference: str = "inner_product") -> float:
    """The absolute epsilon, in units of the cost ``-<x, y>`` the solvers use, of a relative one.

    * ``inner_product`` (default): ``epsilon_rel * std(-<x0_i, x1_j>)``.
    * ``sq_euclidean`` (OTT-JAX's convention: epsilon relative to the spread of the squared
      Euclidean cost): ``epsilon_rel * std(|x0_i - x1_j|^2) / 2``. Since
      ``|x - y|^2 = |x|^2 + |y|^2 - 2 <x, y>``, the entropic plan of the cost ``|x - y|^2`` at
      ``e`` is the plan of ``-<x, y>`` at ``e / 2`` (the terms of i alone and j alone are absorbed
      by the dual potentials); so this is the plan of ``|x - y|^2`` at ``epsilon_rel * std(|x - y|^2)``.

    For x ~ N(0, sx^2 I_d) and y ~ N(mu, sy^2 I_d) independent (entries over a large batch),
    ``Var <x, y> = sx^2 (d sy^2 + |mu|^2)`` and, the cross covariances vanishing by symmetry of x,
    ``Var |x - y|^2 = 2 d sx^4 + 2 d sy^4 + 4 sy^2 |mu|^2 + 4 sx^2 (d sy^2 + |mu|^2)``: for
    sx = sy = 1, mu = 0 the squared-Euclidean std is 2 sqrt(2) times the inner-product std, so at the
    same ``epsilon_rel`` the ``sq_euclidean`` plan is sqrt(2) times as blurred.
    """
    return epsilon_from_std(epsilon_rel, reference_cost_std(x0, x1, reference), reference)


def epsilon_from_std(epsilon_rel: float, std: float, reference: str = "inner_product") -> float:
    """The absolute epsilon of ``epsilon_rel`` given the std of the reference cost (see :func:`relative_epsilon`)."""
    return float(epsilon_rel * std / (2.0 if reference == "sq_euclidean" else 1.0))


def sinkhorn_plan(cost: Tensor, epsilon: float, *, tol: float = 1e-3, max_iter: int = 10_000) -> Tensor:
    """Entropic OT plan between uniform marginals (POT ``sinkhorn_log``, torch backend)."""
    import ot

    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype, device=cost.device)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype, device=cost.device)
    shifted = cost - cost.min()
    # Plain (kernel-domain) Sinkhorn in float64 is several times faster than the log domain and
    # exact while exp(-C / eps) stays far from underflow (float64 underflows below exp(-745)).
    method = "sinkhorn" if float(shifted.max()) / epsilon < PLAIN_SINKHORN_MAX_RANGE else "sinkhorn_log"
    return ot.sinkhorn(a, b, shifted.double(), epsilon, method=method, stopThr=tol, numItermax=max_iter).to(cost.dtype)


def exact_assignment(cost: np.ndarray) -> np.ndarray:
    """An optimal permutation ``j = pairing[i]`` for a square cost matrix.

    Low-dimensional data gives many near-ties, on which the Jonker-Volgenant solver of
    ``scipy.optimize.linear_sum_assignment`` slows down; POT's network simplex (``ot.emd``) does
    not, and its basic solution on the assignment polytope is a permutation matrix. Both are exact;
    the choice is by measured speed (n = 1024: network simplex 256 ms vs 626 ms at d = 2, even at
    d = 4, LSA faster from d = 8 and at n = 256), made from the numerical rank of a corner of the
    cost (``-<x, y>`` has rank <= d).
    """
    n = cost.shape[0]
    if n >= NETWORK_SIMPLEX_MIN_N and np.linalg.matrix_rank(cost[: 2 * SMALL_RANK + 1, : 2 * SMALL_RANK + 1]) <= SMALL_RANK:
        import ot

        uniform = np.full(n, 1.0 / n)
        plan = ot.emd(uniform, uniform, cost - cost.min(), numItermax=10_000_000)
        pairing = plan.argmax(axis=1)
        if np.array_equal(np.sort(pairing), np.arange(n)):
            return pairing
    from scipy.optimize import linear_sum_assignment  # imported on use: scipy.optimize costs ~0.3 s

    rows, cols = linear_sum_assignment(cost)
    pairing = np.empty_like(cols)
    pairing[rows] = cols
    return pairing


def batch_ot_pairing(
    x0: Tensor,
    x1: Tensor,
    epsilon: float = 0.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Index ``j`` such that ``(x0[i], x1[j[i]])`` are the OT pairs of the batch.

    Args:
        x0: (n, d) source (noise) samples.
        x1: (n, d) target (data) samples.
        epsilon: absolute entropic regularisation in units of the cost; 0 for the exact permutation.
        generator: random generator for the row draws at eps > 0.

    Returns:
        (n,) LongTensor on the device of ``x0``.
    """
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"batch OT needs as many noise as data samples, got {x0.shape[0]} and {x1.shape[0]}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    cost = inner_product_cost(x0.double(), x1.double())
    if epsilon == 0:
        return torch.as_tensor(exact_assignment(cost.cpu().numpy()), dtype=torch.long, device=x0.device)
    plan = sinkhorn_plan(cost, epsilon)
    gen_device = generator.device if generator is not None else plan.device
    return torch.multinomial(plan.to(gen_device), 1, generator=generator).squeeze(1).to(x0.device)
