"""One SGD step of the semidiscrete solver vs a bare ``x @ y.T`` matmul of the same shape.

A step of :class:`sdfm.ot.SemidiscreteSolver` draws B source samples, reduces the (B, N)
score matrix ``<x_i, y_j> + g_j`` without holding it (:func:`sdfm.ot.kernel.reduce_scores`:
max/argmax + bincount at eps = 0, logsumexp + softmax column sums of pi at eps > 0)
and applies the O(N) update (Nesterov momentum, recentring, key refresh, EMA). Its FLOPs are
those of the matmul, 2 B N d, so ``ratio = step_s / matmul_s`` measures the overhead of
everything else; targets: <= 1.3 at eps = 0, <= 2.0 at eps > 0 (drawn on the plot). At
eps = 0 the step is also timed with the faiss MIPS backend (index rebuilt per step).

Both are timed in one process, interleaved, median of repeats. The matmul writes into a
preallocated (B, N) buffer. Shapes whose estimated footprint (y, keys, matmul output, faiss
copy) exceeds ``--max-bytes`` are skipped and listed: N = 1e6, d = 3072 (12 GB of y alone)
is skipped on CPU by default. epsilon is relative (x std of the scores of a reference batch;
0.01 and 0.1 as in the paper), its absolute value in ``epsilon_abs``.

The step keeps one :class:`sdfm.ot.kernel.Workspace` across calls, as the solver does.
``--n/--d/--batch/--epsilon`` pick a sub-grid, ``--append`` merges the rows into an existing
CSV (same shape and backend: replaced) so a large grid can be run in pieces.

Usage: ``python benchmarks/bench_kernel.py [--quick] [--device cuda] [--max-bytes 12e9] [--threads K]
[--n 1e4 1e5] [--d 64 784] [--batch 256] [--epsilon 0 0.1] [--repeats R] [--clock process] [--append]``.
On a CPU shared with other jobs use ``--threads 1 --clock process`` (CPU time of the one thread).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import pandas as pd
import torch

from common import BENCH_DIR, bench_style, interleaved_medians, machine_note, save_figure, write_csv
from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS, Workspace, augment_keys, augment_queries, min_block_rows, reduce_scores
from sdfm.ot.mips import FaissMips
from sdfm.ot.solver import initial_potential

FULL = {"n": [10**4, 10**5, 10**6], "d": [64, 784, 3072], "batch": [256, 1024], "epsilon": [0.0, 0.01, 0.1]}
QUICK = {"n": [10**4, 10**5], "d": [64, 784], "batch": [256], "epsilon": [0.0, 0.01, 0.1]}
COLUMNS = ["n", "d", "batch", "epsilon", "backend", "step_s", "matmul_s", "ratio", "epsilon_abs", "threads", "repeats", "clock"]
#: ``process``: this process's CPU time (on a shared CPU it leaves out waiting for a core; with
#: one thread it is the single-core time). ``wall``: elapsed time (the only one for CUDA).
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
KEY = ["n", "d", "batch", "epsilon", "backend"]


class StepState:
    """The solver's per-step state for one shape (same update rule as ``SemidiscreteSolver``)."""

    def __init__(self, y: torch.Tensor, epsilon_rel: float, batch: int, backend: str, seed: int = 0,
                 fused: bool | None = None):
        n, d = y.shape
        self.fused = fused  # reduce_scores' path: None (default for the device), fused Triton or torch
        self.y, self.batch, self.backend = y, batch, backend
        self.gen = torch.Generator(device=y.device).manual_seed(seed)
        self.b = torch.full((n,), 1.0 / n, dtype=torch.float64, device=y.device)
        self.log_b = self.b.log()
        self.g = initial_potential(y, "voronoi")  # -|y|^2 / 2 in float64, in row chunks
        ref = self.sample(min(batch, 256))
        self.epsilon = float(epsilon_rel * (ref @ y[:4096].T).std()) if epsilon_rel > 0 else 0.0
        self.keys = augment_keys(y, self.g, self.epsilon, self.log_b)
        self.velocity = torch.zeros_like(self.g)
        self.g_avg = self.g.clone()
        self.lr = 0.05 * n
        self.mips = FaissMips() if backend == "faiss" else None
        self.workspace = Workspace()

    def sample(self, count: int) -> torch.Tensor:
        return torch.randn(count, self.y.shape[1], generator=self.gen, device=self.y.device, dtype=self.y.dtype)

    def step(self) -> None:
        queries = augment_queries(self.sample(self.batch))
        if self.mips is not None:
            index = self.mips.search(queries, self.keys).to(self.y.device)
            mass = torch.bincount(index, minlength=self.y.shape[0]).to(torch.float64)
        else:
            mass = reduce_scores(queries, self.keys, self.epsilon, need_mass_sq=False, block_elems=DEFAULT_BLOCK_ELEMS,
                                 workspace=self.workspace, fused=self.fused).mass
        grad = self.b - mass / self.batch
        self.velocity.mul_(0.9).add_(grad)
        self.g += self.lr * (grad + 0.9 * self.velocity)
        self.g -= (self.b * self.g).sum()
        shift = self.g + self.epsilon * self.log_b if self.epsilon > 0 else self.g
        self.keys[:, -1] = shift.to(self.keys.dtype)
        self.g_avg.mul_(0.999).add_(self.g, alpha=0.001)


