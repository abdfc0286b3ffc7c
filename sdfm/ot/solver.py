"""Stochastic ascent on the semidiscrete semi-dual.

The semi-dual ``F_eps(g) = <b, g> + E_x f_eps(x; g)`` is concave in g, and an unbiased
stochastic (super)gradient from B source samples is ``b - (1/B) sum_i pi(x_i)``. The solver
runs SGD (or Adam) on it and returns an averaged iterate (EMA or Polyak), which converges
where the last iterate only oscillates.

Step size. The diagonal curvature of the semi-dual is about ``b_j / delta``, where delta is
the scale of the score gaps at a cell boundary: the mean top-1 minus top-2 score margin at
eps = 0, and eps itself once eps dominates. With ``lr=None`` the solver measures
``delta = mean margin + eps`` on a reference batch at the start and uses the dimensionless
step ``lr = lr_scale * delta / min_j b_j`` (``lr_scale * N * delta`` for uniform weights), so
the same defaults work across N, d and data scale. The step decays as ``(1 + t / t0)^-a``.

Initialisation: ``"auto"`` by default (:func:`resolve_auto`): ``"multiscale"`` (coarse-to-fine,
:meth:`SemidiscreteSolver.coarse_to_fine`) for points of dimension <= 3, ``"gaussian"`` above; the
multiscale start falls back to ``"gaussian"`` below ``coarsest * coarsen_factor / 2`` points, and a
sharded fit starts from ``"gaussian"`` (the multiscale start has no sharded form yet).

Sharding: the step touches the N points only through a few reductions (column masses, the
constant shift ``<b, g>``, ``min_j b_j``, the gap scale, chi^2), which a :class:`Reducer` computes.
The default one holds all N points in this process; :class:`sdfm.ot.distributed.ShardedReducer`
computes the same quantities with collectives when the points are split across processes, so one
loop serves both (see :func:`sdfm.ot.distributed.fit_potential_sharded`).

Defaults (measured on 5,000 checkerboard points, chi^2 after 5,000 steps of B = 1024):
plain SGD with EMA 0.99 0.069; Nesterov momentum 0.9 with lr_scale 0.05 and EMA 0.99 0.051,
with Polyak averaging after 30% 0.027, with EMA 0.999 0.023 (0.046 at 3,000 steps); Adam
0.24-0.56. The last is the default: momentum smooths the slow, low-frequency modes of the
potential, the long EMA averages out the batch noise without a burn-in tied to the budget.

Decreasing regularisation (``epsilon_schedule="drag"``, DRAG: Genans, Godichon-Baggioni, Vialard,
Wintenberger, NeurIPS 2025, as POT's ``solve_semidiscrete(decreasing_reg=True)``). Step t
(from 1) ascends the semi-dual at

    eps_t = max(eps, eps_0 / t^alpha),   eps_0 = drag_eps0 * delta,   alpha = drag_exponent,

with delta the gap scale above, measured at the start (POT: ``max(reg, 0.1 / t^0.5)``, eps_0
absolute). Early steps are smooth (every point near a cell boundary moves mass to all its
neighbours), later ones sharpen towards the target eps. POT never reaches eps = 0 this way; here,
when the target is eps = 0, the steps use hard assignments (eps_t = 0, the MIPS) as soon as
``eps_0 / t^alpha < drag_hard_below * delta``, i.e. for every step
``t > (drag_eps0 / drag_hard_below)^(1 / alpha)`` (3,600 with 3, 0.5, 0.05; never with the default 0). The step
size, the averaging and the chi^2 evaluations are unchanged (the chi^2 is always that of the
target eps): only the coupling of the stochastic gradient changes, and with it the key column
``g + eps_t log b`` of the augmented MIPS, rebuilt for each step's eps_t. See :func:`epsilon_at`.
Measured on the 5,000 checkerboard points (defaults otherwise, eps = 0, chi^2 on 400k samples):
at 5,000 steps 0.0128 against 0.0129 for the constant schedule, but the internal curve is
0.04 / 0.01 at 1,000 / 2,000 steps against 0.107 / 0.048; soft steps cost about 1.3-1.8x a hard
one on CPU (an exponential per score). Staying soft to the end (``drag_hard_below`` small) gave
0.020 at 2,000 steps against 0.049: the soft gradient is less noisy than the hard counts.

Defaults for clustered data (N = 5,000, 5,000 steps of B = 1024, chi^2 on 200k-400k fresh samples;
``benchmarks/bench_solver_defaults.py`` repeats the comparison side by side, to chi^2 <= 0.05).
With the Gaussian start and constant eps = 0 steps, tight clusters never reached chi^2 <= 0.05 in
5,000 steps: eight_gaussians (N = 5,000) ended at 1.08. The gap scale delta, measured once at the
start, is that of the Gaussian start's cells: 0.022 on eight_gaussians against 5e-4 after 1,000
steps (42x; 5x on the checkerboard), so the hard steps' noise floor sits far above the target.
The multiscale start alone gave 0.45, DRAG soft steps to the end alone 0.081, both 0.018 (chi^2
<= 0.05 from about 1,300 steps). On a d = 64 Gaussian (N = 5,000, to chi^2 <= 0.05) the same
settings stopped at the same step (640) but took 2.5x the process time (44 s against 18 s: the
coarse fit and an exponential per score), while on the checkerboard they stopped at chi^2 0.042
after 800 steps. Hence the ``"auto"`` defaults (:func:`resolve_auto`): for points of dimension
<= 3, ``init="multiscale"`` and ``epsilon_schedule="drag"`` with ``drag_hard_below=0`` (at eps = 0
every step stays soft, ``eps_t = 3 delta / sqrt(t)``, 0.04 delta at 5,000 steps; the chi^2
evaluations and the stopping rule are those of the target eps, so the returned potential is
checked on the problem asked); above, the previous ``"gaussian"`` start and ``"constant"``
schedule, bit-identical to before. Explicit values override either.
"""

