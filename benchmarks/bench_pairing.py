"""Pairing time per training batch: SD-FM (one MIPS over N points) vs OT-FM (batch OT), ours and torchcfm's.

The paper's Table 1 measured. Per batch of n noise samples in dimension d:

* ``sdfm`` (ours): :meth:`sdfm.ot.SemidiscretePotential.assign` against a potential over N data
  points; ``solver = argmax`` at eps = 0, ``sample`` (an exact draw from pi(x)) at eps > 0.
  O(n N d) per batch, O(N d) per pair, whatever n. The time does not depend on how well g is
  fitted, so g is the nearest-neighbour start ``-|y_j|^2 / 2``.
* ``otfm`` ours: :func:`sdfm.ot.batch_ot_pairing` on n noise x n data samples, as
  :class:`sdfm.fm.couplings.BatchOTCoupling` times it (``relative_epsilon`` included at eps > 0):
  ``exact`` (scipy ``linear_sum_assignment``, O(n^3)) and ``sinkhorn`` (POT log-domain,
  O(n^2) per iteration) at relative epsilon 0.01 and 0.1.
* ``otfm`` torchcfm: ``torchcfm.optimal_transport.OTPlanSampler(method).sample_plan(x0, x1)``,
  the peer researchers use, with its defaults: ``exact`` (POT ``emd``) and ``sinkhorn`` (POT
  ``sinkhorn_knopp`` on the float32 squared-Euclidean cost, 1000 iterations at most). Its
  ``reg`` is ``2 eps_abs``: ``|x - y|^2 = 2 (-<x, y>) + (row and column terms)``, so both solve
  the same entropic problem.

Ours and torchcfm's run on the same (x0, x1), interleaved, median of repeats
(:func:`common.budgeted_medians`: at least ``repeats`` rounds, more for calls of milliseconds,
up to ``min_seconds`` of rounds). ``ratio_vs_torchcfm = ours / torchcfm`` (< 1: ours is
faster); it is NaN where torchcfm returned no valid plan (at small eps its float32 Sinkhorn
underflows and it falls back to the uniform plan, i.e. random pairs, in milliseconds).
``ratio_vs_otfm_exact = sdfm / ours exact`` at the same (n, d). Quality, from the warm-up
call: ``pair_sqdist`` (mean |x0 - x1|^2 of the pairs; the same for both exact solvers up to
torchcfm's resampling with replacement) and, for Sinkhorn, ``marginal_err`` (L1 error of both
marginals of the plan) and ``iterations``, from a second, untimed POT call with log=True and
the impl's settings. The peer's warnings and exceptions are kept in ``note``; a failed call
leaves ``seconds`` NaN.

Budget: a cell is skipped (``seconds`` NaN, the reason in ``note``) when its time predicted from
the smaller sizes (:func:`common.extrapolate`, never below the theoretical exponent) exceeds
``--budget`` seconds, or its estimated memory exceeds ``--max-bytes``; exact assignment at
n = 16k is O(n^3) and would run for a long time. A cell above a third of the budget is timed once.

Growth: ``t = a x^b`` fitted in log-log per (method, solver, epsilon, impl, d) against n (fixed
N, ``sweep = n``) and, for sdfm, against N (fixed n, ``sweep = N``); written to
``pairing_fit.csv`` (``b_theory`` per batch: 1 for sdfm in n and N, 3 exact, 2 Sinkhorn at fixed
eps; per pair subtract 1 in n). Small sizes are dominated by fixed costs, so fitted exponents
there understate the asymptotic ones.

Usage: ``python benchmarks/bench_pairing.py [--quick] [--budget 120] [--max-bytes 8e9] [--threads K]``.
Writes ``pairing.csv``, ``pairing_fit.csv`` and ``pairing.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from common import (BENCH_DIR, bench_style, budgeted_medians, extrapolate, fit_power_law, machine_note, save_figure,
                    timed, write_csv)
from sdfm.ot import SemidiscretePotential, batch_ot_pairing, relative_epsilon

FULL = {"n": [256, 1024, 4096, 16384], "d": [2, 64, 784, 3072], "N": 10_000, "N_sweep": [1_000, 10_000, 100_000],
        "n_fixed": 1024, "sinkhorn_eps": [0.01, 0.1], "sdfm_eps": 0.1, "budget": 120.0, "repeats": 5,
        "min_seconds": 1.0}
QUICK = {"n": [256, 512, 1024], "d": [2, 64], "N": 10_000, "N_sweep": [1_000, 10_000, 100_000],
         "n_fixed": 256, "sinkhorn_eps": [0.01, 0.1], "sdfm_eps": 0.1, "budget": 8.0, "repeats": 3,
         "min_seconds": 0.3}
COLUMNS = ["sweep", "method", "solver", "epsilon_rel", "epsilon_abs", "impl", "n", "N", "d", "seconds",
           "seconds_per_pair", "repeats", "ratio_vs_torchcfm", "ratio_vs_otfm_exact", "pair_sqdist", "marginal_err",
           "iterations", "note"]
FIT_COLUMNS = ["sweep", "method", "solver", "epsilon_rel", "impl", "d", "a", "b", "b_per_pair", "b_theory", "points",
               "x_min", "x_max"]
#: Theoretical growth of the time per batch, in n (sweep n) or N (sweep N).
THEORY = {"argmax": 1.0, "sample": 1.0, "exact": 3.0, "sinkhorn": 2.0}
#: Bytes per n^2 entry held at once (cost, copies, plan, torchcfm's resampling of the flat plan).
BYTES_PER_ENTRY = {("exact", "ours"): 24, ("exact", "torchcfm"): 44, ("sinkhorn", "ours"): 48,
                   ("sinkhorn", "torchcfm"): 32}
#: Our Sinkhorn settings (sdfm.ot.batch.sinkhorn_plan) and torchcfm's (POT defaults), for the untimed log call.
OURS_SINKHORN = {"method": "sinkhorn_log", "stopThr": 1e-3, "numItermax": 10_000}
TORCHCFM_SINKHORN = {"method": "sinkhorn", "stopThr": 1e-9, "numItermax": 1000}


@dataclass(frozen=True)
class Variant:
    """One pairing method: ``method`` sdfm/otfm, ``solver``, relative epsilon, ``impl`` ours/torchcfm."""

    method: str
    solver: str
    epsilon_rel: float
    impl: str = "ours"

    @property
    def key(self) -> tuple:
        return (self.method, self.solver, self.epsilon_rel, self.impl)


def torchcfm_sampler_class():
    """``torchcfm.optimal_transport.OTPlanSampler``, or None when torchcfm is not installed."""
    try:
        from torchcfm.optimal_transport import OTPlanSampler
    except ImportError:
        return None
    return OTPlanSampler


def groups_of(grid: dict, with_torchcfm: bool) -> list[list[Variant]]:
    """Variants timed side by side: sdfm eps 0 and eps > 0; each OT solver ours with torchcfm's."""
    peers = ["ours", "torchcfm"] if with_torchcfm else ["ours"]
    groups = [[Variant("sdfm", "argmax", 0.0), Variant("sdfm", "sample", grid["sdfm_eps"])],
              [Variant("otfm", "exact", 0.0, impl) for impl in peers]]
    groups += [[Variant("otfm", "sinkhorn", e, impl) for impl in peers] for e in grid["sinkhorn_eps"]]
    return groups


