"""Shared helpers of the benchmarks: timing, tidy CSV output, one plot style.

Timing follows the usual rules for noisy shared machines: warm-up calls first (allocator,
BLAS thread pools, lazy imports), then the median of repeats; functions timed side by side
are interleaved (A B A B ...) so that drifts in machine load hit both alike. CUDA work is
synchronised before every clock read.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "reports" / "bench"
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

__all__ = [
    "BENCH_DIR",
    "ROOT",
    "bench_style",
    "budgeted_medians",
    "extrapolate",
    "fit_power_law",
    "interleaved_medians",
    "joined_rank",
    "machine_note",
    "per_step_seconds",
    "rank_counts",
    "save_figure",
    "spawned_seconds",
    "spawned_step_seconds",
    "sync",
    "timed",
    "write_csv",
]


def sync(device) -> None:
    """Wait for queued CUDA kernels (no-op on CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device="cpu", clock: Callable[[], float] = time.perf_counter) -> float:
    """Seconds of one call of ``fn`` by ``clock`` (default wall clock), synchronised on CUDA.

    ``clock=time.process_time`` counts this process's CPU time (user + system, all threads):
    on a CPU shared with other jobs it leaves out the time spent waiting for a core.
    """
    sync(device)
    start = clock()
    fn()
    sync(device)
    return clock() - start


