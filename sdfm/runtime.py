"""Helpers shared by the jobs: the job context (tracking settings) and thread setup."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["JobContext", "setup_threads", "pick_device"]


@dataclass(frozen=True)
class JobContext:
    """What every job needs besides its own settings: where results live and how runs are named."""

    experiment: str = "sdfm"
    results_dir: str = "results"
    progress: bool = True
    log_model: bool = False  # log the trained model with mlflow.pytorch (config: mlflow.log_model)


def setup_threads(threads: int | None) -> None:
    """Use the cores Snakemake gave the job (``threads:``), not every core of the host."""
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def pick_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