from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch
from torch import Tensor

from sdfm.io import atomic_torch_save
from sdfm.ot.chi2 import Chi2Estimate, chi2_from_moments, chi2_moments, chi2_unbiased
from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS, Workspace, augment_keys, augment_queries, key_column, reduce_scores
from sdfm.ot.potential import SemidiscretePotential
from sdfm.progress import Progress

__all__ = ["PotentialDiverged", "Reducer", "SolverConfig", "SemidiscreteSolver", "epsilon_at", "eval_batch_for",
           "fit_potential", "gap_scale", "next_check", "resolve_auto"]


class PotentialDiverged(RuntimeError):
    """The chi^2 of the potential became NaN or infinite."""


@dataclass(frozen=True)
class SolverConfig:
    """Settings of :class:`SemidiscreteSolver`; the defaults were chosen by measurement.

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
        init: ``"multiscale"`` (coarse-to-fine, see :meth:`SemidiscreteSolver.coarse_to_fine`),
            ``"gaussian"``, ``"voronoi"`` or ``"zero"`` (see :func:`initial_potential`).
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
            (decreasing regularisation, see the module docstring and :func:`epsilon_at`).
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


#: Largest point dimension at which ``"auto"`` picks the low-dimensional defaults (module docstring).
LOW_DIMENSION = 3


def resolve_auto(cfg: SolverConfig, dim: int) -> SolverConfig:
    """``cfg`` with its ``"auto"`` fields decided for points of dimension ``dim``.

    ``dim <= LOW_DIMENSION``: ``init="multiscale"`` and ``epsilon_schedule="drag"`` with soft steps
    to the end (``drag_hard_below=0``); otherwise ``init="gaussian"``, ``epsilon_schedule="constant"``
    (the measurements behind the rule are in the module docstring). Explicit values are kept.
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


def gap_scale(x: Tensor, keys: Tensor, epsilon: float, block_elems: int = DEFAULT_BLOCK_ELEMS, combine=None) -> float:
    """Mean top-1 minus top-2 score margin of the queries ``x``, plus ``epsilon``: the step scale.

    With ``combine`` (see :func:`sdfm.ot.kernel.reduce_scores`) the keys are one shard and the
    margins are those over all shards.
    """
    reduction = reduce_scores(augment_queries(x), keys, 0.0, need_mass=False, need_margin=True, block_elems=block_elems,
                              combine=combine)
    margin = float(reduction.margin.mean()) if reduction.margin is not None else 1.0
    return margin + epsilon