class Cell:
    """The inputs of one (n, N, d): noise x0, a data batch x1, a potential over N points."""

    def __init__(self, y: torch.Tensor, n: int, seed: int, sdfm_eps: float):
        gen = torch.Generator().manual_seed(seed)
        self.n, self.N, self.d = n, y.shape[0], y.shape[1]
        self.x0 = torch.randn(n, self.d, generator=gen)
        self.x1 = y[torch.randint(self.N, (n,), generator=gen)]
        self.gen = gen
        ref = torch.randn(min(n, 256), self.d, generator=gen)
        scale = float((ref @ y[:4096].T).std())
        g = -0.5 * y.double().square().sum(dim=1)
        self.potentials = {0.0: SemidiscretePotential(y, g, 0.0),
                           sdfm_eps: SemidiscretePotential(y, g, sdfm_eps * scale)}
        self.ot_eps = {}

    def epsilon_abs(self, v: Variant) -> float:
        if v.method == "sdfm":
            return self.potentials[v.epsilon_rel].epsilon
        if v.epsilon_rel not in self.ot_eps:
            self.ot_eps[v.epsilon_rel] = relative_epsilon(v.epsilon_rel, self.x0, self.x1) if v.epsilon_rel > 0 else 0.0
        return self.ot_eps[v.epsilon_rel]

    def function(self, v: Variant, sampler_class):
        """A call that pairs the batch with ``v`` and returns (x0, x1) of the pairs."""
        x0, x1, gen = self.x0, self.x1, self.gen
        if v.method == "sdfm":
            potential = self.potentials[v.epsilon_rel]
            return lambda: (x0, potential.y[potential.assign(x0, generator=gen)])
        if v.impl == "ours":
            rel = v.epsilon_rel

            def ours():
                eps = relative_epsilon(rel, x0, x1) if rel > 0 else 0.0  # as BatchOTCoupling times it
                return x0, x1[batch_ot_pairing(x0, x1, eps, gen)]

            return ours
        if v.solver == "exact":
            sampler = sampler_class("exact")
        else:
            sampler = sampler_class("sinkhorn", reg=2 * self.epsilon_abs(v))
        return lambda: sampler.sample_plan(x0, x1)

    def sinkhorn_quality(self, v: Variant) -> tuple[float, float]:
        """(L1 marginal error of the plan, iterations) of the impl's own Sinkhorn call, untimed."""
        import ot

        n = self.n
        if v.impl == "ours":
            cost = -(self.x0.double() @ self.x1.double().T)
            a = torch.full((n,), 1.0 / n, dtype=torch.float64)
            plan, log = ot.sinkhorn(a, a, cost - cost.min(), self.epsilon_abs(v), log=True, **OURS_SINKHORN)
            plan = plan.numpy()
        else:  # torchcfm's get_map: float32 squared distances, numpy POT, its defaults
            cost = (torch.cdist(self.x0, self.x1) ** 2).numpy()
            plan, log = ot.sinkhorn(ot.unif(n), ot.unif(n), cost, 2 * self.epsilon_abs(v), log=True,
                                    **TORCHCFM_SINKHORN)
        err = np.abs(plan.sum(1) - 1.0 / n).sum() + np.abs(plan.sum(0) - 1.0 / n).sum()
        return float(err), float(log.get("niter", math.nan))


