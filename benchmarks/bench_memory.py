"""Peak memory of fitting the potential vs N: it grows like N d, not like B N.

Each point runs in a fresh subprocess (torch's allocator and the BLAS pools would otherwise
carry over), which draws y ~ N(0, I) of shape (N, d) in float32, runs a few
:func:`sdfm.ot.fit_potential` steps at batch B, and reads its high-water mark ``VmHWM``
from ``/proc/self/status`` (resident set, what the OOM killer sees; tracemalloc does not see
torch's allocations). The expected footprint is

    peak ~= c0 + k N d 4 bytes + block,   block = min(B N, max(DEFAULT_BLOCK_ELEMS, r N)) * 4,

(k = 2 today: y plus the augmented keys ``[y, g]``, a copy; one score block, the solver's
:class:`sdfm.ot.kernel.Workspace` reused by every step: 256 MiB, or ``r N`` scores with
r = :func:`sdfm.ot.kernel.min_block_rows` (d + 1) = 128 rows at d = 784, 512 MiB at N = 1e6),
while a dense (B, N) score
matrix would add B N 4 bytes (4 GB at N = 1e6, B = 1024). The plot draws both lines.
``eval_batch`` is set to B so the final chi^2 evaluation costs one step. Two inits are
measured: ``voronoi`` (the SGD steps alone) and the opt-in ``multiscale``, whose
coarse-to-fine extension draws ``max(64 N / coarsen_factor, 65536)`` source samples at once
(float32 plus a float64 copy: about 12 * 8 N d bytes, 24x the data); points whose estimate
exceeds the available memory are skipped, and a child that dies is recorded with NaN.

Usage: ``python benchmarks/bench_memory.py [--quick]`` (full: d = 784 up to N = 1e6,
3.1 GB of data, about 10 minutes on 2 cores). A single point, e.g. the 24 GiB check of a few SGD
steps at N = 1e6, d = 784, B = 1024:
``python benchmarks/bench_memory.py --n 1000000 --inits voronoi --budget-gib 24``; with ``--n``
the rows measured replace those of the same (n, d, batch, init) in the existing CSV, the others
are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pandas as pd

from common import BENCH_DIR, bench_style, machine_note, save_figure, write_csv
from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS, min_block_rows

FULL = {"n": [10**3, 10**4, 10**5, 3 * 10**5, 10**6], "d": 784, "batch": [1024], "b_sweep_n": 10**5, "b_sweep": [256, 4096]}
QUICK = {"n": [10**3, 10**4, 3 * 10**4], "d": 784, "batch": [1024], "b_sweep_n": 10**4, "b_sweep": [256, 4096]}
COLUMNS = ["n", "d", "batch", "init", "steps", "baseline_mb", "data_mb", "peak_mb", "fit_s", "nd4_mb", "bn4_mb"]
INITS = ("voronoi", "multiscale")


def vm_hwm_mb() -> float:
    """High-water resident set of this process in MiB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status (Linux only)")


def child(n: int, d: int, batch: int, steps: int, init: str) -> None:
    """Run in the subprocess: print one JSON line with the memory marks."""
    import torch

    from sdfm.ot import fit_potential

    torch.manual_seed(0)
    torch.zeros(1) @ torch.zeros(1)  # load BLAS before the baseline
    baseline = vm_hwm_mb()
    y = torch.randn(n, d)
    data = vm_hwm_mb()
    start = time.perf_counter()
    fit_potential(y, steps=steps, batch_size=batch, eval_every=steps, eval_batch=batch, init=init, progress=False)
    fit_s = time.perf_counter() - start
    print(json.dumps(dict(baseline_mb=baseline, data_mb=data, peak_mb=vm_hwm_mb(), fit_s=fit_s)))


def measure(n: int, d: int, batch: int, steps: int, init: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(n), str(d), str(batch), str(steps), init]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    nan = float("nan")
    if proc.returncode == 0:
        marks = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        print(f"child n={n} init={init} failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}")
        marks = dict(baseline_mb=nan, data_mb=nan, peak_mb=nan, fit_s=nan)
    row = dict(n=n, d=d, batch=batch, init=init, steps=steps, **marks, nd4_mb=n * d * 4 / 2**20,
               bn4_mb=batch * n * 4 / 2**20)
    print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def estimate_mb(n: int, d: int, init: str) -> float:
    """Rough footprint for the skip guard: y + keys (+ the multiscale sample pass) + 1 GiB."""
    extra = 12 * max(8 * n, 65536) * d if init == "multiscale" and n >= 2048 else 0
    return (2.2 * n * d * 4 + extra) / 2**20 + 1024


