"""Error of the top-k draw at eps > 0: total variation to the exact draw, vs k, N, d and eps.

At eps > 0 a source point x is paired with j ~ p(x) = softmax_j((<x, y_j> + g_j) / eps + log b_j).
Drawing only among the k best scores (``SemidiscretePotential.assign(..., top_k=k)``, OTT's
dataloader option) draws from the renormalised top-k softmax q_k(x) instead, and

    TV(q_k(x), p(x)) = 1 - (mass of p(x) on its k largest entries)

(:func:`sdfm.ot.kernel.topk_total_variation`). This script fits the potential at each
(N, d, eps_rel) (``eps = eps_rel * std(C)`` on a 4,096 x 4,096 reference batch, as the
``fit-potential`` job does), then reports the TV averaged over fresh queries (and its median,
90th percentile and max), the perplexity exp(H(p(x))) (how many points share the mass), and the
time of 1,024 draws, exact and top-k (interleaved medians; CPU timings on a shared machine are
indicative only). Data: d = 2 the checkerboard toy, d = 64 an anisotropic Gaussian
(``normal * uniform(0.5, 2, d)``, seed 5, like ``bench_peers.py``'s gauss problem).

Findings (2 shared cores): TV falls fast with k when the softmax is concentrated (d = 64:
perplexity 1.1 at eps_rel 0.01, TV(k=8) < 1e-7) and slowly when it is spread (d = 2: perplexity
24-1,700, TV(k=512) = 0.43 at N = 1e4, eps_rel 0.1). The TV barely depends on how converged the
potential is (N = 1e4, d = 64, eps_rel 0.1: fit chi^2 0.32 after 1,000 steps vs 0.054 after 4,000,
mean TV 0.341 / 0.037 / 1.0e-3 / 5.1e-6 vs 0.341 / 0.039 / 1.1e-3 / 5.4e-6 for k = 1 / 8 / 64 /
512). On CPU the top-k draw is no faster than the exact one (``topk`` over N costs more than the
exponentials and the two-level inverse CDF): about equal at k <= 8, 3-10x slower at k = 512.

Usage: ``python benchmarks/bench_topk.py [--quick]`` (full: N in {1e3, 1e4}, d in {2, 64},
eps_rel in {0.01, 0.1}, k in {1, 8, 64, 512}, 1,000 fit steps, 4,096 queries, a few minutes on
2 cores; quick: N = 1e3 only, 300 fit steps, 1,024 queries).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from common import BENCH_DIR, bench_style, interleaved_medians, machine_note, save_figure, write_csv
from sdfm.data.toy import ToyBuilder
from sdfm.ot import fit_potential, relative_epsilon
from sdfm.ot.kernel import augment_queries, row_blocks, sample_assignment, topk_total_variation

KS = [1, 8, 64, 512]
FULL = {"n": [10**3, 10**4], "d": [2, 64], "eps_rel": [0.01, 0.1], "fit_steps": 1000, "queries": 4096}
QUICK = {"n": [10**3], "d": [2, 64], "eps_rel": [0.01, 0.1], "fit_steps": 300, "queries": 1024}
COLUMNS = ["n", "d", "data", "eps_rel", "eps_abs", "fit_steps", "fit_chi2", "k", "tv_mean", "tv_median", "tv_p90",
           "tv_max", "perplexity_mean", "draw_exact_ms", "draw_topk_ms", "queries"]


def make_points(n: int, d: int) -> tuple[str, torch.Tensor]:
    if d == 2:
        return "checkerboard", ToyBuilder("checkerboard")(n_train=n, n_test=0, seed=0).train.float()
    rng = np.random.default_rng(5)
    y = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    return "gauss_aniso", torch.from_numpy(y.astype(np.float32))


def perplexity(queries: torch.Tensor, keys: torch.Tensor, eps: float) -> torch.Tensor:
    """exp of the entropy of p(x) per query (1: one point takes all the mass; N: uniform)."""
    out = []
    for rows in row_blocks(queries.shape[0], keys.shape[0]):
        logp = torch.log_softmax((queries[rows] / eps @ keys.T).double(), dim=1)
        out.append((-(logp.exp() * logp).sum(dim=1)).exp())
    return torch.cat(out)


def bench_point(n: int, d: int, eps_rel: float, fit_steps: int, n_queries: int) -> list[dict]:
    data, y = make_points(n, d)
    gen = torch.Generator().manual_seed(0)
    ref = min(4096, n)
    x_ref = torch.randn(ref, d, generator=gen)
    eps = relative_epsilon(eps_rel, x_ref, y[torch.randperm(n, generator=gen)[:ref]])
    pot = fit_potential(y, epsilon=eps, steps=fit_steps, batch_size=256, eval_every=fit_steps, eval_batch=8192,
                        progress=False)
    queries = augment_queries(torch.randn(n_queries, d, generator=torch.Generator().manual_seed(1)))
    tv = topk_total_variation(queries, pot.keys, eps, KS)
    perp = float(perplexity(queries, pot.keys, eps).mean())
    timing_q = queries[:1024]
    draw_gen = torch.Generator().manual_seed(2)
    fns = [lambda: sample_assignment(timing_q, pot.keys, eps, generator=draw_gen)]
    fns += [lambda k=k: sample_assignment(timing_q, pot.keys, eps, generator=draw_gen, top_k=k) for k in KS]
    times = interleaved_medians(fns, repeats=3)
    rows = []
    for column, k in enumerate(KS):
        values = tv[:, column]
        rows.append(dict(n=n, d=d, data=data, eps_rel=eps_rel, eps_abs=eps, fit_steps=fit_steps,
                         fit_chi2=pot.history["chi2"][-1], k=k, tv_mean=float(values.mean()),
                         tv_median=float(values.median()), tv_p90=float(values.quantile(0.9)),
                         tv_max=float(values.max()), perplexity_mean=perp, draw_exact_ms=1e3 * times[0],
                         draw_topk_ms=1e3 * times[1 + column], queries=n_queries))
        print(f"N={n:6d} d={d:3d} eps_rel={eps_rel:<5g} (eps={eps:.3g}, fit chi2 {rows[-1]['fit_chi2']:.3g}, "
              f"perplexity {perp:.3g}) k={k:4d} TV mean {rows[-1]['tv_mean']:.3e} p90 {rows[-1]['tv_p90']:.3e} "
              f"draw exact {rows[-1]['draw_exact_ms']:.1f} ms top-k {rows[-1]['draw_topk_ms']:.1f} ms", flush=True)
    return rows


def plot(frame, path) -> None:
    plt = bench_style()
    dims = sorted(frame["d"].unique())
    fig, axes = plt.subplots(1, len(dims), figsize=(4.4 * len(dims), 3.6), squeeze=False)
    floor = 1e-12
    for ax, d in zip(axes[0], dims):
        part = frame[frame["d"] == d]
        for i, ((n, eps_rel), line) in enumerate(part.groupby(["n", "eps_rel"])):
            line = line.sort_values("k")
            style = "-" if eps_rel == part["eps_rel"].max() else "--"
            ax.plot(line["k"], line["tv_mean"].clip(lower=floor), "o" + style, color=f"C{int(math.log10(n))}",
                    label=f"N={n:g}, eps_rel={eps_rel:g}")
        ax.set(xscale="log", yscale="log", xlabel="k", ylabel=f"mean TV(top-k, exact) (clipped at {floor:g})",
               title=f"d={d} ({part['data'].iloc[0]})")
        ax.legend()
    fig.suptitle(f"Top-k draw error at eps > 0 ({machine_note()})", fontsize=9)
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1e3 only, short fits (about a minute)")
    parser.add_argument("--out", default=str(BENCH_DIR / "topk.csv"))
    args = parser.parse_args(argv)
    grid = QUICK if args.quick else FULL
    rows = []
    for d in grid["d"]:
        for n in grid["n"]:
            for eps_rel in grid["eps_rel"]:
                rows += bench_point(n, d, eps_rel, grid["fit_steps"], grid["queries"])
    frame = write_csv(rows, args.out, COLUMNS)
    plot(frame, args.out.replace(".csv", ".png"))
    print(f"wrote {args.out} and its .png ({len(frame)} rows)")


if __name__ == "__main__":
    main()