def footprint(v: Variant, n: int, N: int, d: int) -> float:
    """Estimated peak bytes of one call."""
    if v.method == "sdfm":
        return 4.0 * (2 * N * (d + 1) + 2 * min(n * N, 1 << 26) + n * d)
    return float(BYTES_PER_ENTRY[(v.solver, v.impl)] * n * n + 8 * n * d)


def first_call(fn) -> tuple[float, object, str]:
    """Time one call of ``fn`` with its prints swallowed; return (seconds, output, note)."""
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("always")
        try:
            out = [None]
            seconds = timed(lambda: out.__setitem__(0, fn()))
            note = ""
        except Exception as err:  # the peer's failures (NaN plans) are results, not crashes
            seconds, out, note = math.nan, [None], f"failed: {type(err).__name__}: {str(err)[:80]}"
    messages = sorted({str(w.message).split(".")[0][:60] for w in caught})
    return seconds, out[0], "; ".join(([note] if note else []) + [f"warning: {m}" for m in messages])


def measure_group(cell: Cell, group: list[Variant], sampler_class, history: dict, sweep: str, grid: dict,
                  max_bytes: float) -> list[dict]:
    """Time one group of variants side by side on one cell; skip what is over budget or memory."""
    x_value = cell.n if sweep == "n" else cell.N
    budget, rows, live = grid["budget"], {}, []
    for v in group:
        past = history.setdefault((sweep, v.key, cell.d, cell.n if sweep == "N" else cell.N), [])
        row = dict(sweep=sweep, method=v.method, solver=v.solver, epsilon_rel=v.epsilon_rel,
                   epsilon_abs=cell.epsilon_abs(v), impl=v.impl, n=cell.n, N=cell.N, d=cell.d, seconds=math.nan,
                   repeats=0, pair_sqdist=math.nan, marginal_err=math.nan, iterations=math.nan, note="")
        rows[v] = row
        predicted = extrapolate([x for x, _, _ in past], [t for _, t, _ in past], x_value, THEORY[v.solver])
        if any(note.startswith("skipped") for _, _, note in past):
            row["note"] = "skipped: a smaller size was skipped"
        elif predicted > budget:
            row["note"] = f"skipped: predicted {predicted:.3g} s > budget {budget:g} s"
        elif footprint(v, cell.n, cell.N, cell.d) > max_bytes:
            row["note"] = f"skipped: ~{footprint(v, cell.n, cell.N, cell.d) / 1e9:.1f} GB > --max-bytes {max_bytes:.3g}"
        else:
            fn = cell.function(v, sampler_class)
            seconds, out, note = first_call(fn)
            row["note"] = note
            if math.isfinite(seconds):
                if v.method == "otfm":  # sdfm's pairs follow the unfitted g: their distances mean nothing
                    a, b = out
                    row["pair_sqdist"] = float((a - b).double().square().sum(dim=1).mean())
                if v.solver == "sinkhorn" and seconds < budget / 4:
                    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                        warnings.simplefilter("ignore")
                        row["marginal_err"], row["iterations"] = cell.sinkhorn_quality(v)
                live.append((v, fn, seconds))
        past.append((x_value, math.nan, row["note"]))  # seconds filled in below
    if live:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # kept once, in note
            warnings.simplefilter("ignore")
            seconds, rounds = budgeted_medians([fn for _, fn, _ in live], [s for _, _, s in live],
                                               repeats=grid["repeats"], budget=budget,
                                               min_seconds=grid.get("min_seconds", 0.0))
        for (v, _, _), s in zip(live, seconds):
            rows[v].update(seconds=s, repeats=rounds)
    for v, row in rows.items():
        past = history[(sweep, v.key, cell.d, cell.n if sweep == "N" else cell.N)]
        past[-1] = (x_value, row["seconds"], row["note"])
        row["seconds_per_pair"] = row["seconds"] / cell.n
    return list(rows.values())