def interleaved_medians(fns: Sequence[Callable[[], object]], repeats: int = 5, warmup: int = 1, device="cpu",
                        clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Median seconds per call of each function, the calls interleaved round-robin.

    Args:
        fns: the functions to compare (same process, same data).
        repeats: timed rounds; each round calls every function once.
        warmup: untimed rounds first.
        device: synchronised before each clock read when it is CUDA.
        clock: see :func:`timed`.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            out.append(timed(fn, device, clock))
    return [statistics.median(s) for s in samples]


def budgeted_medians(
    fns: Sequence[Callable[[], object]],
    first: Sequence[float],
    repeats: int = 5,
    budget: float = math.inf,
    device="cpu",
    min_seconds: float = 0.0,
    max_rounds: int = 100,
) -> tuple[list[float], int]:
    """Interleaved medians when they fit a time budget, else the first (warm-up) call's times.

    For cells that take from milliseconds to minutes. ``first`` holds the seconds of one call
    of each function already made (the warm-up). When one round costs more than a third of
    ``budget`` those times are the measurement (one round: a call that long is past any
    warm-up effect). Otherwise interleaved rounds are timed and their medians returned: at
    least ``repeats``, more for short calls until the rounds fill ``min_seconds`` (at most
    ``max_rounds``), never more than ``budget`` allows.

    Returns:
        (seconds per call of each function, rounds behind them).
    """
    round_s = max(sum(first), 1e-9)
    if round_s > budget / 3:
        return list(first), 1
    rounds = min(max(repeats, math.ceil(min_seconds / round_s)), max_rounds, int(budget / round_s))
    rounds = max(1, rounds)
    return interleaved_medians(fns, repeats=rounds, warmup=0, device=device), rounds


def fit_power_law(x: Sequence[float], t: Sequence[float]) -> tuple[float, float]:
    """Least-squares fit of ``t = a x^b`` in log-log; ``(nan, nan)`` with fewer than 2 usable points.

    Points with a non-finite or non-positive ``x`` or ``t`` (skipped or failed cells) are left out.
    """
    import numpy as np

    x, t = np.asarray(x, dtype=float), np.asarray(t, dtype=float)
    keep = np.isfinite(x) & np.isfinite(t) & (x > 0) & (t > 0)
    if len(np.unique(x[keep])) < 2:
        return math.nan, math.nan
    b, log_a = np.polyfit(np.log(x[keep]), np.log(t[keep]), 1)
    return float(math.exp(log_a)), float(b)


def extrapolate(x: Sequence[float], t: Sequence[float], at: float, exponent: float) -> float:
    """Predicted ``t`` at ``at`` from the largest measured point, growing as ``x^b``.

    ``b`` is the fitted exponent of the measured points, never below ``exponent`` (small sizes
    are dominated by fixed costs, so their slope under-predicts): a conservative estimate, used
    to skip cells that would run past a budget.
    """
    pairs = [(xi, ti) for xi, ti in zip(x, t) if math.isfinite(ti) and ti > 0]
    if not pairs:
        return 0.0
    _, b = fit_power_law(*zip(*pairs)) if len(pairs) >= 2 else (math.nan, math.nan)
    b = max(b, exponent) if math.isfinite(b) else exponent
    x_last, t_last = max(pairs)
    return t_last * (at / x_last) ** b


def rank_counts(device_type: str) -> list[int]:
    """The process counts a scaling benchmark runs: 1, 2, 4, 8 and all GPUs present (1 and 2 gloo ranks on CPU)."""
    import torch

    most = torch.cuda.device_count() if device_type == "cuda" else 2
    return sorted({1, 2, 4, 8, most} & set(range(1, most + 1)))


def spawned_seconds(worker: Callable, world: int, *args) -> float:
    """Run ``worker(rank, world, port, *args, out)`` on ``world`` spawned ranks (a free local port for the
    process group) and return the seconds rank 0 wrote to ``out``."""
    return float(spawned_text(worker, world, *args))


def spawned_text(worker: Callable, world: int, *args) -> str:
    """As :func:`spawned_seconds`, the text rank 0 wrote to ``out`` (e.g. several numbers)."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "seconds")
        mp.spawn(worker, args=(world, port, *args, out), nprocs=world, join=True)
        return Path(out).read_text()


@contextmanager
def joined_rank(rank: int, world: int, port: int, device_type: str):
    """Join this spawned rank to the process group on 127.0.0.1:``port`` and yield its device.

    One GPU per rank under NCCL (``cuda:rank``), or a gloo rank of one CPU thread; the group is
    destroyed on the way out.
    """
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world,
                            timeout=timedelta(seconds=600))
    try:
        yield torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    finally:
        dist.destroy_process_group()


def per_step_seconds(prepare: Callable[[int], Callable[[], object]], steps: tuple[int, int], device,
                     warmup: bool = False) -> float:
    """Seconds per step of a run on every rank, ``(t_b - t_a) / (b - a)`` for ``steps = (a, b)``.

    ``prepare(s)`` sets up a run of ``s`` steps (untimed: a fresh model, its config) and returns the
    call to time; each call starts after a barrier of all ranks and ends synchronised, so start-up
    costs common to both runs cancel. ``warmup``: a first run of ``a`` steps whose time is not used
    (allocator, autocast, thread pools).
    """
    import torch.distributed as dist

    times = []
    for count in ((steps[0],) if warmup else ()) + tuple(steps):
        run = prepare(count)
        dist.barrier()
        times.append(timed(run, device))
    return (times[-1] - times[-2]) / (steps[1] - steps[0])


def _step_seconds_rank(rank: int, world: int, port: int, setup: Callable, grid: dict, device_type: str,
                       warmup: bool, out: str) -> None:
    with joined_rank(rank, world, port, device_type) as device:
        seconds = per_step_seconds(setup(grid, rank, world, device), grid["steps"], device, warmup)
        if rank == 0:
            Path(out).write_text(repr(seconds))


def spawned_step_seconds(setup: Callable, world: int, grid: dict, device_type: str, warmup: bool = False) -> float:
    """Seconds per step on ``world`` spawned ranks (:func:`joined_rank`, :func:`per_step_seconds`), as rank 0 times it.

    ``setup(grid, rank, world, device)`` builds a rank's data and returns its ``prepare`` (see
    :func:`per_step_seconds`); it must be a module-level function (the spawned ranks import it).
    """
    return spawned_seconds(_step_seconds_rank, world, setup, grid, device_type, warmup)


def write_csv(rows: list[dict] | pd.DataFrame, path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Write tidy rows atomically (temp file, then rename) and return them as a DataFrame."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=columns)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)
    return frame


def bench_style():
    """Apply the benchmarks' matplotlib style (Agg backend, grid, compact fonts); return pyplot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 9,
            "legend.fontsize": 7,
            "legend.frameon": False,
        }
    )
    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Save a figure atomically as PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    plt.close(fig)
    return path


def machine_note(device="cpu") -> str:
    """One line naming the hardware, written under every plot."""
    import torch

    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}"
