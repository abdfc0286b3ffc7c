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
whose potential is unfitted): the plans' pairs get closer as n grows. A cell predicted from the previous n (exponent 3 exact, 2 Sinkhorn) to take
more than ``--budget`` seconds, or whose n x n float64 cost would pass ``--max-bytes``, is skipped
with the reason in ``note``.

    python benchmarks/bench_otfm_large_batch.py [--quick] [--n 256,...,16384] [--dims 64,784] [--budget 120]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

from common import BENCH_DIR, bench_style, machine_note, save_figure, timed, write_csv

COLUMNS = ["d", "N", "n", "method", "epsilon", "seconds_per_plan", "seconds_per_pair", "ratio_vs_sdfm",
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


def run(dims, ns, epsilons=(0.0, 0.1), repeats=3, budget=120.0, max_bytes=4e9, seed=0, log=print) -> list[dict]:
    """Every (d, n, method, eps) cell as a row of :data:`COLUMNS`."""
    import torch

    from sdfm.fm.couplings import PlanOTCoupling
    from sdfm.ot import SemidiscretePotential

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
            rows.append({"d": d, "N": count, "n": n, "method": "sdfm", "epsilon": 0.0, "seconds_per_plan": sd_seconds,
                         "seconds_per_pair": sd_per_pair, "ratio_vs_sdfm": 1.0, "pair_sqdist": math.nan,
                         "indep_sqdist": indep, "repeats": sd_repeats,
                         "note": "unfitted potential (g = 0): the time of a fitted one's MIPS, not its pairs"})
            for eps in epsilons:
                row = {"d": d, "N": count, "n": n, "method": "otfm", "epsilon": eps, "indep_sqdist": indep}
                note = _skip(last.get(eps), n, EXPONENT.get(eps, 2.0), budget, max_bytes)
                if note:
                    rows.append({**row, "seconds_per_plan": math.nan, "seconds_per_pair": math.nan,
                                 "ratio_vs_sdfm": math.nan, "pair_sqdist": math.nan, "repeats": 0, "note": note})
                    log(f"d={d} n={n} otfm eps={eps}: skipped ({note})")
                    continue

                def plan():
                    coupling = PlanOTCoupling(data, ot_batch_size=n, epsilon_rel=eps)
                    return coupling.sample(n, torch.Generator().manual_seed(seed))  # the whole plan as one batch

                seconds, calls, batch = _measure(plan, repeats)
                last[eps] = (n, seconds)
                rows.append({**row, "seconds_per_plan": seconds, "seconds_per_pair": seconds / n,
                             "ratio_vs_sdfm": (seconds / n) / sd_per_pair,
                             "pair_sqdist": float((batch.x0 - batch.x1).square().sum(1).mean()), "repeats": calls,
                             "note": ""})
                log(f"d={d} n={n} otfm eps={eps}: {seconds:.3f} s/plan, {seconds / n * 1e6:.1f} us/pair, "
                    f"{(seconds / n) / sd_per_pair:.1f}x SD-FM ({sd_per_pair * 1e6:.2f} us/pair)")
    return rows


def _skip(previous, n: int, exponent: float, budget: float, max_bytes: float) -> str:
    """Why the cell (n) is skipped, or "" to run it."""
    if 3 * 8 * n * n > max_bytes:  # the float64 cost, the solver's copy and a plan / work array
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
    fig, axes = plt.subplots(2, len(dims), figsize=(4.6 * len(dims), 6.4), squeeze=False)
    for col, d in enumerate(dims):
        sub = frame[frame.d == d]
        top, bottom = axes[0][col], axes[1][col]
        for (method, eps), part in sub.groupby(["method", "epsilon"]):
            part = part.dropna(subset=["seconds_per_pair"]).sort_values("n")
            label = "SD-FM (MIPS, B = 256)" if method == "sdfm" else f"OT-FM plan, eps = {eps:g}"
            top.plot(part.n, part.seconds_per_pair * 1e6, marker="o", label=label)
            if method == "otfm":  # SD-FM's timing uses an unfitted potential: its pairs are not OT pairs
                bottom.plot(part.n, part.pair_sqdist, marker="o", label=label)
        bottom.axhline(float(sub.indep_sqdist.mean()), color="grey", ls="--", label="independent pairs")
        top.set(xscale="log", yscale="log", title=f"d = {d} (N = {int(sub.N.iloc[0])})", xlabel="OT batch n",
                ylabel="CPU us per training pair")
        bottom.set(xscale="log", xlabel="OT batch n", ylabel="mean |x0 - x1|^2 of the pairs")
        for ax in (top, bottom):  # the n of the grid as plain ticks
            ax.set_xticks(sorted(sub.n.unique()), [f"{n:g}" for n in sorted(sub.n.unique())], rotation=45)
            ax.minorticks_off()
        top.legend()
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
    parser.add_argument("--out-dir", default=str(BENCH_DIR))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    ns = [256, 512, 1024, 2048] if args.quick else [int(v) for v in args.n.split(",")]
    rows = run([int(v) for v in args.dims.split(",")], ns, [float(v) for v in args.epsilons.split(",")],
               repeats=args.repeats, budget=args.budget, max_bytes=args.max_bytes)
    from pathlib import Path

    out = Path(args.out_dir)
    frame = write_csv(rows, out / "otfm_large_batch.csv", COLUMNS)
    plot(frame, out / "otfm_large_batch.png")
    print(f"wrote {out / 'otfm_large_batch.csv'} and {out / 'otfm_large_batch.png'}")
    return frame


if __name__ == "__main__":
    main()
