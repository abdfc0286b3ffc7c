"""Job ``convergence-study``: chi^2 of the fitted potential after K SGD steps, and its rate in K.

For one data set, each setting (N points, batch size B, relative epsilon, solver settings) and
seed, the potential of the first N points of a fixed permutation of the training set is fitted
by :func:`sdfm.ot.fit_potential`, and the unbiased chi^2 of its averaged iterate
(:mod:`sdfm.ot.chi2`, M source samples) is recorded at log-spaced step counts
``K_1 < ... < K_max``. One fit runs through all of them: it is stopped at ``K_i`` (the solver
evaluates chi^2 at its last step), checkpointed, and resumed up to ``K_{i+1}``; the solver treats
``steps`` as a setting a resumption may change, and with the averages used here (EMA, or a
Polyak mean from step 1) the iterates do not depend on it, so the K_i are points of one run.

The rate: over the window of K where the curve is measured (``K >= fit_from`` and the seed-mean
chi^2 above ``floor_factor`` times the noise floor), least squares

    log chi^2 = a + b log K

per seed; b is the mean of the per-seed slopes, with a Student-t 95% interval over seeds (with
one seed: the regression's standard error). The rate quoted for SGD on the semi-dual is
chi^2 ~ K^(-1/2) up to constants, for plain SGD with steps decaying like t^(-1/2) and the
average of the iterates: the ``theory`` solver settings below. The project's defaults
(Nesterov momentum, EMA 0.999) are measured beside them.

Noise floor. At the optimum (m = b, uniform b) and hard assignments, the estimate is a
degenerate U-statistic of M samples with kernel ``h(x, x') = N 1[same cell] - 1``, mean 0 and
variance N - 1, so its standard deviation is

    sd_0 = sqrt(2 (N - 1) / (M (M - 1))),

about sqrt(2N) / M; soft assignments (eps > 0) give a smaller one. Points below
``floor_factor * sd_0`` are left out of the fit (they are noise).
"""

from __future__ import annotations

import math
import tempfile
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from sdfm.data import load_prepared
from sdfm.errors import ConfigError
from sdfm.io import atomic_path
from sdfm.ot import fit_potential
from sdfm.ot.problem import absolute_epsilon
from sdfm.runtime import pick_device

__all__ = ["STUDY_DEFAULTS", "THEORY_SOLVER", "chi2_noise_floor", "convergence_study", "fit_exponent",
           "fit_exponents", "log_spaced_steps", "study_settings"]

#: The solver settings the K^(-1/2) rate refers to: plain SGD, steps lr0 (1 + t / t0)^(-1/2), the
#: uniform average of all iterates (Polyak, from step 1). lr_scale 0.5 is the effective step
#: lr_scale / (1 - momentum) of the project's defaults (0.05, Nesterov 0.9).
THEORY_SOLVER = {"optimizer": "sgd", "momentum": 0.0, "averaging": "polyak", "lr_scale": 0.5, "decay_power": 0.5}

#: Settings of the study unless its config entry says otherwise.
STUDY_DEFAULTS = {"n_points": [1000, 4000], "batch_sizes": [256], "epsilons": [0.0], "centre": None,
                  "steps": 1024, "first_eval": 16, "eval_points": 7, "eval_batch": 16384, "seeds": [0, 1, 2],
                  "fit_from": 64, "floor_factor": 5.0, "reference_batch": 4096,
                  "solvers": {"theory": THEORY_SOLVER, "default": {}}}

#: Solver settings a study may vary (steps, batch size, evaluations and averaging burn-in are the study's).
SOLVER_KEYS = ("optimizer", "momentum", "averaging", "lr_scale", "decay_power", "decay_steps", "ema_decay", "init",
               "epsilon_schedule")


def log_spaced_steps(first: int, last: int, count: int) -> list[int]:
    """``count`` step counts from ``first`` to ``last`` spaced evenly in log K (fewer if they round together)."""
    if not 1 <= first <= last or count < 1:
        raise ValueError(f"need 1 <= first <= last and count >= 1, got {first}, {last}, {count}")
    if count == 1:
        return [last]
    return sorted({int(round(k)) for k in np.geomspace(first, last, count)})


def chi2_noise_floor(n_points: int, eval_batch: int) -> float:
    """Standard deviation of the unbiased chi^2 estimate at the optimum, hard assignments, uniform b."""
    return math.sqrt(2.0 * (n_points - 1) / (eval_batch * (eval_batch - 1)))


def study_settings(settings: dict) -> list[tuple[int, int]]:
    """The (N, B) pairs measured: the full grid, or with ``centre`` each list varied around it."""
    grid = list(product(settings["n_points"], settings["batch_sizes"]))
    centre = settings.get("centre")
    if not centre:
        return grid
    n0, b0 = centre["n_points"], centre["batch_size"]
    return [(n, b) for n, b in grid if n == n0 or b == b0]


def _curve(y, eps_abs, batch_size, seed, ks, settings, solver, device, workdir) -> list[tuple[int, float, float]]:
    """(K, chi^2 at K, seconds up to K) for each K of ``ks``, all from one fit (stop, checkpoint, resume)."""
    checkpoint = Path(workdir) / f"fit-{batch_size}-{seed}.ckpt"
    checkpoint.unlink(missing_ok=True)
    rows, seconds = [], 0.0
    for k in ks:
        start = time.perf_counter()
        potential = fit_potential(y, epsilon=eps_abs, steps=k, batch_size=batch_size, seed=seed, device=device,
                                  eval_every=ks[-1], eval_batch=settings["eval_batch"], burn_in=0.0,
                                  checkpoint=checkpoint, progress=False, **solver)
        seconds += time.perf_counter() - start
        assert potential.history["step"][-1] == k
        rows.append((k, float(potential.history["chi2"][-1]), seconds))
    checkpoint.unlink(missing_ok=True)
    return rows