def mem_available_mb() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def plot(frame, path) -> None:
    plt = bench_style()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    main = frame[(frame["batch"] == 1024) & (frame["init"] == "voronoi")].sort_values("n")
    ax.plot(main["n"], main["peak_mb"], "o-", color="C0", label="peak RSS, B=1024, init=voronoi (steps only)")
    ax.plot(main["n"], main["data_mb"], ".:", color="C0", alpha=0.6, label="RSS after drawing y")
    multi = frame[(frame["batch"] == 1024) & (frame["init"] == "multiscale")].sort_values("n")
    ax.plot(multi["n"], multi["peak_mb"], "^-", color="C3", label="peak RSS, B=1024, init=multiscale (opt-in)")
    for i, (batch, part) in enumerate(frame[frame["batch"] != 1024].groupby("batch")):
        ax.plot(part["n"], part["peak_mb"], "s", ms=7 + 3 * i, mfc="none", color=f"C{i + 1}", label=f"peak RSS, B={batch}")
    c0 = float(main["baseline_mb"].min())
    ns = main["n"].to_numpy()
    d = int(main["d"].iloc[0])
    ax.plot(ns, c0 + ns * d * 4 / 2**20, "--", color="gray", label="baseline + N d 4 B")
    ax.plot(ns, c0 + 2 * ns * d * 4 / 2**20, "-.", color="gray", label="baseline + 2 N d 4 B")
    block = np.minimum(1024 * ns, np.maximum(DEFAULT_BLOCK_ELEMS, min_block_rows(d + 1) * ns)) * 4 / 2**20
    ax.plot(ns, c0 + 2 * ns * d * 4 / 2**20 + block, "-", lw=3, alpha=0.25, color="C0",
            label="model: 2 N d 4 B + 1 score block")
    ax.plot(ns, c0 + ns * d * 4 / 2**20 + 1024 * ns * 4 / 2**20, ":", color="red", label="+ dense B N 4 B (B=1024)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("N (data points)")
    ax.set_ylabel("peak resident memory (MiB)")
    ax.set_title(f"fit_potential memory, d={d} ({machine_note()})")
    ax.legend(loc="upper left")
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N up to 3e4 only")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", default=str(BENCH_DIR / "memory.csv"))
    parser.add_argument("--n", type=float, nargs="+",
                        help="only these N (batch 1024, d of the grid); merged into --out")
    parser.add_argument("--inits", default=",".join(INITS), help="comma-separated subset of " + ",".join(INITS))
    parser.add_argument("--budget-gib", type=float, default=None, help="report whether each peak fits in this budget")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*map(int, args.child[:4]), args.child[4])
        return
    grid = QUICK if args.quick else FULL
    inits = [i for i in INITS if i in args.inits.split(",")]
    if args.n:
        points = [(int(n), grid["d"], 1024, init) for init in inits for n in args.n]
    else:
        points = [(n, grid["d"], b, init) for init in inits for n in grid["n"] for b in grid["batch"]]
        points += [(grid["b_sweep_n"], grid["d"], b, "voronoi") for b in grid["b_sweep"] if "voronoi" in inits]
    rows = []
    for n, d, batch, init in points:
        if estimate_mb(n, d, init) > mem_available_mb():
            print(f"skipped n={n} d={d} init={init}: needs ~{estimate_mb(n, d, init):.0f} MiB, "
                  f"{mem_available_mb():.0f} available")
            continue
        rows.append(measure(n, d, batch, args.steps, init))
        if args.budget_gib is not None:
            peak_gib = rows[-1]["peak_mb"] / 1024
            verdict = "fits in" if peak_gib <= args.budget_gib else "EXCEEDS"
            print(f"n={n} d={d} B={batch} init={init}: peak RSS {peak_gib:.2f} GiB {verdict} {args.budget_gib:g} GiB")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if args.n and Path(args.out).exists():  # keep the other points of the existing table
        old = pd.read_csv(args.out)
        key = ["n", "d", "batch", "init"]
        measured = set(map(tuple, frame[key].astype(str).to_numpy()))
        old = old[[tuple(r) not in measured for r in old[key].astype(str).to_numpy()]]
        frame = pd.concat([old, frame], ignore_index=True).sort_values(["init", "batch", "n"])
    frame = write_csv(frame, args.out, COLUMNS)
    plot(frame, args.out.replace(".csv", ".png"))
    print(f"wrote {args.out} and its .png ({len(frame)} rows)")


if __name__ == "__main__":
    main()
