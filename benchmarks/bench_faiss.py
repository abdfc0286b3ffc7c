"""Training-time pairing on CPU: faiss ``IndexFlatIP`` (built once) vs the torch path of ``assign``.

At training time the potential is fixed, so faiss gets its best case: the index over the keys
``[y, g]`` is built once (:meth:`sdfm.ot.mips.FaissMips.build`) and each batch of B queries is a
search. The torch path is ``SemidiscretePotential.assign`` (float32 blocks, eps = 0). Both run
with one thread and are timed by process CPU time (the machine is shared), interleaved, median
of repeats; ``ratio = faiss / torch`` (> 1: torch faster). The assignments are checked equal.

Usage: ``python benchmarks/bench_faiss.py [--quick] [--threads 1]``. Writes ``faiss.csv`` and ``faiss.png``.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import BENCH_DIR, bench_style, interleaved_medians, machine_note, save_figure, write_csv
from sdfm.ot import SemidiscretePotential
from sdfm.ot.kernel import augment_queries
from sdfm.ot.mips import FaissMips

#: (N, d) problems; d = 3072 at N = 1e4 only (1e5 x 3072 takes minutes per repeat on one core).
FULL = {"nd": [(10**4, 64), (10**4, 784), (10**4, 3072), (10**5, 64), (10**5, 784)], "batch": [64, 128, 256, 1024]}
QUICK = {"nd": [(10**4, 64)], "batch": [256]}
COLUMNS = ["n", "d", "batch", "torch_s", "faiss_s", "ratio", "agree", "threads", "clock"]


def run(grid: dict, repeats: int, log=print) -> list[dict]:
    rows = []
    for n, d in grid["nd"]:
        gen = torch.Generator().manual_seed(n + d)
        y = torch.randn(n, d, generator=gen)
        pot = SemidiscretePotential(y, -0.5 * y.double().square().sum(1).float() + torch.randn(n, generator=gen))
        searcher = FaissMips().build(pot.keys)
        for batch in grid["batch"]:
            x = torch.randn(batch, d, generator=gen)
            queries = augment_queries(x)
            agree = float((searcher(queries) == pot.assign(x, method="exact")).double().mean())
            torch_s, faiss_s = interleaved_medians([lambda: pot.assign(x, method="exact"),
                                                    lambda: searcher(queries)], repeats=repeats,
                                                   clock=time.process_time)
            row = dict(n=n, d=d, batch=batch, torch_s=torch_s, faiss_s=faiss_s, ratio=faiss_s / torch_s,
                       agree=agree, threads=torch.get_num_threads(), clock="process")
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            rows.append(row)
    return rows


def plot(frame, path) -> None:
    plt = bench_style()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for (n, d), part in frame.groupby(["n", "d"]):
        ax.plot(part["batch"], part["ratio"], "o-", label=f"N={n:g} d={d}")
    ax.axhline(1.0, color="gray", ls="--", lw=1, label="equal")
    ax.set(xscale="log", yscale="log", xlabel="queries per batch B", ylabel="faiss time / torch time",
           title=f"Pairing with a fixed potential, eps = 0\n{machine_note()}, process CPU time")
    ax.legend()
    save_figure(fig, path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss threads (process time counts all)")
    parser.add_argument("--out", default=str(BENCH_DIR / "faiss.csv"))
    args = parser.parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    frame = write_csv(run(QUICK if args.quick else FULL, args.repeats), args.out, COLUMNS)
    plot(frame, args.out.replace(".csv", ".png"))
    print(f"wrote {args.out} and its .png ({len(frame)} rows)")


if __name__ == "__main__":
    main()
