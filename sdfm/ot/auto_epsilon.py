"""Adaptive epsilon: the smallest regularisation whose batch coupling reaches a target entropy.

On a seeded reference batch of ``n`` source samples ``x_i`` and ``n`` data points ``y_j``, with
the cost ``C_ij = -<x_i, y_j>`` and ``s = std(C)``, the entropic plan at the relative
regularisation ``eps_rel`` (absolute ``eps = eps_rel * s``, as everywhere in sdfm) is

    P_eps = argmin_{P in U(1/n, 1/n)} <P, C> - eps H(P),   H(P) = -sum_ij P_ij log P_ij.

Every plan with uniform marginals has ``log n <= H(P) <= 2 log n`` (a permutation / n has
``log n``, the independent plan ``1 / n^2`` has ``2 log n``), so the *renormalised entropy*

    H_rel(eps) = (H(P_eps) - log n) / log n  in [0, 1]

is 0 for a deterministic (Monge) pairing and 1 for independent pairing. ``n^H_rel`` is the
perplexity of a row ``P_eps[i, :] n``: the effective number of data points one noise sample is
paired with (at ``n = 1024``: H_rel = 0.1 -> 2 partners, 0.2 -> 4).

``H_rel`` is nondecreasing in eps. For ``e1 < e2`` with plans ``P1``, ``P2`` (entropies ``H1``,
``H2``), the optimality of each plan gives ``<P1, C> - e1 H1 <= <P2, C> - e1 H2`` and
``<P2, C> - e2 H2 <= <P1, C> - e2 H1``; adding the two, ``(e2 - e1)(H1 - H2) <= 0``, so
``H1 <= H2``. The limits are the OT plan (eps -> 0; H_rel -> 0 when it is a permutation, as it is
almost surely for continuous data) and the independent plan (eps -> inf; H_rel -> 1).

Two ways to evaluate ``H_rel`` (``criterion``); both are the conditional entropy of the pairing
over ``log n``, since ``H(P) = log n + H(J | I)`` for a plan with uniform first marginal:

* ``"sinkhorn"``: the plan above, one Sinkhorn solve per evaluation (exact, but slow at small
  eps on low-dimensional data: 10-200 s per solve at n = 1024 in 2-D below eps_rel = 0.01).
* ``"semidiscrete"`` (default): the SD-FM coupling itself on the reference points. The potential
  ``g`` of the unregularised semidiscrete problem from N(0, I) to the n points is fitted once
  (:func:`sdfm.ot.fit_potential`), then
  ``H_rel(eps) = mean_i H(softmax_j((<x_i, y_j> + g_j) / eps)) / log n`` on n fresh source samples.
  It freezes g at its eps = 0 value (``g_eps -> g_0`` as eps -> 0); a Gibbs distribution's
  entropy grows with its temperature (``dH/d eps = Var_p(s) / eps^3 >= 0``), so it is monotone
  too, 0 at eps -> 0 (a.s. unique argmax) and 1 at eps -> inf. Each evaluation is one n x n
  softmax. On the checkerboard (n = 1024) it is within 0.015 of the Sinkhorn value at
  eps_rel = 0.003 ... 0.3 (0.291 vs 0.305, 0.443 vs 0.448, 0.584 vs 0.585, 0.731 vs 0.730).

The rule: ``eps_auto = min {eps_rel : H_rel(eps_rel) >= target}``, found by bisection on
``log eps_rel`` between a bracket that is widened by factors of 10 until it holds the target
(Sinkhorn: POT's solver through :func:`sdfm.ot.batch.sinkhorn_plan`). The chosen ``eps_rel`` is
then used exactly as a hand-picked one: the potential is fitted at ``eps_rel * std(C)``.

The criterion depends on ``n``: at a fixed eps a larger batch has more data points within eps of
each other, so its rows spread over more of them. ``reference_batch`` is part of the rule's
definition, and the semidiscrete coupling over all N points is more diffuse than the batch plan
it was chosen on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from sdfm.ot.batch import inner_product_cost, sinkhorn_plan

__all__ = ["AUTO_EPSILON_DEFAULTS", "AutoEpsilon", "choose_epsilon", "conditional_entropy", "entropy_curve", "relative_entropy_at",
           "renormalised_entropy", "resolve_auto_epsilon"]

Source = Callable[[int, torch.Generator], Tensor]

#: Marginal tolerance of the Sinkhorn solves behind an entropy evaluation.
SINKHORN_TOL = 1e-5


@dataclass
class AutoEpsilon:
    """The outcome of :func:`choose_epsilon`.

    Attributes:
        epsilon_rel: the chosen relative epsilon (the smallest evaluated one with ``H_rel >= target``).
        epsilon_abs: ``epsilon_rel * cost_std`` on the reference batch.
        entropy: ``H_rel`` at ``epsilon_rel``.
        target: the target renormalised entropy.
        cost_std: ``std(C)`` of the reference batch.
        n: the reference batch size.
        curve: every evaluation, ``{"epsilon_rel": [...], "entropy": [...]}`` sorted by epsilon.
    """

    epsilon_rel: float
    epsilon_abs: float
    entropy: float
    target: float
    cost_std: float
    n: int
    curve: dict = field(default_factory=dict)
    criterion: str = "semidiscrete"

    def as_dict(self) -> dict:
        return {"epsilon_rel": self.epsilon_rel, "epsilon_abs": self.epsilon_abs, "entropy": self.entropy,
                "target_entropy": self.target, "cost_std": self.cost_std, "reference_batch": self.n,
                "criterion": self.criterion, "curve": self.curve}


def renormalised_entropy(plan: Tensor) -> float:
    """``(H(P) - log n) / log n`` of an (n, n) plan with uniform marginals (normalised to mass 1 first)."""
    n = plan.shape[0]
    if plan.shape != (n, n) or n < 2:
        raise ValueError(f"expected a square plan of at least 2 x 2, got {tuple(plan.shape)}")
    p = plan.double().clamp_min(0)
    p = p / p.sum()
    entropy = float(-torch.special.xlogy(p, p).sum())
    return (entropy - math.log(n)) / math.log(n)


def relative_entropy_at(cost: Tensor, epsilon_rel: float, cost_std: float | None = None) -> float:
    """``H_rel`` of the entropic plan of the square ``cost`` at ``epsilon_rel * std(cost)``."""
    std = float(cost.std()) if cost_std is None else cost_std
    if epsilon_rel <= 0:
        return 0.0
    return renormalised_entropy(sinkhorn_plan(cost.double(), epsilon_rel * std, tol=SINKHORN_TOL, max_iter=100_000))


def conditional_entropy(scores: Tensor, epsilon: float) -> float:
    """``mean_i H(softmax(scores[i] / eps)) / log n`` for (m, n) scores: the rows' entropy over ``log n``."""
    n = scores.shape[1]
    if epsilon <= 0:
        return 0.0
    logp = torch.log_softmax(scores.double() / epsilon, dim=1)
    return float(-(logp.exp() * logp).sum(dim=1).mean()) / math.log(n)