def convergence_study(data_path: str | Path, name: str, settings: dict, out: str | Path, device: str | None = None,
                      progress: bool = True) -> pd.DataFrame:
    """Measure chi^2 at log-spaced K for every setting and seed; write the tidy CSV ``out``.

    Columns: dataset, solver, n_points, batch_size, epsilon (relative), epsilon_abs, seed, step (K),
    chi2, seconds (wall time of the fit up to K, its evaluations included), eval_batch, chi2_floor.
    """
    settings = {**STUDY_DEFAULTS, **settings}
    data = load_prepared(data_path)
    y_all = data.flat_train()
    if max(settings["n_points"]) > y_all.shape[0]:
        raise ConfigError(f"config key 'studies.convergence.n_points': {max(settings['n_points'])} exceeds the "
                          f"{y_all.shape[0]} training points of '{name}'; use smaller N or a larger data set")
    order = torch.randperm(y_all.shape[0], generator=torch.Generator().manual_seed(0))  # nested subsamples
    ks = log_spaced_steps(settings["first_eval"], settings["steps"], settings["eval_points"])
    unknown = sorted({k for s in settings["solvers"].values() for k in s} - set(SOLVER_KEYS))
    if unknown:
        raise ConfigError(f"config key 'studies.convergence.solvers': '{unknown[0]}' cannot be varied; "
                          f"use {', '.join(SOLVER_KEYS)}")
    device = pick_device(device)
    jobs = list(product(study_settings(settings), settings["epsilons"], settings["solvers"].items(),
                        settings["seeds"]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdfm-convergence-") as workdir:
        for (n, batch), eps_rel, (solver_name, solver), seed in tqdm(jobs, desc="convergence", disable=not progress):
            y = y_all[order[:n]].to(device)
            eps_abs = absolute_epsilon(eps_rel, y.cpu(), settings["reference_batch"])
            floor = chi2_noise_floor(n, settings["eval_batch"])
            for k, chi2, seconds in _curve(y, eps_abs, batch, seed, ks, settings, solver, device, workdir):
                rows.append({"dataset": name, "solver": solver_name, "n_points": n, "batch_size": batch,
                             "epsilon": float(eps_rel), "epsilon_abs": eps_abs, "seed": seed, "step": k, "chi2": chi2,
                             "seconds": seconds, "eval_batch": settings["eval_batch"], "chi2_floor": floor})
    table = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table


def fit_exponent(steps, chi2, seeds=None) -> dict:
    """Fit ``log chi2 = a + b log K``; return b, its 95% interval, a, and what the fit used.

    With ``seeds`` (one label per point) each seed gets its own least-squares line and b is the mean
    of their slopes, with a Student-t interval over seeds (their spread is the run-to-run noise; the
    points of one run are correlated, so a pooled regression would understate it). With one seed the
    interval comes from the regression's standard error. Points with chi2 <= 0 are dropped.
    """
    from scipy import stats

    frame = pd.DataFrame({"k": np.asarray(steps, float), "chi2": np.asarray(chi2, float),
                          "seed": np.zeros(len(steps)) if seeds is None else np.asarray(seeds)})
    frame = frame[frame.chi2 > 0]
    slopes, intercepts, ses = [], [], []
    for _, part in frame.groupby("seed"):
        if part.k.nunique() < 2:
            continue
        fit = stats.linregress(np.log(part.k), np.log(part.chi2))
        slopes.append(fit.slope)
        intercepts.append(fit.intercept)
        ses.append(fit.stderr if len(part) > 2 else float("nan"))
    if not slopes:
        return {"b": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "a": float("nan"), "se": float("nan"),
                "n_seeds": 0, "n_obs": int(len(frame))}
    b = float(np.mean(slopes))
    if len(slopes) > 1:
        se = float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)))
        half = float(stats.t.ppf(0.975, len(slopes) - 1)) * se
    else:
        se = float(ses[0])
        half = float(stats.t.ppf(0.975, max(len(frame) - 2, 1))) * se
    return {"b": b, "ci_low": b - half, "ci_high": b + half, "a": float(np.mean(intercepts)), "se": se,
            "n_seeds": len(slopes), "n_obs": int(len(frame))}


def fit_exponents(table: pd.DataFrame, fit_from: int = 1, floor_factor: float = 5.0) -> pd.DataFrame:
    """One :func:`fit_exponent` per (solver, N, B, epsilon) over its measured window of K.

    The window: ``K >= fit_from`` and the seed-mean chi^2 above ``floor_factor`` times the noise floor
    (the same K for every seed). Adds the window's ends, the number of K and the last seed-mean chi^2.
    """
    keys = ["dataset", "solver", "n_points", "batch_size", "epsilon"]
    rows = []
    for key, part in table.groupby(keys, sort=True):
        mean = part.groupby("step").chi2.mean()
        floor = float(part.chi2_floor.iloc[0])
        window = [k for k, v in mean.items() if k >= fit_from and v > floor_factor * floor]
        used = part[part.step.isin(window)]
        fit = fit_exponent(used.step, used.chi2, used.seed) if len(window) >= 3 else fit_exponent([], [], [])
        rows.append({**dict(zip(keys, key)), **fit, "k_min": min(window, default=np.nan),
                     "k_max": max(window, default=np.nan), "n_steps": len(window),
                     "final_chi2": float(mean.iloc[-1]), "chi2_floor": floor, "floor_factor": floor_factor})
    return pd.DataFrame(rows)
