"""Settings of the semi-dual SGD (:class:`SolverConfig`) and the rules that follow from them alone.

:func:`resolve_auto` (the ``"auto"`` defaults by dimension), :func:`epsilon_at` (the DRAG schedule),
:func:`eval_batch_for` and :func:`next_check` (the chi^2 evaluations' size and cadence). The
measurements behind the defaults are in the docstring of :mod:`sdfm.ot.solver`, which runs the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS

__all__ = ["LOW_DIMENSION", "SolverConfig", "epsilon_at", "eval_batch_for", "next_check", "resolve_auto"]


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :class:`sdfm.ot.solver.SemidiscreteSolver`; the defaults were chosen by measurement.

    Attributes:
        steps: maximum number of SGD steps.
        batch_size: source samples per step (B).
        lr: absolute step on the gradient ``b - m``; ``None`` picks it from the gap scale.
        lr_scale: dimensionless step used when ``lr`` is ``None``.
        decay_power: exponent a of the step decay ``(1 + t / t0)^-a``; 0 keeps it constant.
        decay_steps: t0 of the step decay.
        optimizer: ``"sgd"`` or ``"adam"`` (Adam's lr is then in units of the gap scale).
        momentum: Nesterov momentum of SGD (0 for plain SGD).
        averaging: ``"ema"``, ``"polyak"`` (running mean after ``burn_in`` steps) or ``"none"``.
        ema_decay: decay of the exponential moving average.
        burn_in: fraction of the steps skipped by the Polyak average.
        init: ``"multiscale"`` (coarse-to-fine, see :meth:`sdfm.ot.solver.SemidiscreteSolver.coarse_to_fine`),
            ``"gaussian"``, ``"voronoi"`` or ``"zero"`` (see :func:`sdfm.ot.solver_init.initial_potential`).
        coarsen_factor: ratio of point counts between two levels of the multiscale init.
        coarsest: below this many points the multiscale init starts from ``"gaussian"``.
        eval_every: steps between chi^2 evaluations of the averaged potential; ``None``: the
            cost-aware cadence of :func:`next_check` (``eval_fraction``, ``eval_growth``).
        eval_batch: source samples M of a chi^2 evaluation; ``None``: :func:`eval_batch_for` N.
        eval_batch_max: most samples one evaluation pools (``None``: 16 x the first batch).
        eval_fraction: with the cost-aware cadence, evaluations cost at most about this share
            of the SGD steps between two of them (counted in source samples scored).
        eval_growth: with the cost-aware cadence, check points also grow geometrically by
            this factor (so a long fit makes O(log steps) evaluations).
        chi2_z: the stopping rule's confidence: stop when ``chi2_hat + chi2_z * sd`` (an upper
            confidence bound, :class:`sdfm.ot.chi2.Chi2Estimate`) is at most ``chi2_threshold``.
        chi2_threshold: stop as soon as the upper confidence bound of an evaluation reaches it.
        block_elems: largest score block held in memory.
        progress: show the current chi^2 (a tqdm bar on a terminal, else a line every N s: sdfm.progress).
        epsilon_schedule: ``"constant"`` (every step at the target eps) or ``"drag"``
            (decreasing regularisation, see the docstring of :mod:`sdfm.ot.solver` and :func:`epsilon_at`).
        drag_eps0: DRAG's initial regularisation eps_0, in units of the gap scale delta.
        drag_exponent: DRAG's decay exponent alpha of ``eps_0 / t^alpha``.
        drag_hard_below: towards eps = 0, DRAG switches to hard assignments once
            ``eps_0 / t^alpha`` falls below this many gap scales.
    """

    steps: int = 5000
    batch_size: int = 1024
    lr: float | None = None
    lr_scale: float = 0.05
    decay_power: float = 0.5
    decay_steps: int = 100
    optimizer: str = "sgd"
    momentum: float = 0.9
    averaging: str = "ema"
    ema_decay: float = 0.999
    burn_in: float = 0.5
    init: str = "auto"
    coarsen_factor: int = 8
    coarsest: int = 512
    eval_every: int | None = None
    eval_batch: int | None = None
    eval_batch_max: int | None = None
    eval_fraction: float = 0.1
    eval_growth: float = 1.25
    chi2_z: float = 2.0
    chi2_threshold: float | None = None
    block_elems: int = DEFAULT_BLOCK_ELEMS
    progress: bool = True
    epsilon_schedule: str = "auto"
    drag_eps0: float = 3.0
    drag_exponent: float = 0.5
    drag_hard_below: float = 0.05

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2 or (self.eval_every or 1) < 1:
            raise ValueError("steps, eval_every must be >= 1 and batch_size >= 2")
        if (self.eval_batch or 3) < 3 or (self.eval_batch_max or 3) < 3:
            raise ValueError("eval_batch and eval_batch_max must be >= 3 (or None: sized by N)")
        if not (0 < self.eval_fraction and self.eval_growth >= 1 and self.chi2_z >= 0):
            raise ValueError("eval_fraction must be > 0, eval_growth >= 1 and chi2_z >= 0")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.averaging not in ("ema", "polyak", "none"):
            raise ValueError(f"averaging must be 'ema', 'polyak' or 'none', got {self.averaging!r}")
        if self.init not in ("auto", "multiscale", "gaussian", "voronoi", "zero"):
            raise ValueError(f"init must be 'auto', 'multiscale', 'gaussian', 'voronoi' or 'zero', got {self.init!r}")
        if self.epsilon_schedule not in ("auto", "constant", "drag"):
            raise ValueError(f"epsilon_schedule must be 'auto', 'constant' or 'drag', got {self.epsilon_schedule!r}")
        if not (self.drag_eps0 > 0 and self.drag_exponent > 0 and self.drag_hard_below >= 0):
            raise ValueError("drag_eps0 and drag_exponent must be > 0 and drag_hard_below >= 0")