def entropy_curve(x: Tensor, y: Tensor, criterion: str = "semidiscrete", *, potential_steps: int = 1000,
                  seed: int = 0, source: Source | None = None) -> tuple[Callable[[float], float], float]:
    """``(H_rel, std(C))``: the function ``eps_rel -> H_rel`` of the reference batch and its cost scale.

    Args:
        x: (n, d) source samples; y: (n, d) data points (module docstring).
        criterion: ``"semidiscrete"`` or ``"sinkhorn"``.
        potential_steps, seed, source: the unregularised potential fit of ``"semidiscrete"``
            (SGD steps, its seed, and the source sampler; default N(0, I)).
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"expected two (n, d) batches of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    cost = inner_product_cost(x.double(), y.double())
    std = float(cost.std())
    if criterion == "sinkhorn":
        return (lambda eps_rel: relative_entropy_at(cost, eps_rel, std)), std
    if criterion != "semidiscrete":
        raise ValueError(f"unknown criterion {criterion!r}: use 'semidiscrete' or 'sinkhorn'")
    from sdfm.ot.solver import fit_potential  # the solver imports this package's kernels

    n = x.shape[0]
    potential = fit_potential(y.double(), epsilon=0.0, steps=potential_steps, batch_size=n, seed=seed,
                              eval_every=potential_steps, eval_batch=16 * n, progress=False, source=source)
    scores = -cost + potential.g.double()[None, :]
    return (lambda eps_rel: conditional_entropy(scores, eps_rel * std)), std


def choose_epsilon(
    x: Tensor,
    y: Tensor,
    target: float,
    *,
    criterion: str = "semidiscrete",
    potential_steps: int = 1000,
    seed: int = 0,
    source: Source | None = None,
    lo: float = 0.01,
    hi: float = 1.0,
    rtol: float = 0.02,
    entropy_tol: float = 0.002,
    max_solves: int = 40,
    extra_points: tuple[float, ...] = (),
) -> AutoEpsilon:
    """The smallest relative epsilon whose reference-batch coupling has ``H_rel >= target`` (module docstring).

    Args:
        x: (n, d) source samples of the reference batch.
        y: (n, d) data points of the reference batch.
        target: the renormalised entropy to reach, in (0, 1).
        criterion, potential_steps, seed, source: how ``H_rel`` is evaluated (:func:`entropy_curve`).
        lo, hi: initial bracket of ``epsilon_rel``; it is moved by factors of 10 until
            ``H_rel(lo) < target <= H_rel(hi)``.
        rtol: stop once ``hi / lo <= 1 + rtol``,
        entropy_tol: or once ``|H_rel(hi) - target| <= entropy_tol``.
        max_solves: at most this many evaluations of ``H_rel`` in the search.
        extra_points: relative epsilons also evaluated afterwards, for the recorded curve only.

    Returns:
        :class:`AutoEpsilon`; ``epsilon_rel`` is the upper end of the final bracket.
    """
    if not 0 < target < 1:
        raise ValueError(f"target entropy must lie in (0, 1), got {target}")
    curve_fn, std = entropy_curve(x, y, criterion, potential_steps=potential_steps, seed=seed, source=source)
    seen: dict[float, float] = {}

    def h(eps_rel: float) -> float:
        if eps_rel not in seen:
            if len(seen) >= max_solves:
                raise RuntimeError(f"choose_epsilon: no bracket of the target {target} within {max_solves} evaluations")
            seen[eps_rel] = curve_fn(eps_rel)
        return seen[eps_rel]

    while h(lo) >= target:
        lo, hi = lo / 10, lo
    while h(hi) < target:
        lo, hi = hi, hi * 10
    while hi / lo > 1 + rtol and abs(h(hi) - target) > entropy_tol and len(seen) < max_solves:
        mid = math.sqrt(lo * hi)
        if h(mid) >= target:
            hi = mid
        else:
            lo = mid
    for eps_rel in extra_points:
        seen.setdefault(float(eps_rel), curve_fn(float(eps_rel)))
    eps = sorted(seen)
    curve = {"epsilon_rel": eps, "entropy": [seen[e] for e in eps]}
    return AutoEpsilon(epsilon_rel=hi, epsilon_abs=hi * std, entropy=seen[hi], target=target, cost_std=std,
                       n=x.shape[0], curve=curve, criterion=criterion)


#: Settings of ``methods.sdfm.auto_epsilon`` (the schema holds the same defaults). target_entropy
#: 0.05 is a row perplexity of 1024^0.05 = 1.4 data points: a nearly deterministic pairing.
AUTO_EPSILON_DEFAULTS = {"target_entropy": 0.05, "reference_batch": 1024, "criterion": "semidiscrete",
                         "potential_steps": 1000}
#: Relative epsilons where the recorded entropy curve is also evaluated (semidiscrete: one softmax each).
CURVE_POINTS = tuple(round(10 ** (k / 4), 8) for k in range(-20, 5))


def resolve_auto_epsilon(y: torch.Tensor, settings: dict, seed: int = 0,
                         source: Source | None = None) -> AutoEpsilon:
    """Choose the relative epsilon of data ``y`` (N, d) by :func:`choose_epsilon`, with ``settings``
    (keys of ``AUTO_EPSILON_DEFAULTS``; the others take their defaults).

    The reference batch is ``min(reference_batch, N)`` points of ``y`` and as many source samples,
    drawn from a generator seeded with ``seed`` (as :func:`sdfm.jobs.potential.absolute_epsilon`
    draws its batch); the unregularised potential of the ``semidiscrete`` criterion uses ``seed + 1``.
    """
    unknown = sorted(set(settings) - set(AUTO_EPSILON_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown auto_epsilon setting {unknown[0]!r}; known: {', '.join(AUTO_EPSILON_DEFAULTS)}")
    s = {**AUTO_EPSILON_DEFAULTS, **settings}
    gen = torch.Generator().manual_seed(seed)
    n = min(int(s["reference_batch"]), y.shape[0])
    rows = torch.randperm(y.shape[0], generator=gen)[:n]
    x = source(n, gen).to(y.dtype).cpu() if source is not None else torch.randn(n, y.shape[1], generator=gen)
    return choose_epsilon(x.double(), y[rows].cpu().double(), float(s["target_entropy"]), criterion=s["criterion"],
                          potential_steps=int(s["potential_steps"]), seed=seed + 1, source=source,
                          extra_points=CURVE_POINTS if s["criterion"] == "semidiscrete" else ())