class Reducer:
    """The solver's view of the whole data set when all N points live in this process.

    Every quantity of an SGD step that involves all N points goes through one of these methods
    (or through ``reduce_scores(..., combine=self.combine)``). Here they are the identity or the
    plain formula; :class:`sdfm.ot.distributed.ShardedReducer` overrides them with collectives
    over a process group, each process holding a contiguous shard of the points.
    """

    #: cross-shard hook of :func:`sdfm.ot.kernel.reduce_scores` (``None``: nothing to combine).
    combine = None
    #: whether this process shows the progress bar.
    is_main = True

    def target_weights(self, weights: Tensor | None, n: int, device) -> Tensor:
        """This process's target weights b, normalised to sum to one over all points."""
        return _target_weights(weights, n, device)

    def initial_potential(self, y: Tensor, init: str) -> Tensor:
        """The starting potential of this process's points (see :func:`initial_potential`)."""
        return initial_potential(y, init)

    def minimum(self, value: float) -> float:
        """The minimum of ``value`` over all processes."""
        return value

    def total(self, value: Tensor) -> Tensor:
        """The sum of the scalar tensor ``value`` over all processes, the same on each."""
        return value

    def chi2(self, mass: Tensor, mass_sq: Tensor, n_samples: int, weights: Tensor) -> float:
        """The chi^2 estimate (:func:`sdfm.ot.chi2.chi2_unbiased`) from this process's columns."""
        return chi2_unbiased(mass, mass_sq, n_samples, weights)

    def chi2_estimate(self, mass: Tensor, mass_sq: Tensor, mass_cube: Tensor, n_samples: int,
                      weights: Tensor) -> Chi2Estimate:
        """The chi^2 estimate with its sd (:func:`sdfm.ot.chi2.chi2_moments`, summed over processes)."""
        return chi2_from_moments(self.sum_vector(chi2_moments(mass, mass_sq, mass_cube, n_samples, weights)),
                                 n_samples)

    def sum_vector(self, value: Tensor) -> Tensor:
        """The elementwise sum of the 1-D tensor ``value`` over all processes, the same on each."""
        return value

    def count(self, n_local: int) -> int:
        """The number of points over all processes."""
        return n_local

    def checkpoint(self, path: str | Path) -> str | Path:
        """This process's checkpoint file, given the solver's ``checkpoint`` argument."""
        return path

    def agree(self, value, what: str):
        """Return ``value``, after checking that every process holds the same one."""
        return value


