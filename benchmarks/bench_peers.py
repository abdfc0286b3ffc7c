"""Time to chi^2 <= 0.05: ``sdfm.ot.fit_potential`` vs POT and OTT-JAX semidiscrete solvers.

Every method solves the unregularised (eps = 0) problem from N(0, I_d) to the uniform
measure on y, with its own defaults, and every returned potential is scored by ONE common
scorer: the unbiased chi^2 (paper Eq. 3.5) of the hard assignment on 400k fresh source
samples, the same samples for all methods (:func:`sdfm.ot.chi2_unbiased` on the counts of
:func:`sdfm.ot.kernel.reduce_scores`). Potentials are converted to our form
``argmax_j <x, y_j> + g_j``:

* POT ``ot.semidiscrete.solve_semidiscrete``, method ``pot``: the callable metric
  ``C = -<x, y>`` (our cost; POT's score g' - C is then ours, ``g = g'``). This is the setting
  of our reference measurements of POT: with POT's default ``sqeuclidean`` (method ``pot-sqeuclid``,
  |x - y|^2 without 1/2, score ``g'_j - |y_j|^2 + 2 <x, y_j>``, so ``g = (g' - |y|^2) / 2``)
  DRAG's eps_t and the step sqrt(N B) act on a cost twice as large, and on N = 1000, d = 16
  chi^2 after 1,000 steps is 0.30 instead of 0.0046;
* OTT ``SemidiscreteSolver`` with ``costs.NegDotProduct()`` (score g - C = g + <x, y>): ``g = g'``.

Both conversions are checked against the peer's own assignment on 4,096 samples.
POT has no callback: each checkpoint is a fresh run with ``max_iter = K`` (its step size
schedule does not depend on max_iter, so the run is the first K steps of a longer one); so is
ours (EMA averaging, ``eval_every = K``: one internal chi^2 evaluation of 8,192 samples at the
end, included in its time). OTT runs once, its callback copying ``g_ema`` at the checkpoints
(time includes JIT compilation). OTT is optional: it runs when ``import ott`` works (e.g.
under a separate venv with ott-jax and a ``.pth`` to this project's site-packages).

Usage: ``python benchmarks/bench_peers.py [--quick]`` (quick: the two small problems,
small budgets, under 3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import BENCH_DIR, bench_style, machine_note, save_figure, write_csv
from sdfm.data.toy import ToyBuilder
from sdfm.ot import chi2_unbiased, fit_potential
from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores

TARGET = 0.05
COLUMNS = ["method", "problem", "steps", "seconds", "chi2"]
COLORS = {"sdfm": "C2", "pot": "C1", "pot-sqeuclid": "C3", "ott": "C0"}


def make_problem(name: str) -> torch.Tensor:
    """The target points of a named problem (the problems the peers are measured on)."""
    if name == "gauss_n1000_d16":
        rng = np.random.default_rng(5)
        y = rng.standard_normal((1000, 16)) * rng.uniform(0.5, 2.0, 16) + rng.standard_normal(16)
    elif name == "gauss_n5000_d64":
        y = 1.5 * np.random.default_rng(11).standard_normal((5000, 64))
    elif name == "gauss_n20000_d64":
        y = 1.5 * np.random.default_rng(7).standard_normal((20000, 64))
    elif name == "checkerboard_n5000":
        return ToyBuilder("checkerboard")(n_train=5000, n_test=0, seed=0).train
    else:
        raise ValueError(f"unknown problem {name!r}")
    return torch.from_numpy(y.astype(np.float32))


#: Checkpoints (steps) per problem and method; OTT's learning rate per problem (it must be large: its
#: gradient entries are ~1/N, and lr 0.02-0.1 barely moves the potential).
FULL = {
    "gauss_n1000_d16": {"sdfm": [50, 100, 200, 500, 1000, 2000, 5000], "pot": [100, 300, 1000, 3000, 10000],
                        "ott": [100, 300, 1000, 3000, 10000], "ott_lr": 10.0},
    "gauss_n20000_d64": {"sdfm": [250, 500, 1000, 2000, 5000, 10000], "pot": [300, 1000, 3000],
                         "ott": [500, 1000, 2000, 5000, 10000], "ott_lr": 100.0},
    "checkerboard_n5000": {"sdfm": [250, 500, 1000, 2000, 5000], "pot": [300, 1000, 3000, 10000],
                           "ott": [300, 1000, 3000, 10000], "ott_lr": 1.0},
}
#: Problems run only when named with --problems (not part of the full grid).
EXTRA = {
    "gauss_n5000_d64": {"sdfm": [100, 250, 500, 1000, 2000], "pot": [100, 300, 1000, 3000],
                        "ott": [300, 1000, 3000], "ott_lr": 100.0},
}
# OTT on the checkerboard (g starts at 0): chi^2 at 3,000 steps 3.4 / 4.6 / 8.0 / 20 / 39 / 480 / 330
# for lr 1 / 2 / 5 / 20 / 50 / 500 / 5000 (constant lr, EMA 0.99: the plateau grows with lr).
QUICK = {
    "gauss_n1000_d16": {"sdfm": [50, 100, 200, 500], "pot": [100, 300], "ott": [100, 300, 1000], "ott_lr": 10.0},
    "checkerboard_n5000": {"sdfm": [200, 500, 1000], "pot": [100], "ott": [300, 1000], "ott_lr": 1.0},
}


class Scorer:
    """Unbiased hard-assignment chi^2 of a potential on fixed fresh samples x ~ N(0, I_d)."""

    def __init__(self, y: torch.Tensor, n_samples: int, seed: int = 2024):
        self.y = y
        self.x = torch.randn(n_samples, y.shape[1], generator=torch.Generator().manual_seed(seed))
        self.b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64)

    def reduce(self, g: torch.Tensor, x: torch.Tensor | None = None):
        keys = augment_keys(self.y, torch.as_tensor(g, dtype=torch.float64))
        return reduce_scores(augment_queries(self.x if x is None else x), keys, 0.0)

    def assign(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(g, x).index

    def __call__(self, g: torch.Tensor) -> float:
        red = self.reduce(g)
        return chi2_unbiased(red.mass, red.mass_sq, self.x.shape[0], self.b)


def run_sdfm(y, steps: int, seed: int = 0) -> torch.Tensor:
    pot = fit_potential(y, steps=steps, eval_every=steps, eval_batch=8192, seed=seed, progress=False)
    return pot.g.to(torch.float64)


POT_METRICS = {"pot": lambda x, y: -(x @ y.T), "pot-sqeuclid": None}


def run_pot(y, steps: int, metric: str = "pot", seed: int = 0, batch_size: int = 256) -> torch.Tensor:
    from ot.semidiscrete import solve_semidiscrete

    gen = torch.Generator().manual_seed(seed)
    d = y.shape[1]
    g_pot = solve_semidiscrete(
        y, lambda b: torch.randn(b, d, generator=gen), metric=POT_METRICS[metric], max_iter=steps, batch_size=batch_size
    )
    return pot_to_ours(y, g_pot, metric)


def pot_to_ours(y, g_pot, metric: str) -> torch.Tensor:
    """POT's potential (score g' - C) in the form ``<x, y> + g``."""
    g_pot = g_pot.to(torch.float64)
    if metric == "pot":  # C = -<x, y>
        return g_pot
    return (g_pot - y.to(torch.float64).square().sum(dim=1)) / 2  # C = |x - y|^2


def check_pot(y, scorer: Scorer, metric: str) -> float:
    """Fraction of 4,096 samples where POT's own assignment equals ours after conversion."""
    from ot.semidiscrete import semidiscrete_atom_weights

    g_pot = 3 * torch.randn(y.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    x = scorer.x[:4096]
    theirs = semidiscrete_atom_weights(y, x, g_pot, metric=POT_METRICS[metric], reg=0.0).argmax(dim=1)
    return float((theirs == scorer.assign(pot_to_ours(y, g_pot, metric), x)).double().mean())


def run_ott(y, checkpoints: list[int], lr: float, seed: int = 0, scorer: Scorer | None = None):
    """One OTT run; returns [(steps, seconds, g)] at the checkpoints and the assignment check."""
    import jax
    import jax.numpy as jnp
    import optax
    from ott.geometry import costs
    from ott.geometry.semidiscrete_pointcloud import SemidiscretePointCloud
    from ott.problems.linear.semidiscrete_linear_problem import SemidiscreteLinearProblem
    from ott.solvers.linear.semidiscrete import SemidiscreteSolver

    wanted, snaps = set(checkpoints), []

    def callback(state):
        it = int(state.it)
        if it in wanted:
            snaps.append((it, time.perf_counter() - start, torch.from_numpy(np.array(state.g_ema, dtype=np.float64))))

    geom = SemidiscretePointCloud(jax.random.normal, jnp.asarray(y.numpy()), cost_fn=costs.NegDotProduct(), epsilon=0.0)
    solver = SemidiscreteSolver(num_iterations=max(checkpoints), batch_size=256, optimizer=optax.sgd(lr),
                                error_eval_every=max(checkpoints), threshold=-1.0, callback=callback)
    start = time.perf_counter()
    out = solver(jax.random.key(seed), SemidiscreteLinearProblem(geom))
    jax.block_until_ready(out.g)
    agree = float("nan")
    if scorer is not None:  # OTT's own hard assignment vs ours with g = g_ema
        hard = out.sample(jax.random.key(1), 4096, epsilon=0.0)
        x, theirs, g = (torch.from_numpy(np.array(a)) for a in (hard.ot_prob.geom.x, hard.paired_indices[1], out.g))
        agree = float((theirs.long() == scorer.assign(g.double(), x.float())).double().mean())
    return snaps, agree


def ott_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ott") is not None


def bench_problem(name: str, plan: dict, methods: list[str], n_eval: int, stop_at_target: bool,
                  clock=time.perf_counter) -> list[dict]:
    y = make_problem(name)
    scorer = Scorer(y, n_eval)
    rows = []

    def record(method, steps, seconds, g):
        chi2 = scorer(g)
        rows.append(dict(method=method, problem=name, steps=steps, seconds=seconds, chi2=chi2))
        print(f"  {name:20s} {method:12s} steps={steps:6d} {seconds:8.2f} s chi2={chi2:.4f}", flush=True)
        return chi2

    for metric in ("pot", "pot-sqeuclid"):
        if metric in methods:
            print(f"  {metric} conversion check on {name}: assignments agree on {check_pot(y, scorer, metric):.2%}")
    runners = {"sdfm": run_sdfm, "pot": run_pot, "pot-sqeuclid": lambda y, k: run_pot(y, k, "pot-sqeuclid")}
    for method in [m for m in runners if m in methods]:
        for steps in plan["pot" if method.startswith("pot") else method]:
            start = clock()
            g = runners[method](y, steps)
            if record(method, steps, clock() - start, g) <= TARGET and stop_at_target:
                break
    if "ott" in methods:
        snaps, agree = run_ott(y, plan["ott"], plan["ott_lr"], scorer=scorer)
        print(f"  OTT conversion check on {name}: assignments agree on {agree:.2%} of samples")
        for steps, seconds, g in snaps:
            record("ott", steps, seconds, g)
    return rows


def time_to_target(frame) -> list[str]:
    """One line per (problem, method): the first checkpoint at chi^2 <= TARGET, else the best one."""
    lines = []
    for (problem, method), part in frame.groupby(["problem", "method"]):
        hit = part[part["chi2"] <= TARGET].sort_values("seconds")
        row, what = (hit.iloc[0], f"chi2<={TARGET}") if len(hit) else (part.loc[part["chi2"].idxmin()], "not reached; best")
        lines.append(f"{problem:20s} {method:12s} {what} {row['chi2']:.4f} at {row['seconds']:.2f} s ({row['steps']} steps)")
    return lines


def plot(frame, path) -> None:
    plt = bench_style()
    problems = list(dict.fromkeys(frame["problem"]))
    fig, axes = plt.subplots(1, len(problems), figsize=(4.2 * len(problems), 3.6), squeeze=False)
    for ax, problem in zip(axes[0], problems):
        for method, part in frame[frame["problem"] == problem].groupby("method"):
            part = part.sort_values("seconds")
            ax.plot(part["seconds"], part["chi2"].clip(lower=1e-4), "o-", color=COLORS.get(method), label=method)
        ax.axhline(TARGET, color="gray", ls="--", lw=1, label=f"chi2 = {TARGET}")
        ax.set(xscale="log", yscale="log", title=problem, xlabel="seconds", ylabel="chi2 (clipped at 1e-4)")
        ax.legend()
    fig.suptitle(f"Semidiscrete solvers, eps = 0 ({machine_note()})", fontsize=9)
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small problems, small budgets (< 3 min)")
    parser.add_argument("--methods", default="sdfm,pot,ott", help="comma-separated subset of sdfm,pot,pot-sqeuclid,ott")
    parser.add_argument("--eval-samples", type=int, default=400_000)
    parser.add_argument("--out", default=str(BENCH_DIR / "peers.csv"))
    parser.add_argument("--problems", default=None,
                        help=f"comma-separated subset of {','.join({**FULL, **EXTRA})} (default: the grid's)")
    parser.add_argument("--stop-at-target", action="store_true", help="per method, stop at the first chi^2 <= 0.05")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="process: this process's CPU time with one torch thread, for a shared machine (not OTT)")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    if args.clock == "process":
        torch.set_num_threads(1)  # idle OpenMP threads spin on a loaded machine and inflate process time
    if "ott" in methods and not ott_available():
        print("OTT-JAX not importable: skipping it (see the module docstring to run it)")
        methods.remove("ott")
    rows = []
    plans = QUICK if args.quick else FULL
    if args.problems:
        plans = {**FULL, **EXTRA, **plans}
        unknown = [name for name in args.problems.split(",") if name not in plans]
        if unknown:
            parser.error(f"--problems: unknown {unknown}; choose from {sorted(plans)}")
        plans = {name: plans[name] for name in args.problems.split(",")}
    for name, plan in plans.items():
        rows += bench_problem(name, plan, methods, args.eval_samples, stop_at_target=args.quick or args.stop_at_target,
                              clock=time.process_time if args.clock == "process" else time.perf_counter)
    frame = write_csv(rows, args.out, COLUMNS)
    plot(frame, args.out.replace(".csv", ".png"))
    print("\n".join(["time to target:"] + time_to_target(frame)))
    print(f"wrote {args.out} and its .png ({len(frame)} rows)")


if __name__ == "__main__":
    main()
