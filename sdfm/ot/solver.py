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
from dataclasses import asdict, replace
from typing import Callable

import torch
from torch import Tensor

from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS, Workspace, augment_keys, augment_queries, reduce_scores
from sdfm.ot.potential import SemidiscretePotential
from sdfm.ot.reducer import Reducer
from sdfm.ot.solver_config import (LOW_DIMENSION, SolverConfig, epsilon_at, eval_batch_for,  # noqa: F401
                                   next_check, resolve_auto)
from sdfm.ot.solver_init import gaussian_conjugate, initial_potential, nearest_centre, squared_norms  # noqa: F401
from sdfm.ot.solver_state import (Evaluation, ascent_step, average, check_resumable, is_diverging, load_checkpoint,
                                  potential_column, save_checkpoint)
from sdfm.progress import Progress

__all__ = ["PotentialDiverged", "Reducer", "SolverConfig", "SemidiscreteSolver", "epsilon_at", "eval_batch_for",
           "fit_potential", "gap_scale", "next_check", "resolve_auto"]


class PotentialDiverged(RuntimeError):
    """The chi^2 of the potential became NaN or infinite."""


def gap_scale(x: Tensor, keys: Tensor, epsilon: float, block_elems: int = DEFAULT_BLOCK_ELEMS, combine=None) -> float:
    """Mean top-1 minus top-2 score margin of the queries ``x``, plus ``epsilon``: the step scale.

    With ``combine`` (see :func:`sdfm.ot.kernel.reduce_scores`) the keys are one shard and the
    margins are those over all shards.
    """
    reduction = reduce_scores(augment_queries(x), keys, 0.0, need_mass=False, need_margin=True, block_elems=block_elems,
                              combine=combine)
    margin = float(reduction.margin.mean()) if reduction.margin is not None else 1.0
    return margin + epsilon


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
        owner = nearest_centre(y, centres, cfg.block_elems)
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
        _check_problem(y, epsilon)
        reducer = reducer if reducer is not None else Reducer()
        device = y.device
        n, d = y.shape
        cfg = self.config = resolve_auto(self.config, d)
        b = reducer.target_weights(weights, n, device)
        log_b = b.log()
        gen = torch.Generator(device=device).manual_seed(seed)
        sample = _sampler(source, gen, y)
        checkpoint = reducer.checkpoint(checkpoint) if checkpoint is not None else None
        if reducer.agree(checkpoint is not None and Path(checkpoint).exists(), "a checkpoint to resume"):
            state = load_checkpoint(checkpoint, gen, device)
            check_resumable(checkpoint, state, cfg, n, epsilon, seed)
            reducer.agree(state["step"], "the step of the checkpoint")
        else:
            state = self._initial_state(y, b, epsilon, seed, source, sample, reducer)
        lr0, scale = state["history"]["lr0"], state["history"]["gap_scale"]
        keys = augment_keys(y, state["g"], epsilon, log_b)
        eps_next = epsilon_at(cfg, state["step"] + 1, epsilon, scale)
        keys[:, d] = potential_column(state["g"], eps_next, log_b).to(keys.dtype)  # as each step writes it
        g, history = state["g"], state["history"]
        bar = Progress(cfg.steps, f"potential eps={epsilon:.3g}", initial=state["step"],
                       enabled=cfg.progress and reducer.is_main)
        step = state["step"]
        workspace = Workspace()  # one score buffer for every step and evaluation of this fit
        done = _stopped(cfg, history)  # a checkpoint written when the fit stopped
        first_batch = cfg.eval_batch or eval_batch_for(reducer.count(n), cfg.chi2_threshold)
        evaluation = Evaluation(sample, y, epsilon, b, log_b, cfg, reducer, workspace, keys, first_batch)
        next_eval = state.get("next_eval") or next_check(cfg, step, first_batch)
        while not done and step < cfg.steps:
            step += 1
            eps_t = eps_next  # this step's regularisation, with which the key column was written
            reduction = reduce_scores(augment_queries(sample(cfg.batch_size)), keys, eps_t, need_mass_sq=False,
                                      block_elems=cfg.block_elems, combine=reducer.combine, workspace=workspace)
            grad = b - reduction.mass / cfg.batch_size
            lr = lr0 * (1.0 + step / cfg.decay_steps) ** (-cfg.decay_power)
            ascent_step(cfg, state, grad, lr, step)
            g -= reducer.total((b * g).sum())  # the semi-dual is invariant to constant shifts; keep <b, g> = 0
            eps_next = epsilon_at(cfg, step + 1, epsilon, scale)
            keys[:, d] = potential_column(g, eps_next, log_b).to(keys.dtype)
            state["g_avg"], state["n_avg"] = average(cfg, g, state["g_avg"], state["n_avg"], step)
            bar.update(1)

            if step >= next_eval or step == cfg.steps:
                done = self._evaluate(evaluation, state, step, {"lr": lr, "epsilon_step": eps_t}, callback, bar)
                next_eval = state["next_eval"]
                if checkpoint is not None:
                    save_checkpoint(checkpoint, state, gen)
        bar.close()
        history["steps_run"] = step
        if cfg.epsilon_schedule != "constant":
            history["epsilon_last_step"] = epsilon_at(cfg, max(step, 1), epsilon, scale)
        history["diverging"] = is_diverging(history["chi2"])
        return SemidiscretePotential(y, state["g_avg"].to(y.dtype), epsilon, b, history, cfg.block_elems)

    def _evaluate(self, evaluation: Evaluation, state: dict, step: int, step_info: dict, callback, bar) -> bool:
        """The chi^2 of the averaged potential at ``step``: recorded in the history, passed to ``callback``
        (with ``step_info``: the step's lr and regularisation), the next evaluation scheduled; True to stop."""
        cfg, history = self.config, state["history"]
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
                            "eval_samples": estimate.n_samples, **step_info})
        done = cfg.chi2_threshold is not None and estimate.upper(cfg.chi2_z) <= cfg.chi2_threshold
        history["stopped_by_threshold"] = done
        state["next_eval"] = next_check(cfg, step, estimate.n_samples)
        state["step"] = step
        return done


def _sampler(source, gen: torch.Generator, y: Tensor) -> Callable[[int], Tensor]:
    """``sample(count)``: source samples on the device and in the dtype of ``y`` (default N(0, I_d)), from ``gen``."""
    def sample(count: int) -> Tensor:
        if source is not None:
            return source(count, gen).to(y.device, y.dtype)
        return torch.randn(count, y.shape[1], generator=gen, device=y.device, dtype=y.dtype)

    return sample


def _stopped(cfg: SolverConfig, history: dict) -> bool:
    """Whether the last recorded evaluation already met the stopping rule (its upper bound under the threshold)."""
    sd_last = history.get("chi2_sd", [0.0])[-1] if history.get("chi2_sd") else 0.0
    return bool(history["chi2"]) and cfg.chi2_threshold is not None and \
        history["chi2"][-1] + cfg.chi2_z * sd_last <= cfg.chi2_threshold


def _check_problem(y: Tensor, epsilon: float) -> None:
    """``epsilon`` finite and >= 0; ``y`` an (N, d) tensor of finite values, N >= 1."""
    if epsilon < 0 or not math.isfinite(epsilon):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon}")
    if y.ndim != 2 or y.shape[0] < 1:
        raise ValueError(f"y must be an (N, d) tensor with N >= 1, got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or inf values")


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