#: Largest point dimension at which ``"auto"`` picks the low-dimensional defaults (see :mod:`sdfm.ot.solver`).
LOW_DIMENSION = 3


def resolve_auto(cfg: SolverConfig, dim: int) -> SolverConfig:
    """``cfg`` with its ``"auto"`` fields decided for points of dimension ``dim``.

    ``dim <= LOW_DIMENSION``: ``init="multiscale"`` and ``epsilon_schedule="drag"`` with soft steps
    to the end (``drag_hard_below=0``); otherwise ``init="gaussian"``, ``epsilon_schedule="constant"``
    (the measurements behind the rule are in the docstring of :mod:`sdfm.ot.solver`). Explicit values are kept.
    """
    low = dim <= LOW_DIMENSION
    changes = {}
    if cfg.init == "auto":
        changes["init"] = "multiscale" if low else "gaussian"
    if cfg.epsilon_schedule == "auto":
        changes["epsilon_schedule"] = "drag" if low else "constant"
        if low:
            changes["drag_hard_below"] = 0.0
    return replace(cfg, **changes) if changes else cfg


def epsilon_at(cfg: SolverConfig, step: int, epsilon: float, scale: float) -> float:
    """The regularisation of SGD step ``step`` (from 1) towards the target ``epsilon``.

    ``"constant"``: ``epsilon``. ``"drag"``: ``max(epsilon, eps_0 / step^alpha)`` with
    ``eps_0 = drag_eps0 * scale`` (``scale``: the gap scale delta of the fit); towards
    ``epsilon = 0`` it is exactly 0 (hard assignments) once ``eps_0 / step^alpha`` is below
    ``drag_hard_below * scale``.
    """
    if cfg.epsilon_schedule == "constant":
        return epsilon
    decayed = cfg.drag_eps0 / max(step, 1) ** cfg.drag_exponent  # in gap scales
    if epsilon == 0 and decayed < cfg.drag_hard_below:
        return 0.0
    return max(epsilon, decayed * scale)


def eval_batch_for(n_points: int, threshold: float | None = None) -> int:
    """First evaluation batch M for N points: ``8 sqrt(2N) / threshold`` (0.05 when None), a power of
    two in [4096, 65536].

    At the optimum the sd of chi2_hat is sqrt(2 (N - 1)) / M (:mod:`sdfm.ot.chi2`), so this M
    keeps 2 sd under a quarter of the threshold there; larger N grow the batch by pooling
    (up to ``eval_batch_max``) when the estimate is under the threshold but its bound is not.
    """
    wanted = 8.0 * math.sqrt(2.0 * n_points) / (threshold or 0.05)
    return int(min(65536, max(4096, 2 ** math.ceil(math.log2(max(wanted, 1.0))))))


def next_check(cfg: SolverConfig, step: int, eval_samples: int) -> int:
    """The step of the next chi^2 evaluation after one at ``step`` that scored ``eval_samples`` samples.

    Fixed ``eval_every``: the next multiple. Otherwise the cost-aware cadence
    ``step + max(eval_samples / (eval_fraction * batch_size), (eval_growth - 1) * step)``: the
    SGD steps between two evaluations score at least ``1 / eval_fraction`` times the samples of
    the last evaluation (a step and an evaluation cost the same per sample scored), and the
    check points grow geometrically, so a fit of K steps evaluates O(log K) times and stops at
    most a factor ``eval_growth`` (or one spacing) after its chi^2 bound first met the threshold.
    """
    if cfg.eval_every is not None:
        return (step // cfg.eval_every + 1) * cfg.eval_every
    spacing = max(math.ceil(eval_samples / (cfg.eval_fraction * cfg.batch_size)), math.ceil((cfg.eval_growth - 1) * step))
    return step + max(1, spacing)