class SemidiscreteSolver:
    """Fits the potential of N(0, I_d) -> ``sum_j b_j delta_{y_j}`` for the cost -<x, y>.

    Usage: ``SemidiscreteSolver(SolverConfig(...))(y, epsilon=0.0)``.
    """

    def __init__(self, config: SolverConfig | None = None, **overrides) -> None:
        self.config = replace(config or SolverConfig(), **overrides)

    def coarse_to_fine(self, y: Tensor, b: Tensor, epsilon: float, seed: int, source=None) -> Tensor:
        """Starting potential from a fit on a subsample, extended to every point to first order.

        A random ``1 / coarsen_factor`` subsample c (weights: the target mass of the points
        nearest to each) is fitted first, recursively, with half the steps. With ``xbar_c`` the
        barycentre of the source mass of cell c (the gradient of the conjugate potential at
        y_c), each point j whose nearest subsample point is c gets

            g_j = g_c + <xbar_c, y_c - y_j>,

        so the points of a coarse cell tie at its barycentre and split the cell linearly. The
        slow, large-scale part of the potential (mass moved across clusters) is settled on the
        cheap coarse problem, leaving the fine level only local corrections.
        """
        cfg = self.config
        n, d = y.shape
        if n < cfg.coarsest * cfg.coarsen_factor // 2:
            return initial_potential(y, "gaussian")
        gen = torch.Generator().manual_seed(seed + 1_000_003)
        coarse_idx = torch.randperm(n, generator=gen)[: max(cfg.coarsest // 2, n // cfg.coarsen_factor)].to(y.device)
        centres = y[coarse_idx]
        owner = _nearest(y, centres, cfg.block_elems)
        coarse_b = torch.zeros(len(coarse_idx), dtype=torch.float64, device=y.device).index_add_(0, owner, b)
        coarse_b = coarse_b.clamp(min=float(b.min()) * 1e-3)
        coarse = SemidiscreteSolver(cfg, steps=max(cfg.steps // 2, cfg.eval_every or 1), chi2_threshold=None,
                                    progress=False)(centres, epsilon=epsilon, weights=coarse_b, seed=seed + 1,
                                                    source=source)
        sums = torch.zeros(len(coarse_idx), d, dtype=torch.float64, device=y.device)
        counts = torch.zeros(len(coarse_idx), dtype=torch.float64, device=y.device)
        remaining = max(64 * len(coarse_idx), 65536)
        while remaining > 0:  # stream the source samples: memory stays O(chunk * d)
            count = min(remaining, 16384)
            remaining -= count
            x = source(count, gen) if source is not None else torch.randn(count, d, generator=gen, dtype=y.dtype)
            x = x.to(y.device, y.dtype)
            cell = coarse.assign(x)
            sums.index_add_(0, cell, x.to(torch.float64))
            counts += torch.bincount(cell, minlength=len(coarse_idx)).to(torch.float64)
        xbar = sums / counts.clamp(min=1)[:, None]
        g_c = coarse.g.to(torch.float64)
        return g_c[owner] + ((xbar[owner]) * (centres[owner] - y).to(torch.float64)).sum(dim=1)

    def _initial_state(self, y: Tensor, b: Tensor, epsilon: float, seed: int, source, sample,
                       reducer: Reducer) -> dict:
        """The state at step 0: the initial potential, the step size from its gap scale, no history."""
        cfg = self.config
        if cfg.init == "multiscale":
            g = self.coarse_to_fine(y, b, epsilon, seed, source)
        else:
            g = reducer.initial_potential(y, cfg.init)
        scale = gap_scale(sample(min(cfg.eval_batch or 8192, 8192)), augment_keys(y, g, epsilon, b.log()), epsilon,
                          cfg.block_elems, reducer.combine)
        lr0 = cfg.lr if cfg.lr is not None else cfg.lr_scale * scale / reducer.minimum(float(b.min()))
        if cfg.optimizer == "adam":
            lr0 = cfg.lr if cfg.lr is not None else cfg.lr_scale * scale
        state = {"step": 0, "g": g, "velocity": torch.zeros_like(g), "g_avg": g.clone(), "n_avg": 0,
                 "history": {"step": [], "chi2": [], "lr0": lr0, "gap_scale": scale, "config": asdict(cfg),
                             "epsilon": epsilon, "seed": seed}}
        if cfg.optimizer == "adam":
            state.update(adam_m=torch.zeros_like(g), adam_v=torch.zeros_like(g))
        return state

    def __call__(
        self,
        y: Tensor,
        *,
        epsilon: float = 0.0,
        weights: Tensor | None = None,
        seed: int = 0,
        callback: Callable[[int, dict], None] | None = None,
        checkpoint: str | Path | None = None,
        source: Callable[[int, torch.Generator], Tensor] | None = None,
        reducer: Reducer | None = None,
    ) -> SemidiscretePotential:
        """Fit and return the averaged potential.

        ``source(count, generator)`` draws source samples of dimension d (default N(0, I_d));
        a class-conditional fit draws ``[x, sqrt(beta) e_z]`` with z from the label
        distribution (see :func:`sdfm.fm.couplings.augment_with_labels`).

        With ``checkpoint``, the solver state (iterate, average, momentum, random generator,
        curve) is written there atomically after every evaluation, and a run started with an
        existing checkpoint resumes from it: the result equals that of an uninterrupted run.

        ``reducer`` says where the N points live (default: all in this process, ``y`` is the data
        set); with :class:`sdfm.ot.distributed.ShardedReducer`, ``y`` and ``weights`` are this
        process's shard and the returned potential covers that shard.
        """
        cfg = self.config
        if epsilon < 0 or not math.isfinite(epsilon):
            raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
        if y.ndim != 2 or y.shape[0] < 1:
            raise ValueError(f"y must be an (N, d) tensor with N >= 1, got shape {tuple(y.shape)}")
        if not torch.isfinite(y).all():
            raise ValueError("y contains NaN or inf values")
        reducer = reducer if reducer is not None else Reducer()
        device = y.device
        n, d = y.shape
        cfg = self.config = resolve_auto(cfg, d)
        b = reducer.target_weights(weights, n, device)
        log_b = b.log()
        gen = torch.Generator(device=device).manual_seed(seed)

        def sample(count: int) -> Tensor:
            if source is not None:
                return source(count, gen).to(device, y.dtype)
            return torch.randn(count, d, generator=gen, device=device, dtype=y.dtype)

        checkpoint = reducer.checkpoint(checkpoint) if checkpoint is not None else None
        if reducer.agree(checkpoint is not None and Path(checkpoint).exists(), "a checkpoint to resume"):
            state = _load_checkpoint(checkpoint, gen, device)
            _check_resumable(checkpoint, state, cfg, n, epsilon, seed)
            reducer.agree(state["step"], "the step of the checkpoint")
        else:
            state = self._initial_state(y, b, epsilon, seed, source, sample, reducer)
        lr0, scale = state["history"]["lr0"], state["history"]["gap_scale"]
        keys = augment_keys(y, state["g"], epsilon, log_b)
        eps_next = epsilon_at(cfg, state["step"] + 1, epsilon, scale)
        keys[:, d] = _key_column(state["g"], eps_next, log_b).to(keys.dtype)  # as each step writes it
        g, history = state["g"], state["history"]
        bar = Progress(cfg.steps, f"potential eps={epsilon:.3g}", initial=state["step"],
                       enabled=cfg.progress and reducer.is_main)
        step = state["step"]
        workspace = Workspace()  # one score buffer for every step and evaluation of this fit
        sd_last = history.get("chi2_sd", [0.0])[-1] if history.get("chi2_sd") else 0.0
        done = bool(history["chi2"]) and cfg.chi2_threshold is not None and \
            history["chi2"][-1] + cfg.chi2_z * sd_last <= cfg.chi2_threshold
        first_batch = cfg.eval_batch or eval_batch_for(reducer.count(n), cfg.chi2_threshold)
        evaluation = _Evaluation(sample, y, epsilon, b, log_b, cfg, reducer, workspace, keys, first_batch)
        next_eval = state.get("next_eval") or next_check(cfg, step, first_batch)
        while not done and step < cfg.steps:
            step += 1
            eps_t = eps_next  # this step's regularisation, with which the key column was written
            reduction = reduce_scores(
                augment_queries(sample(cfg.batch_size)), keys, eps_t, need_mass_sq=False, block_elems=cfg.block_elems,
                combine=reducer.combine, workspace=workspace,
            )
            grad = b - reduction.mass / cfg.batch_size
            lr = lr0 * (1.0 + step / cfg.decay_steps) ** (-cfg.decay_power)
            _ascent_step(cfg, state, grad, lr, step)
            g -= reducer.total((b * g).sum())  # the semi-dual is invariant to constant shifts; keep <b, g> = 0
            eps_next = epsilon_at(cfg, step + 1, epsilon, scale)
            keys[:, d] = _key_column(g, eps_next, log_b).to(keys.dtype)
            state["g_avg"], state["n_avg"] = _average(cfg, g, state["g_avg"], state["n_avg"], step)
            bar.update(1)

            if step >= next_eval or step == cfg.steps:
                estimate = evaluation(state["g_avg"])
                chi2 = estimate.value
                if not math.isfinite(chi2):
                    raise PotentialDiverged(f"chi^2 of the potential became {chi2} at step {step}: lower lr_scale")
                for name, value in (("step", step), ("chi2", chi2), ("chi2_sd", estimate.sd),
                                    ("eval_samples", estimate.n_samples)):
                    history.setdefault(name, []).append(value)
                bar.set_postfix(chi2=f"{chi2:.4f}", sd=f"{estimate.sd:.2g}")
                if callback is not None:
                    callback(step, {"chi2": chi2, "chi2_sd": estimate.sd, "chi2_upper": estimate.upper(cfg.chi2_z),
                                    "eval_samples": estimate.n_samples, "lr": lr, "epsilon_step": eps_t})
                done = cfg.chi2_threshold is not None and estimate.upper(cfg.chi2_z) <= cfg.chi2_threshold
                history["stopped_by_threshold"] = done
                next_eval = state["next_eval"] = next_check(cfg, step, estimate.n_samples)
                state["step"] = step
                if checkpoint is not None:
                    _save_checkpoint(checkpoint, state, gen)
        bar.close()
        history["steps_run"] = step
        if cfg.epsilon_schedule != "constant":
            history["epsilon_last_step"] = epsilon_at(cfg, max(step, 1), epsilon, scale)
        history["diverging"] = _is_diverging(history["chi2"])
        return SemidiscretePotential(y, state["g_avg"].to(y.dtype), epsilon, b, history, cfg.block_elems)


def _nearest(points: Tensor, centres: Tensor, block_elems: int) -> Tensor:
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


def _ascent_step(cfg: SolverConfig, state: dict, grad: Tensor, lr: float, step: int) -> None:
    """One ascent step on g in place: plain or Nesterov SGD, or Adam."""
    g = state["g"]
    if cfg.optimizer == "adam":
        state["adam_m"].mul_(0.9).add_(grad, alpha=0.1)
        state["adam_v"].mul_(0.999).addcmul_(grad, grad, value=0.001)
        m_hat = state["adam_m"] / (1 - 0.9**step)
        v_hat = state["adam_v"] / (1 - 0.999**step)
        g += lr * m_hat / (v_hat.sqrt() + 1e-12)
    elif cfg.momentum > 0:
        state["velocity"].mul_(cfg.momentum).add_(grad)
        g += lr * (grad + cfg.momentum * state["velocity"])
    else:
        g += lr * grad


def _key_column(g: Tensor, epsilon: float, log_b: Tensor) -> Tensor:
    """The potential column of the augmented keys: ``g + eps log b`` (``g`` at eps = 0)."""
    return g + epsilon * log_b if epsilon > 0 else g


def _is_diverging(curve: list[float]) -> bool:
    """True when the last chi^2 is more than twice the best one seen (and above 0.05)."""
    return bool(curve) and curve[-1] > max(2 * min(curve), 0.05)


def _save_checkpoint(path, state: dict, gen: torch.Generator) -> None:
    atomic_torch_save({**{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in state.items()},
                       "generator": gen.get_state()}, path)


def _load_checkpoint(path, gen: torch.Generator, device) -> dict:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    gen.set_state(saved.pop("generator"))
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in saved.items()}


#: Solver settings that may change between a checkpoint and its resumption (they do not alter the path).
_RESUMABLE_CHANGES = ("steps", "progress", "chi2_threshold")


def _check_resumable(path, state: dict, cfg: SolverConfig, n: int, epsilon: float, seed: int) -> None:
    """Refuse a checkpoint written by another problem or other settings: its resumption would not
    be the run asked for."""
    saved = state["history"].get("config", {})
    wanted, defaults = asdict(cfg), asdict(SolverConfig())
    # a key missing from an older checkpoint had its (then only) default value
    changed = [k for k in wanted if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != wanted[k]]
    problem = state["g"].shape[0] != n or state["history"].get("epsilon", epsilon) != epsilon
    problem = problem or state["history"].get("seed", seed) != seed
    if changed or problem:
        what = f"settings {', '.join(changed)}" if changed else "data, epsilon or seed"
        raise ValueError(f"checkpoint {path} was written with other {what}: delete it to start afresh")


def _target_weights(weights: Tensor | None, n: int, device) -> Tensor:
    if weights is None:
        return torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
    b = torch.as_tensor(weights, dtype=torch.float64, device=device)
    if b.shape != (n,) or (b <= 0).any() or not torch.isfinite(b).all():
        raise ValueError(f"weights must be {n} positive finite numbers")
    return b / b.sum()


def _average(cfg: SolverConfig, g: Tensor, g_avg: Tensor, n_avg: int, step: int):
    if cfg.averaging == "none":
        return g.clone(), 0
    if cfg.averaging == "ema":
        decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))  # bias-free warm start
        return g_avg.mul_(decay).add_(g, alpha=1 - decay), 0
    if step <= cfg.burn_in * cfg.steps:
        return g.clone(), 0
    n_avg += 1
    return g_avg.add_(g - g_avg, alpha=1.0 / n_avg), n_avg


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


