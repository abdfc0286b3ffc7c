"""Per-step time of the sharded potential fit (K gloo ranks) against the one-process fit.

The per-step time is ``(T(s2) - T(s1)) / (s2 - s1)`` for two fits of s1 and s2 steps with one
chi^2 evaluation each (at the last step), so the set-up (initial potential, gap scale, process
group) and the evaluation cancel out. Modes: one process with 1 thread, one process with K
threads, and K ranks of 1 thread each (``torch.multiprocessing.spawn``, gloo on 127.0.0.1).
Each mode is repeated; the median and the minimum are kept (on a shared machine the minimum is
the least disturbed). On a CPU the ranks share the cores a single process
would use with K threads, so expect no speed-up there: sharding is for data that does not fit one
device (and for K GPUs with NCCL), not for a CPU.

Usage: ``python benchmarks/bench_distributed.py [--n 20000] [--d 64] [--batch 1024] [--ranks 2]``.
Writes ``reports/bench/distributed.csv`` and ``distributed.png`` (``--plot-only`` redraws the plot
from the CSV).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from datetime import timedelta

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from common import BENCH_DIR, bench_style, machine_note, save_figure, write_csv
from sdfm.ot import fit_potential, relative_epsilon
from sdfm.ot.distributed import fit_potential_sharded, shard_bounds

COLUMNS = ["mode", "ranks", "threads", "n", "d", "batch", "epsilon_rel", "epsilon_abs", "step_s", "step_s_min"]


def _problem(n: int, d: int):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=gen) * (1 + torch.rand(d, generator=gen))


def _options(args, steps: int) -> dict:
    return dict(steps=steps, batch_size=args.batch, eval_every=steps, eval_batch=1024, progress=False, seed=0)


def _timed_fit(fit, y, eps: float, args, steps: int) -> float:
    start = time.perf_counter()
    fit(y, epsilon=eps, **_options(args, steps))
    return time.perf_counter() - start


def _per_step(fit, y, eps, args) -> float:
    s1, s2 = args.steps
    return (_timed_fit(fit, y, eps, args, s2) - _timed_fit(fit, y, eps, args, s1)) / (s2 - s1)


def _rank(rank: int, world: int, port: int, args, eps: float, out: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=600))
    try:
        y = _problem(args.n, args.d)
        start, stop = shard_bounds(args.n, world, rank)
        seconds = _per_step(fit_potential_sharded, y[start:stop].clone(), eps, args)
        if rank == 0:
            with open(out, "w") as handle:
                handle.write(repr(seconds))
    finally:
        dist.destroy_process_group()


def _sharded_per_step(args, eps: float) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seconds")
        mp.spawn(_rank, args=(args.ranks, port, args, eps, out), nprocs=args.ranks, join=True)
        with open(out) as handle:
            return float(handle.read())


def plot(frame: pd.DataFrame, path, note: str = "") -> None:
    """Bars of the per-step time (median, with the minimum as a tick) per mode, one panel per epsilon."""
    plt = bench_style()
    epsilons = sorted(frame.epsilon_rel.unique())
    fig, axes = plt.subplots(1, len(epsilons), figsize=(3.6 * len(epsilons), 3.2), squeeze=False)
    for ax, eps_rel in zip(axes[0], epsilons):
        rows = frame[frame.epsilon_rel == eps_rel].reset_index(drop=True)
        ms, ms_min = 1e3 * rows.step_s, 1e3 * rows.step_s_min
        ax.bar(range(len(rows)), ms, color=["#4d4d4d", "#999999", "#d62728"][: len(rows)])
        ax.scatter(range(len(rows)), ms_min, marker="_", s=200, color="k", zorder=3, label="minimum of the repeats")
        ax.set_xticks(range(len(rows)), [m.replace(", ", ",\n") for m in rows["mode"]])
        ax.set_ylabel("ms per SGD step (median)")
        ax.set_ylim(0, 1.3 * max(ms.max(), ms_min.max()))
        first = rows.iloc[0]
        ax.set_title(f"eps_rel {eps_rel:g}: N={first.n}, d={first.d}, B={first.batch}")
        ax.legend(loc="upper left")
    fig.suptitle("Sharded potential fit vs one process" + (f" ({note})" if note else ""), fontsize=9)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=(10, 40))
    parser.add_argument("--epsilons", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 0.1],
                        help="relative epsilons (x std of the cost)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot-only", action="store_true", help="redraw distributed.png from distributed.csv")
    args = parser.parse_args()
    if args.plot_only:
        plot(pd.read_csv(BENCH_DIR / "distributed.csv"), BENCH_DIR / "distributed.png")
        return
    y = _problem(args.n, args.d)
    rows = []
    for eps_rel in args.epsilons:
        x = torch.randn(4096, args.d, generator=torch.Generator().manual_seed(1))
        eps = relative_epsilon(eps_rel, x, y[:4096]) if eps_rel > 0 else 0.0
        modes = {"one process": (1, 1), f"one process, {args.ranks} threads": (1, args.ranks),
                 f"{args.ranks} gloo ranks": (args.ranks, 1)}
        times = {name: [] for name in modes}
        for _ in range(args.repeats):  # interleaved, so that load drifts hit every mode alike
            for name, (ranks, threads) in modes.items():
                if ranks == 1:
                    torch.set_num_threads(threads)
                    times[name].append(_per_step(fit_potential, y, eps, args))
                else:
                    times[name].append(_sharded_per_step(args, eps))
        for name, (ranks, threads) in modes.items():
            step = statistics.median(times[name])
            rows.append({"mode": name, "ranks": ranks, "threads": threads, "n": args.n, "d": args.d,
                         "batch": args.batch, "epsilon_rel": eps_rel, "epsilon_abs": eps, "step_s": step,
                         "step_s_min": min(times[name])})
            print(f"eps_rel {eps_rel:g}  {name:28s} {1e3 * step:8.1f} ms/step  (runs: "
                  f"{', '.join(f'{1e3 * t:.1f}' for t in times[name])})", flush=True)
    frame = write_csv(rows, BENCH_DIR / "distributed.csv", COLUMNS)
    plot(frame, BENCH_DIR / "distributed.png", machine_note())
    print(machine_note())


if __name__ == "__main__":
    main()