def run(grid: dict, max_bytes: float = 8e9, with_torchcfm: bool = True, log=print) -> list[dict]:
    """All cells of ``grid``: the n sweep at fixed N (all variants), then the N sweep at fixed n (sdfm)."""
    sampler_class = torchcfm_sampler_class() if with_torchcfm else None
    if with_torchcfm and sampler_class is None:
        log("torchcfm is not installed (pip install torchcfm --no-deps): its rows are left out")
    groups = groups_of(grid, sampler_class is not None)
    warm = Cell(torch.randn(64, 2), 16, 0, grid["sdfm_eps"])  # lazy imports (scipy.optimize, ot) out of the timings
    for group in groups:
        for v in group:
            first_call(warm.function(v, sampler_class))
    rows, history = [], {}
    n_max = max(grid["N"], *grid["N_sweep"])
    for d in grid["d"]:
        y_all = torch.randn(n_max, d, generator=torch.Generator().manual_seed(d))
        for n in grid["n"]:
            cell = Cell(y_all[: grid["N"]], n, seed=n + d, sdfm_eps=grid["sdfm_eps"])
            for group in groups:
                rows += _logged(measure_group(cell, group, sampler_class, history, "n", grid, max_bytes), log)
        for N in grid["N_sweep"]:
            cell = Cell(y_all[:N], grid["n_fixed"], seed=N + d, sdfm_eps=grid["sdfm_eps"])
            rows += _logged(measure_group(cell, groups[0], sampler_class, history, "N", grid, max_bytes), log)
        del y_all
    return add_ratios(rows)


def _logged(rows: list[dict], log) -> list[dict]:
    for row in rows:
        log(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                     for k in ("sweep", "method", "solver", "epsilon_rel", "impl", "n", "N", "d", "seconds", "note")))
    return rows


def invalid(row: dict) -> bool:
    """Whether a row's call gave no usable pairs (it failed, or torchcfm fell back to the uniform plan)."""
    return not math.isfinite(row["seconds"]) or "failed" in row["note"] or "reverting to uniform" in row["note"]


def add_ratios(rows: list[dict]) -> list[dict]:
    """``ratio_vs_torchcfm`` on our otfm rows, ``ratio_vs_otfm_exact`` on sdfm rows of the n sweep."""
    fields = ("sweep", "method", "solver", "epsilon_rel", "impl", "n", "N", "d")
    index = {tuple(r[f] for f in fields): r for r in rows}
    for r in rows:
        r["ratio_vs_torchcfm"] = r["ratio_vs_otfm_exact"] = math.nan
        if r["method"] == "otfm" and r["impl"] == "ours":
            peer = index.get((r["sweep"], "otfm", r["solver"], r["epsilon_rel"], "torchcfm", r["n"], r["N"], r["d"]))
            if peer is not None and not invalid(peer):
                r["ratio_vs_torchcfm"] = r["seconds"] / peer["seconds"]
            elif peer is not None:
                r["note"] = "; ".join(filter(None, [r["note"], "no ratio: torchcfm returned no valid plan"]))
        if r["method"] == "sdfm" and r["sweep"] == "n":
            exact = index.get(("n", "otfm", "exact", 0.0, "ours", r["n"], r["N"], r["d"]))
            if exact is not None:
                r["ratio_vs_otfm_exact"] = r["seconds"] / exact["seconds"]
    return rows