#: Source samples drawn at once by an evaluation (the rest is pooled chunk by chunk).
EVAL_CHUNK_ELEMS = 1 << 26


class _Evaluation:
    """The chi^2 estimate of the averaged potential, pooled over fresh batches until the bound decides.

    One call scores ``first_batch`` fresh samples; with a threshold, while the estimate is under
    it but its upper bound is not (and halving the sd could bring the bound under it), another
    batch of as many samples as already pooled is scored with the same potential and the column
    sums are added (M doubles), up to ``eval_batch_max``. ``keys``: the fit's own ``[y, .]``
    buffer; its last column is swapped for that of the evaluated potential and restored after,
    instead of a second N x (d + 1) copy.
    """

    def __init__(self, sample, y, epsilon, b, log_b, cfg: SolverConfig, reducer: Reducer, workspace, keys,
                 first_batch: int) -> None:
        self.sample, self.y, self.epsilon, self.b, self.log_b = sample, y, epsilon, b, log_b
        self.cfg, self.reducer, self.workspace, self.keys, self.first_batch = cfg, reducer, workspace, keys, first_batch
        self.most = max(first_batch, cfg.eval_batch_max or 16 * first_batch)
        self.chunk = max(1024, EVAL_CHUNK_ELEMS // max(1, y.shape[1]))

    def _score(self, count: int, sums: list) -> None:
        for start in range(0, count, self.chunk):
            x = self.sample(min(self.chunk, count - start))
            red = reduce_scores(augment_queries(x), self.keys, self.epsilon, block_elems=self.cfg.block_elems,
                                combine=self.reducer.combine, workspace=self.workspace, need_mass_cube=True)
            for total, part in zip(sums, (red.mass, red.mass_sq, red.mass_cube)):
                total += part

    def __call__(self, g: Tensor) -> Chi2Estimate:
        cfg, keys = self.cfg, self.keys
        saved = keys[:, -1].clone()
        keys[:, -1] = key_column(g, keys.dtype, self.epsilon, self.log_b)
        sums = [torch.zeros(self.y.shape[0], dtype=torch.float64, device=self.y.device) for _ in range(3)]
        pooled, count = 0, self.first_batch
        try:
            while True:
                self._score(count, sums)
                pooled += count
                estimate = self.reducer.chi2_estimate(*sums, pooled, self.b)
                threshold = cfg.chi2_threshold
                if (threshold is None or estimate.upper(cfg.chi2_z) <= threshold or 2 * pooled > self.most
                        or estimate.value + cfg.chi2_z * estimate.sd / 2 > threshold):
                    return estimate
                count = pooled
        finally:
            keys[:, -1] = saved


def fit_potential(
    y: Tensor,
    *,
    epsilon: float = 0.0,
    steps: int = SolverConfig.steps,
    batch_size: int = SolverConfig.batch_size,
    lr: float | None = None,
    weights: Tensor | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    chi2_threshold: float | None = None,
    callback: Callable[[int, dict], None] | None = None,
    checkpoint: str | Path | None = None,
    source: Callable[[int, torch.Generator], Tensor] | None = None,
    **options,
) -> SemidiscretePotential:
    """Fit the semidiscrete dual potential from N(0, I_d) to the points ``y``.

    Args:
        y: (N, d) target points.
        epsilon: absolute entropic regularisation in units of the cost -<x, y> (0: unregularised).
        steps: maximum number of SGD steps.
        batch_size: source samples per step.
        lr: SGD step on the gradient ``b - m``; ``None`` chooses it from the measured gap scale.
        weights: (N,) target weights, uniform by default.
        seed: seed of the source samples.
        device: where to compute (default: where ``y`` lives).
        chi2_threshold: stop once the chi^2 estimate of the averaged potential reaches it.
        callback: called as ``callback(step, {"chi2": ..., "lr": ..., "epsilon_step": ...})`` at every
            evaluation (``epsilon_step``: the regularisation of that step's gradient, see :func:`epsilon_at`).
        checkpoint: file to checkpoint to and resume from (see :meth:`SemidiscreteSolver.__call__`).
        source: ``source(count, generator) -> (count, d)`` samples of the source (default N(0, I_d)).
        **options: any other :class:`SolverConfig` field.

    Returns:
        The :class:`SemidiscretePotential` (averaged iterate) with its chi^2 curve in ``history``.
    """
    y = torch.as_tensor(y)
    if not y.is_floating_point():
        y = y.float()
    if device is not None:
        y = y.to(device)
    solver = SemidiscreteSolver(
        SolverConfig(steps=steps, batch_size=batch_size, lr=lr, chi2_threshold=chi2_threshold, **options)
    )
    return solver(y, epsilon=epsilon, weights=weights, seed=seed, callback=callback, checkpoint=checkpoint,
                  source=source)
