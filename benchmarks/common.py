"""Shared helpers of the benchmarks: timing, tidy CSV output, one plot style.

Timing follows the usual rules for noisy shared machines: warm-up calls first (allocator,
BLAS thread pools, lazy imports), then the median of repeats; functions timed side by side
are interleaved (A B A B ...) so that drifts in machine load hit both alike. CUDA work is
synchronised before every clock read.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
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
    "interleaved_medians",
    "machine_note",
    "save_figure",
    "sync",
    "timed",
    "write_csv",
]


def sync(device) -> None:
    """Wait for queued CUDA kernels (no-op on CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device="cpu") -> float:
    """Wall-clock seconds of one call of ``fn``, synchronised on CUDA."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def interleaved_medians(fns: Sequence[Callable[[], object]], repeats: int = 5, warmup: int = 1, device="cpu") -> list[float]:
    """Median seconds per call of each function, the calls interleaved round-robin.

    Args:
        fns: the functions to compare (same process, same data).
        repeats: timed rounds; each round calls every function once.
        warmup: untimed rounds first.
        device: synchronised before each clock read when it is CUDA.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, samples):
            out.append(timed(fn, device))
    return [statistics.median(s) for s in samples]


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
