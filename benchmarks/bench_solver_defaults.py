"""Solver defaults: chi^2 <= 0.05 on clustered 2-D data within the budget, and no loss of speed elsewhere.

The problems are those the defaults must serve: the four clustered 2-D toys of ``config.yaml``
(eight_gaussians, moons, spiral, checkerboard; N points, seed 0) and a d = 64 Gaussian
(``1.5 * N(0, I_64)``, seed 11, as ``bench_peers.py``'s ``gauss_n5000_d64``). Each problem is
fitted twice, side by side, as a user's fit-potential job runs it: ``fit_potential`` with
``chi2_threshold = 0.05`` and the default budget (``SolverConfig.steps``), its own cost-aware
evaluations and stopping rule included, once with :data:`PREVIOUS` (the SolverConfig fields whose
defaults changed, at their previous values) and once with the current defaults, same seed.

Per fit: the solver's chi^2 estimates (``source = solver``, with the process time at which each
was made), then the returned potential scored once more by one common scorer (``source =
scorer``): the unbiased chi^2 on ``--scorer-samples`` fresh samples, the same for both fits.
``seconds`` is the process time of the whole fit (1 torch thread per fit: the machine is shared;
``--jobs K`` runs K fits at once in worker processes).
The summary gives, per problem: the scorer's chi^2 of both, whether each stopped at the
threshold within the budget, and ``time_ratio = current / previous`` seconds to stop (< 1:
the new defaults are faster) where both stopped, plus the per-step time ratio.

Usage: ``python benchmarks/bench_solver_defaults.py [--quick] [--problems a,b] [--epsilons 0,0.1] [--jobs K]``
(quick: N = 1,000 and 1,000 steps, eps 0, two problems; full: N = 5,000, the default budget).
Writes ``reports/bench/solver_defaults.csv`` and ``.png``.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from common import BENCH_DIR, bench_style, machine_note, save_figure, write_csv
from sdfm.data.toy import ToyBuilder
from sdfm.ot import SolverConfig, fit_potential, relative_epsilon

TARGET = 0.05
#: The SolverConfig fields whose defaults changed, at their previous values.
PREVIOUS = {"init": "gaussian", "epsilon_schedule": "constant", "drag_hard_below": 0.05}
PROBLEMS = ("eight_gaussians", "moons", "spiral", "checkerboard", "gauss_d64")
QUICK_PROBLEMS = ("eight_gaussians", "gauss_d64")
COLUMNS = ["problem", "n", "d", "epsilon_rel", "epsilon", "defaults", "step", "chi2", "chi2_sd", "source", "seconds",
           "steps_run", "stopped"]
STYLE = {"previous": ("C3", "--"), "current": ("C2", "-")}


def make_problem(name: str, n: int) -> torch.Tensor:
    """The points of a named problem (2-D toys: ``sdfm.data.toy`` at seed 0)."""
    if name == "gauss_d64":
        return torch.from_numpy((1.5 * np.random.default_rng(11).standard_normal((n, 64))).astype(np.float32))
    return ToyBuilder(name)(n_train=n, n_test=0, seed=0).train


def absolute_epsilon(epsilon_rel: float, y: torch.Tensor, seed: int = 0) -> float:
    """``eps_rel * std(-<x, y>)`` on a seeded reference batch (as the potential job computes it)."""
    if epsilon_rel == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    count = min(4096, y.shape[0])
    rows = torch.randperm(y.shape[0], generator=gen)[:count]
    return relative_epsilon(epsilon_rel, torch.randn(count, y.shape[1], generator=gen), y[rows])


def fit_timed(y: torch.Tensor, epsilon: float, overrides: dict, steps: int):
    """One fit to chi^2 <= TARGET; returns its evaluations ``[(step, chi2, sd, seconds)]``, the potential, seconds."""
    curve = []
    start = time.process_time()

    def record(step, info):
        curve.append((step, info["chi2"], info["chi2_sd"], time.process_time() - start))

    potential = fit_potential(y, epsilon=epsilon, steps=steps, chi2_threshold=TARGET, progress=False,
                              callback=record, **overrides)
    return curve, potential, time.process_time() - start


def fit_task(task) -> list[dict]:
    """Both fits' rows for one ``(name, n, steps, epsilon_rel, label, scorer_samples)`` (a worker's unit)."""
    name, n, steps, epsilon_rel, label, scorer_samples = task
    torch.set_num_threads(1)
    y = make_problem(name, n)
    x = torch.randn(scorer_samples, y.shape[1], generator=torch.Generator().manual_seed(2024))
    epsilon = absolute_epsilon(epsilon_rel, y)
    curve, potential, seconds = fit_timed(y, epsilon, PREVIOUS if label == "previous" else {}, steps)
    history = potential.history
    base = dict(problem=name, n=n, d=y.shape[1], epsilon_rel=epsilon_rel, epsilon=epsilon, defaults=label,
                steps_run=history["steps_run"], stopped=bool(history.get("stopped_by_threshold")))
    rows = [dict(base, step=s, chi2=c, chi2_sd=sd, seconds=t, source="solver") for s, c, sd, t in curve]
    final = potential.chi2(x)
    rows.append(dict(base, step=history["steps_run"], chi2=final, chi2_sd=math.nan, seconds=seconds, source="scorer"))
    print(f"  {name:16s} eps_rel={epsilon_rel:<4g} {label:8s} chi2 {final:.4f} after {history['steps_run']} "
          f"steps, stopped={base['stopped']}, {seconds:.1f} s process time", flush=True)
    return rows


def run(problems, n: int, steps: int, epsilons, scorer_samples: int, jobs: int = 1) -> list[dict]:
    """Every (problem, epsilon, defaults) fit, ``jobs`` worker processes at a time (1 thread each)."""
    tasks = [(name, n, steps, eps, label, scorer_samples) for name in problems for eps in epsilons
             for label in ("previous", "current")]
    if jobs <= 1:
        parts = [fit_task(task) for task in tasks]
    else:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            parts = pool.map(fit_task, tasks, chunksize=1)
    return [row for part in parts for row in part]


def summary(frame) -> list[dict]:
    """Per (problem, epsilon): both fits' scorer chi^2, steps, stop, and the current / previous time ratios."""
    final = frame[frame["source"] == "scorer"]
    out = []
    for (problem, eps), part in final.groupby(["problem", "epsilon_rel"], sort=False):
        by = {row["defaults"]: row for _, row in part.iterrows()}
        prev, cur = by.get("previous"), by.get("current")
        if prev is None or cur is None:
            continue
        both = bool(prev["stopped"] and cur["stopped"])
        out.append(dict(problem=problem, epsilon_rel=eps, chi2_previous=prev["chi2"], chi2_current=cur["chi2"],
                        steps_previous=prev["steps_run"], steps_current=cur["steps_run"],
                        met_current=bool(cur["stopped"] and cur["chi2"] <= TARGET),
                        time_ratio=cur["seconds"] / prev["seconds"] if both else math.nan,
                        step_time_ratio=(cur["seconds"] / cur["steps_run"]) / (prev["seconds"] / prev["steps_run"])))
    return out


