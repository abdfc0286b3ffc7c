"""OT-FM with a large OT batch n (``methods.otfm.ot_batch_size``) vs SD-FM pairing, per training pair.

For each dimension (digits, d = 64: sklearn's 8x8 digits; d = 784: the same digits bilinearly
upsampled to 28x28, a digits-like set of MNIST size) and each n, in one process and on the same data:

* ``otfm``: one plan of :class:`sdfm.fm.couplings.PlanOTCoupling` (n noise x n data points, the
  exact assignment at eps = 0, Sinkhorn at a relative eps > 0), the whole thing a training job
  pays once per n pairs: ``seconds_per_pair = seconds_per_plan / n``;
* ``sdfm``: pairing the same n noise samples in training batches of 256 against all N data points
  through a semidiscrete potential (:meth:`sdfm.ot.SemidiscretePotential.assign` at eps = 0, the
  MIPS a training job runs; an unfitted potential costs the same as a fitted one).

Times are CPU process time of this process (``time.process_time``, torch on ``--threads``
threads, default 1: on a shared machine it leaves out the time spent waiting for a core), the
median of ``--repeats`` calls when a call is short, one call otherwise. ``ratio_vs_sdfm`` is
OT-FM's time per pair over SD-FM's, measured side by side. ``pair_sqdist`` is the mean
``|x0 - x1|^2`` of the OT-FM pairs (independent pairs: ``indep_sqdist``; none for the SD-FM rows,
whose potential is unfitted): the plans' pairs get closer as n grows. A cell predicted from the
previous n (exponent 3 exact, 2 Sinkhorn) to take more than ``--budget`` seconds, or whose n x n
float64 cost would pass ``--max-bytes``, is skipped with the reason in ``note``.

From ``--blocked-from`` pairs (default: the training default, 16384) an eps > 0 plan takes the
blocked Sinkhorn (:mod:`sdfm.ot.sinkhorn_blocks`, no n x n matrix, so no ``--max-bytes`` limit;
``note`` says "blocked"). With ``--ranks K`` (K > 1) each such plan is also solved the way K
data-parallel training ranks solve it (gloo ranks of one thread, each holding n / K of the data
columns): method ``otfm`` with ``ranks = K``, ``seconds_per_plan`` the largest rank's process time
(the critical path of the computation; the waits of the collectives are not counted). On one CPU
the K ranks share its cores, so this is no CPU speed-up: it shows the work each of K GPUs (or
machines) would do, about 1/K of the one-process solve.

    python benchmarks/bench_otfm_large_batch.py [--quick] [--n 256,...,16384] [--dims 64,784] [--budget 120]
        [--blocked-from 16384] [--ranks 2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from common import BENCH_DIR, bench_style, joined_rank, machine_note, save_figure, spawned_text, timed, write_csv

COLUMNS = ["d", "N", "n", "method", "ranks", "epsilon", "seconds_per_plan", "seconds_per_pair", "ratio_vs_sdfm",
           "pair_sqdist", "indep_sqdist", "repeats", "note"]
EXPONENT = {0.0: 3.0}  # exact assignment; Sinkhorn at fixed eps: 2
SDFM_BATCH = 256


def digits_like(d: int):
    """The digits training split, flat, scaled as training sees it; bilinearly upsampled to 28x28 for d = 784."""
    import torch
    import torch.nn.functional as F

    from sdfm.data.digits import build_digits

    data = build_digits().flat_train().float()
    if d == 64:
        return data
    side = int(round(math.sqrt(d)))
    if side * side != d:
        raise SystemExit(f"--dims: {d} is not a square image size (64 or 784)")
    images = F.interpolate(data.reshape(-1, 1, 8, 8), size=(side, side), mode="bilinear", align_corners=False)
    return images.reshape(images.shape[0], -1).contiguous()


def _measure(fn, repeats: int):
    """(median process seconds, calls timed, last result): a call of a second or more is its own measure;
    a shorter one was a warm-up, and ``repeats`` more calls are timed."""
    result = {}

    def call():
        result["value"] = fn()

    first = timed(call, clock=time.process_time)
    times = [first] if first >= 1.0 else [timed(call, clock=time.process_time) for _ in range(repeats)]
    return statistics.median(times), len(times), result["value"]


def _plan_coupling(data, n: int, eps: float, blocked_from: int | None):
    from sdfm.fm.couplings import PlanOTCoupling

    coupling = PlanOTCoupling(data, ot_batch_size=n, epsilon_rel=eps)
    if blocked_from is not None:
        coupling.blocked_min_n = blocked_from
    return coupling


def _sharded_plan_rank(rank: int, world: int, port: int, d: int, n: int, eps: float, blocked_from: int, seed: int,
                       out: str) -> None:
    """One rank's share of a plan's solve (every rank the whole plan's noise and data, n / K of its columns)."""
    import torch
    import torch.distributed as dist

    with joined_rank(rank, world, port, "cpu"):
        coupling = _plan_coupling(digits_like(d), n, eps, blocked_from)
        dist.barrier()
        start = time.process_time()
        batch = coupling.sample(n, torch.Generator().manual_seed(seed))
        seconds = torch.tensor([time.process_time() - start], dtype=torch.float64)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
        if rank == 0:
            Path(out).write_text(f"{float(seconds)} {float((batch.x0 - batch.x1).square().sum(1).mean())}")


def run(dims, ns, epsilons=(0.0, 0.1), repeats=3, budget=120.0, max_bytes=4e9, seed=0, log=print,
        blocked_from: int | None = None, ranks: int = 1) -> list[dict]:
    """Every (d, n, method, eps) cell as a row of :data:`COLUMNS` (``ranks``: see the module)."""
    import torch

    from sdfm.ot import SemidiscretePotential
    from sdfm.ot.sinkhorn_blocks import BLOCKED_SINKHORN_MIN_N

    blocked_at = blocked_from if blocked_from is not None else BLOCKED_SINKHORN_MIN_N

    rows = []
    for d in dims:
        data = digits_like(d)
        count = data.shape[0]
        potential = SemidiscretePotential(data, torch.zeros(count))
        last: dict[float, tuple[int, float]] = {}
        for n in ns:
            gen = torch.Generator().manual_seed(seed + n)
            noise = torch.randn(n, d, generator=gen)
            perm = torch.cat([torch.randperm(count, generator=gen) for _ in range(-(-n // count))])[:n]
            indep = float((noise - data[perm]).square().sum(1).mean())

            def sdfm_pairs():
                return torch.cat([potential.assign(noise[i:i + SDFM_BATCH]) for i in range(0, n, SDFM_BATCH)])

            sd_seconds, sd_repeats, _ = _measure(sdfm_pairs, repeats)
            sd_per_pair = sd_seconds / n
            rows.append({"d": d, "N": count, "n": n, "method": "sdfm", "ranks": 1, "epsilon": 0.0,
                         "seconds_per_plan": sd_seconds,
                         "seconds_per_pair": sd_per_pair, "ratio_vs_sdfm": 1.0, "pair_sqdist": math.nan,
                         "indep_sqdist": indep, "repeats": sd_repeats,
                         "note": "unfitted potential (g = 0): the time of a fitted one's MIPS, not its pairs"})
            for eps in epsilons:
                blocked = eps > 0 and n >= blocked_at
                row = {"d": d, "N": count, "n": n, "method": "otfm", "ranks": 1, "epsilon": eps, "indep_sqdist": indep}
                note = _skip(last.get(eps), n, EXPONENT.get(eps, 2.0), budget, max_bytes, blocked)
                if note:
                    rows.append({**row, "seconds_per_plan": math.nan, "seconds_per_pair": math.nan,
                                 "ratio_vs_sdfm": math.nan, "pair_sqdist": math.nan, "repeats": 0, "note": note})
                    log(f"d={d} n={n} otfm eps={eps}: skipped ({note})")
                    continue

                def plan():
                    coupling = _plan_coupling(data, n, eps, blocked_from)
                    return coupling.sample(n, torch.Generator().manual_seed(seed))  # the whole plan as one batch

                seconds, calls, batch = _measure(plan, repeats)
                last[eps] = (n, seconds)
                sqdist = float((batch.x0 - batch.x1).square().sum(1).mean())
                rows.append(_plan_row(row, seconds, n, sd_per_pair, sqdist, calls, "blocked" if blocked else "", log))
                if blocked and ranks > 1:
                    text = spawned_text(_sharded_plan_rank, ranks, d, n, eps, blocked_at, seed)
                    sharded_seconds, sharded_sqdist = (float(v) for v in text.split())
                    rows.append(_plan_row({**row, "ranks": ranks}, sharded_seconds, n, sd_per_pair, sharded_sqdist, 1,
                                          f"blocked, sharded over {ranks} gloo ranks", log))
    return rows


def _plan_row(row: dict, seconds: float, n: int, sd_per_pair: float, sqdist: float, calls: int, note: str,
              log) -> dict:
    """An OT-FM cell's row from a plan's seconds, logged."""
    log(f"d={row['d']} n={n} otfm eps={row['epsilon']} ranks={row['ranks']}: {seconds:.3f} s/plan, "
        f"{seconds / n * 1e6:.1f} us/pair, {(seconds / n) / sd_per_pair:.1f}x SD-FM ({sd_per_pair * 1e6:.2f} us/pair)")
    return {**row, "seconds_per_plan": seconds, "seconds_per_pair": seconds / n,
            "ratio_vs_sdfm": (seconds / n) / sd_per_pair, "pair_sqdist": sqdist, "repeats": calls, "note": note}


def _skip(previous, n: int, exponent: float, budget: float, max_bytes: float, blocked: bool = False) -> str:
    """Why the cell (n) is skipped, or "" to run it (a ``blocked`` solve holds no n x n matrix)."""
    if not blocked and 3 * 8 * n * n > max_bytes:  # the float64 cost, the solver's copy and a plan / work array
        return f"n x n float64 working set {3 * 8 * n * n / 1e9:.1f} GB > --max-bytes"
    if previous is not None:
        predicted = previous[1] * (n / previous[0]) ** exponent
        if predicted > budget:
            return f"predicted {predicted:.0f} s > --budget {budget:g} s (t ~ n^{exponent:g} from n = {previous[0]})"
    return ""


def plot(frame, path):
    """Seconds per training pair vs n (log-log) and the pairs' mean squared distance, one column per d."""
    plt = bench_style()
    dims = sorted(frame.d.unique())
    fig, axes = plt.subplots(2, len(dims), figsize=(max(6.4, 4.6 * len(dims)), 6.4), squeeze=False)
    for col, d in enumerate(dims):
        sub = frame[frame.d == d]
        top, bottom = axes[0][col], axes[1][col]
        for (method, ranks, eps), part in sub.groupby(["method", "ranks", "epsilon"]):
            part = part.dropna(subset=["seconds_per_pair"]).sort_values("n")
            label = ("SD-FM (MIPS, B = 256)" if method == "sdfm" else f"OT-FM plan, eps = {eps:g}"
                     + (f", {ranks} ranks (per rank)" if ranks > 1 else ""))
            line, = top.plot(part.n, part.seconds_per_pair * 1e6, marker="o", label=label)
            blocked = part[part.note.fillna("").str.startswith("blocked")]
            top.scatter(blocked.n, blocked.seconds_per_pair * 1e6, s=110, facecolors="none",
                        edgecolors=line.get_color(), zorder=3)  # ringed: the blocked solve
            if method == "otfm":  # SD-FM's timing uses an unfitted potential: its pairs are not OT pairs
                bottom.plot(part.n, part.pair_sqdist, marker="o", label=label)
        bottom.axhline(float(sub.indep_sqdist.mean()), color="grey", ls="--", label="independent pairs")
        top.set(xscale="log", yscale="log", title=f"d = {d} (N = {int(sub.N.iloc[0])})", xlabel="OT batch n",
                ylabel="CPU us per training pair")
        bottom.set(xscale="log", xlabel="OT batch n", ylabel="mean |x0 - x1|^2 of the pairs")
        for ax in (top, bottom):  # the n of the grid as plain ticks
            ax.set_xticks(sorted(sub.n.unique()), [f"{n:g}" for n in sorted(sub.n.unique())], rotation=45)
            ax.minorticks_off()
        top.legend(title="ringed: blocked Sinkhorn" if sub.note.fillna("").str.startswith("blocked").any() else None)
        bottom.legend()
    fig.suptitle(f"OT-FM plan of n pairs vs SD-FM pairing, process time ({machine_note()})", fontsize=9)
    return save_figure(fig, path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 256..2048, d = 64 and 784")
    parser.add_argument("--n", default="256,512,1024,2048,4096,8192,16384")
    parser.add_argument("--dims", default="64,784")
    parser.add_argument("--epsilons", default="0,0.1", help="relative epsilons of the OT-FM plans")
    parser.add_argument("--budget", type=float, default=120.0, help="seconds a plan may be predicted to take")
    parser.add_argument("--max-bytes", type=float, default=4e9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocked-from", type=int, default=None,
                        help="n from which eps > 0 plans take the blocked Sinkhorn (default: training's, 16384)")
    parser.add_argument("--ranks", type=int, default=1, help="also solve blocked plans sharded over this many gloo ranks")
    parser.add_argument("--out-dir", default=str(BENCH_DIR))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ns = [256, 512, 1024, 2048] if args.quick else [int(v) for v in args.n.split(",")]
    rows = run([int(v) for v in args.dims.split(",")], ns, [float(v) for v in args.epsilons.split(",")],
               repeats=args.repeats, budget=args.budget, max_bytes=args.max_bytes, blocked_from=args.blocked_from,
               ranks=args.ranks)
    out = Path(args.out_dir)
    frame = write_csv(rows, out / "otfm_large_batch.csv", COLUMNS)
    plot(frame, out / "otfm_large_batch.png")
    print(f"wrote {out / 'otfm_large_batch.csv'} and {out / 'otfm_large_batch.png'}")
    return frame


if __name__ == "__main__":
    main()