def fits(frame) -> list[dict]:
    """Power law ``t = a x^b`` per (sweep, method, solver, epsilon, impl, d), over the valid cells."""
    out = []
    keys = ["sweep", "method", "solver", "epsilon_rel", "impl", "d"]
    for key, part in frame.groupby(keys, sort=True):
        x = part["n"] if key[0] == "n" else part["N"]
        ok = ~np.array([invalid(r) for r in part.to_dict("records")], dtype=bool)
        a, b = fit_power_law(x[ok], part["seconds"][ok])
        out.append(dict(zip(keys, key), a=a, b=b, b_per_pair=b - 1 if key[0] == "n" else b, b_theory=THEORY[key[2]],
                        points=int(ok.sum()), x_min=float(x[ok].min()) if ok.any() else math.nan,
                        x_max=float(x[ok].max()) if ok.any() else math.nan))
    return out


def _label(method, solver, eps, impl) -> str:
    name = {"argmax": "sdfm eps=0", "sample": f"sdfm eps={eps:g}", "exact": "otfm exact",
            "sinkhorn": f"otfm sinkhorn eps={eps:g}"}[solver]
    return f"{name} ({impl})" if method == "otfm" else name


def plot(frame, fit_frame, path) -> None:
    """Log-log time per batch vs n (one panel per d) and vs N (sdfm); ours / torchcfm; sdfm / otfm exact."""
    plt = bench_style()
    frame = frame.assign(valid=[not invalid(r) for r in frame.to_dict("records")])
    ds = sorted(frame["d"].unique())
    panels = len(ds) + 3
    cols = 3
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.5 * rows), squeeze=False)
    axes = axes.ravel()
    order = [("sdfm", "argmax"), ("sdfm", "sample"), ("otfm", "exact"), ("otfm", "sinkhorn")]
    colors = {}
    for key in sorted({(m, s, e) for m, s, e in zip(frame["method"], frame["solver"], frame["epsilon_rel"])},
                      key=lambda k: (order.index(k[:2]), k[2])):
        colors[key] = f"C{len(colors)}"
    fit_index = {tuple(r[k] for k in ["sweep", "method", "solver", "epsilon_rel", "impl", "d"]): r
                 for r in fit_frame.to_dict("records")}

    def draw(ax, part, x_col, key, color, ls, label):
        part = part[np.isfinite(part["seconds"])].sort_values(x_col)
        bad = part[~part["valid"]]
        part = part[part["valid"]]
        if len(bad):
            ax.plot(bad[x_col], bad["seconds"], "x", color=color, ms=5, label=f"{label}: no valid plan")
        if part.empty:
            return
        fit = fit_index.get(key)
        b = fit["b"] if fit else math.nan
        ax.plot(part[x_col], part["seconds"], "o", color=color, ms=3.5)
        if math.isfinite(b):
            xs = np.geomspace(part[x_col].min(), part[x_col].max(), 20)
            ax.plot(xs, fit["a"] * xs ** b, ls, color=color, lw=1.2, label=f"{label}: b={b:.2f}")
        else:
            ax.plot([], [], ls, color=color, label=f"{label}: 1 point")

    for ax, d in zip(axes, ds):
        for (method, solver, eps, impl), part in frame[(frame["sweep"] == "n") & (frame["d"] == d)].groupby(
                ["method", "solver", "epsilon_rel", "impl"]):
            draw(ax, part, "n", ("n", method, solver, eps, impl, d), colors[(method, solver, eps)],
                 "-" if impl == "ours" else "--", _label(method, solver, eps, impl))
        ax.set(xscale="log", yscale="log", xlabel="batch size n", ylabel="pairing time per batch (s)",
               title=f"d = {d}, N = {int(frame['N'][frame['sweep'] == 'n'].iloc[0])}")
        ax.legend(loc="upper left", fontsize=6)
    ax = axes[len(ds)]
    n_sweep = frame[frame["sweep"] == "N"]
    for (solver, eps, d), part in n_sweep.groupby(["solver", "epsilon_rel", "d"]):
        draw(ax, part, "N", ("N", "sdfm", solver, eps, "ours", d), f"C{ds.index(d)}",
             "-" if solver == "argmax" else ":", f"d={d} {_label('sdfm', solver, eps, 'ours')}")
    n_fixed = int(n_sweep["n"].iloc[0]) if len(n_sweep) else 0
    ax.set(xscale="log", yscale="log", xlabel="data points N", ylabel="pairing time per batch (s)",
           title=f"SD-FM vs N (n = {n_fixed}; theory b = 1)")
    ax.legend(loc="upper left", fontsize=6)
    markers = "osD^v"
    ax = axes[len(ds) + 1]
    ours = frame[(frame["impl"] == "ours") & np.isfinite(frame["ratio_vs_torchcfm"])]
    for (solver, eps, d), part in ours.groupby(["solver", "epsilon_rel", "d"]):
        part = part.sort_values("n")
        ax.plot(part["n"], part["ratio_vs_torchcfm"], "-" + markers[ds.index(d) % len(markers)],
                color=colors[("otfm", solver, eps)], ms=4, label=f"{_label('otfm', solver, eps, 'ours')[:-7]} d={d}")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="batch size n", ylabel="ours / torchcfm (< 1: ours faster)",
           title="OT-FM pairing: ours / torchcfm")
    ax.legend(loc="best", fontsize=6)
    ax = axes[len(ds) + 2]
    sd = frame[(frame["method"] == "sdfm") & np.isfinite(frame["ratio_vs_otfm_exact"])]
    for (solver, eps, d), part in sd.groupby(["solver", "epsilon_rel", "d"]):
        part = part.sort_values("n")
        ax.plot(part["n"], part["ratio_vs_otfm_exact"], ("-" if solver == "argmax" else ":")
                + markers[ds.index(d) % len(markers)], color=colors[("sdfm", solver, eps)], ms=4,
                label=f"{_label('sdfm', solver, eps, 'ours')} d={d}")
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set(xscale="log", yscale="log", xlabel="batch size n", ylabel="SD-FM / OT-FM exact (ours)",
           title=f"SD-FM (N = {int(frame['N'][frame['sweep'] == 'n'].iloc[0])}) vs batch OT, same n")
    ax.legend(loc="best", fontsize=6)
    for ax in axes[panels:]:
        ax.axis("off")
    fig.suptitle(f"Pairing time per batch, log-log with fitted t = a x^b\n{machine_note()}", fontsize=9)
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n in {256, 512, 1k}, d in {2, 64} (about 2 minutes)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds allowed per call; cells predicted above it are skipped (default 120, quick 8)")
    parser.add_argument("--max-bytes", type=float, default=8e9, help="skip cells whose estimated memory is above this")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--no-torchcfm", action="store_true", help="leave out torchcfm's OTPlanSampler")
    parser.add_argument("--out", default=str(BENCH_DIR / "pairing.csv"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    grid = dict(QUICK if args.quick else FULL)
    if args.budget is not None:
        grid["budget"] = args.budget
    np.random.seed(0)  # torchcfm resamples pairs with numpy's global generator
    rows = run(grid, args.max_bytes, with_torchcfm=not args.no_torchcfm)
    frame = write_csv(rows, args.out, COLUMNS)
    fit_frame = write_csv(fits(frame), args.out.replace(".csv", "_fit.csv"), FIT_COLUMNS)
    plot(frame, fit_frame, args.out.replace(".csv", ".png"))
    summary = frame[np.isfinite(frame["ratio_vs_torchcfm"])]
    if len(summary):
        print("ours / torchcfm:\n" + summary.pivot_table(index=["solver", "epsilon_rel", "d"], columns="n",
                                                         values="ratio_vs_torchcfm").to_string(float_format="%.3g"))
    exponents = fit_frame.pivot_table(index=["method", "solver", "epsilon_rel", "impl"], columns=["sweep", "d"],
                                      values="b")
    print("fitted exponents b (t = a x^b):\n" + exponents.to_string(float_format="%.2f"))
    print(f"wrote {args.out}, its _fit.csv and .png ({len(frame)} rows)")


if __name__ == "__main__":
    main()