def footprint(n: int, d: int, batch: int, backend: str) -> int:
    """Bytes held at once: y, keys, the matmul output, the score block, a faiss copy of the keys."""
    total = 4 * (n * d + n * (d + 1) + batch * n + min(batch * n, max(DEFAULT_BLOCK_ELEMS, min_block_rows(d + 1) * n)))
    return total + (4 * n * (d + 1) if backend == "faiss" else 0)


def run(grid: dict, device: str, max_bytes: float, repeats: int, faiss: bool, clock: str = "wall") -> tuple[list[dict], list[str]]:
    rows, skipped = [], []
    for n, d in itertools.product(grid["n"], grid["d"]):
        shapes = [(bt, e) for bt in grid["batch"] for e in grid["epsilon"]]
        if all(footprint(n, d, bt, "torch") > max_bytes for bt, _ in shapes):
            skipped.append(f"n={n} d={d}: y alone {4 * n * d / 1e9:.1f} GB")
            continue
        y = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d)).to(device)
        for batch, eps in shapes:
            backends = ["torch"] + (["faiss"] if faiss and eps == 0 else [])
            for backend in backends:
                if footprint(n, d, batch, backend) > max_bytes:
                    skipped.append(f"n={n} d={d} B={batch} {backend}: {footprint(n, d, batch, backend) / 1e9:.1f} GB")
                    continue
                state = StepState(y, eps, batch, backend)
                x = state.sample(batch)
                out = torch.empty(batch, n, device=device, dtype=y.dtype)
                step_s, matmul_s = interleaved_medians(
                    [state.step, lambda: torch.matmul(x, y.T, out=out)], repeats=repeats, device=device,
                    clock=CLOCKS[clock],
                )
                row = dict(n=n, d=d, batch=batch, epsilon=eps, backend=backend, step_s=step_s,
                           matmul_s=matmul_s, ratio=step_s / matmul_s, epsilon_abs=state.epsilon,
                           threads=torch.get_num_threads(), repeats=repeats, clock=clock)
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
                rows.append(row)
                del state, out
        del y
    return rows, skipped


def plot(frame, path, device: str) -> None:
    """Ratio vs N: colour = (d, B), line style = eps, marker = backend; targets dotted."""
    plt = bench_style()
    from matplotlib.ticker import FixedLocator, NullLocator

    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    shapes = sorted(set(zip(frame["d"], frame["batch"])))
    styles = {eps: ls for eps, ls in zip(sorted(frame["epsilon"].unique()), ["-", "--", "-.", ":"])}
    for (d, batch, eps, backend), part in frame.groupby(["d", "batch", "epsilon", "backend"]):
        part = part.sort_values("n")
        ax.plot(part["n"], part["ratio"], styles[eps], marker="o" if backend == "torch" else "s",
                color=f"C{shapes.index((d, batch))}", label=f"d={d} B={batch} eps={eps:g} {backend}")
    ax.axhline(1.3, color="green", lw=1, ls=":", label="target eps=0 (1.3)")
    ax.axhline(2.0, color="red", lw=1, ls=":", label="target eps>0 (2.0)")
    ax.set(xscale="log", yscale="log", xlabel="N (data points)", ylabel="SGD step time / matmul time")
    ax.yaxis.set_major_locator(FixedLocator([1, 1.3, 2, 3, 5, 10, 20, 50, 100]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter("{x:g}")
    clock = ", process CPU time" if "clock" in frame and (frame["clock"] == "process").all() else ""
    ax.set_title(f"SGD step vs bare x @ y.T (eps relative to std C)\n{machine_note(device)}{clock}")
    ax.legend(ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid for a 2-core CPU")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-bytes", type=float, default=None, help="skip shapes above this footprint")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss backend rows")
    parser.add_argument("--out", default=str(BENCH_DIR / "kernel.csv"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--n", type=float, nargs="+", default=None, help="N values (default: the grid's)")
    parser.add_argument("--d", type=int, nargs="+", default=None, help="d values (default: the grid's)")
    parser.add_argument("--batch", type=int, nargs="+", default=None, help="B values (default: the grid's)")
    parser.add_argument("--epsilon", type=float, nargs="+", default=None, help="relative eps (default: the grid's)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall, or process CPU time (shared CPU, with --threads 1)")
    parser.add_argument("--append", action="store_true", help="merge into an existing --out (same shape replaced)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.max_bytes is None:
        args.max_bytes = 0.8 * torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 12e9
    repeats = args.repeats or (3 if args.quick else 5)
    # faiss here is faiss-cpu: on CUDA it would time host copies, not the GPU index
    faiss = not args.no_faiss and device.type == "cpu"
    grid = dict(QUICK if args.quick else FULL)
    for key, value in (("n", args.n), ("d", args.d), ("batch", args.batch), ("epsilon", args.epsilon)):
        if value is not None:
            grid[key] = [int(v) for v in value] if key == "n" else value
    rows, skipped = run(grid, str(device), args.max_bytes, repeats, faiss, args.clock)
    for line in skipped:
        print(f"skipped (over --max-bytes {args.max_bytes:.3g}): {line}")
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if args.append and Path(args.out).exists():
        old = pd.read_csv(args.out)
        keep = ~old.set_index(KEY).index.isin(frame.set_index(KEY).index)
        frame = pd.concat([old[keep], frame], ignore_index=True).sort_values(KEY, ignore_index=True)
    frame = write_csv(frame.reindex(columns=COLUMNS), args.out)
    plot(frame, args.out.replace(".csv", ".png"), str(device))
    print(f"wrote {args.out} and its .png ({len(frame)} rows)")


if __name__ == "__main__":
    main()