def plot(frame, path) -> None:
    plt = bench_style()
    panels = list(dict.fromkeys(zip(frame["problem"], frame["epsilon_rel"])))
    cols = min(5, len(panels))
    rows_ = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(3.3 * cols, 3.0 * rows_), squeeze=False)
    for ax, (problem, eps) in zip(axes.flat, panels):
        part = frame[(frame["problem"] == problem) & (frame["epsilon_rel"] == eps)]
        for label, (color, ls) in STYLE.items():
            run_ = part[part["defaults"] == label]
            curve = run_[run_["source"] == "solver"].sort_values("step")
            ax.plot(curve["seconds"], curve["chi2"].clip(lower=1e-4), ls, color=color, marker=".", label=label)
            final = run_[run_["source"] == "scorer"]
            ax.plot(final["seconds"], final["chi2"].clip(lower=1e-4), "*", color=color, ms=10)
        ax.axhline(TARGET, color="gray", ls=":", lw=1)
        ax.set(xscale="log", yscale="log", xlabel="process seconds", title=f"{problem}, eps_rel {eps:g}")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("chi2 of the averaged potential")
    axes[0, 0].legend(title="defaults (star: common scorer)", fontsize=7)
    n, steps = int(frame["n"].iloc[0]), int(frame["steps_run"].max())
    fig.suptitle(f"Solver defaults, previous {PREVIOUS} vs current, fits to chi2 <= {TARGET}; N = {n}, "
                 f"B = {SolverConfig.batch_size}, budget {steps} steps ({machine_note()})", fontsize=8)
    save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1000, 1000 steps, eps 0, two problems")
    parser.add_argument("--problems", default=None, help=f"comma-separated, from {list(PROBLEMS)}")
    parser.add_argument("--n", type=int, default=None, help="points per problem (default 5000; quick 1000)")
    parser.add_argument("--steps", type=int, default=None, help="SGD budget (default SolverConfig.steps; quick 1000)")
    parser.add_argument("--epsilons", default="0", help="relative epsilons, comma-separated (default 0)")
    parser.add_argument("--scorer-samples", type=int, default=200_000)
    parser.add_argument("--jobs", type=int, default=1, help="fits run at once, one process and thread each")
    parser.add_argument("--out", default=str(BENCH_DIR / "solver_defaults.csv"))
    args = parser.parse_args(argv)
    problems = (args.problems or ",".join(QUICK_PROBLEMS if args.quick else PROBLEMS)).split(",")
    unknown = sorted(set(problems) - set(PROBLEMS))
    if unknown:
        parser.error(f"--problems: unknown {unknown}; choose from {list(PROBLEMS)}")
    n = args.n or (1000 if args.quick else 5000)
    steps = args.steps or (1000 if args.quick else SolverConfig.steps)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    frame = write_csv(run(problems, n, steps, epsilons, args.scorer_samples, args.jobs), args.out, COLUMNS)
    plot(frame, args.out.replace(".csv", ".png"))
    lines = summary(frame)
    print("final chi^2 (common scorer), and current / previous process time to stop:")
    for row in lines:
        print("  " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    print(f"wrote {args.out} and its .png ({len(frame)} rows)")
    return frame, lines


if __name__ == "__main__":
    main()
