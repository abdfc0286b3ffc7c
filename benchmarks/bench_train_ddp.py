"""Data-parallel training (``train.processes: K``): time per step of ``sdfm.fm.train.train`` on 1..K ranks.

Every rank runs :func:`sdfm.fm.train.train` at the same GLOBAL batch (each pairs and differentiates
``batch / K`` SD-FM pairs against a fixed potential, gradients all-reduced: :mod:`sdfm.fm.data_parallel`),
in the training precision of the grid (``bf16`` on GPUs). The time per step is the difference of
two runs of ``steps = (a, b)`` divided by ``b - a`` (start-up, model copy and Adam state cancel);
``speedup = step(1 rank) / step(K ranks)``, ``efficiency = speedup / K``. One GPU per rank (NCCL),
or gloo ranks of one thread on CPU. A section of ``bench_gpu.py`` (``--sections train_ddp``).
"""

from __future__ import annotations

import torch

from common import rank_counts, spawned_step_seconds
from sdfm.fm.couplings import make_coupling
from sdfm.ot import SemidiscretePotential
from sdfm.fm.train import TrainConfig, train

__all__ = ["train_ddp_rows"]


def _setup(grid: dict, rank: int, world: int, device: torch.device):
    """This rank's coupling (uniform images, the nearest-neighbour potential); returns the ``prepare`` of
    :func:`common.per_step_seconds`: a fresh UNet trained for the given steps at the global batch."""
    from bench_gpu import _unet

    side = grid["side"]
    gen = torch.Generator(device=device).manual_seed(0)
    data = torch.rand(grid["n"], 3 * side * side, generator=gen, device=device).mul_(2).sub_(1)
    potential = SemidiscretePotential(data, -0.5 * data.double().square().sum(dim=1).float())
    coupling = make_coupling("sdfm", data, potential=potential)

    def prepare(steps: int):
        model = _unet(grid["model"], side, device)
        config = TrainConfig(steps=steps, batch_size=grid["batch"], precision=grid["precision"], progress=False)
        return lambda: train(model, coupling, config, sample_shape=(3, side, side))

    return prepare


def train_ddp_rows(grid: dict, device: str, log=print) -> list[dict]:
    """One row per rank count (1, 2, 4, 8 and all GPUs present; 1 and 2 gloo ranks on CPU)."""
    device_type = torch.device(device).type
    rows = []
    for world in rank_counts(device_type):
        if grid["batch"] % world:
            continue
        step_s = spawned_step_seconds(_setup, world, grid, device_type, warmup=True)
        row = dict(ranks=world, n=grid["n"], d=3 * grid["side"] ** 2, batch=grid["batch"], precision=grid["precision"],
                   step_s=step_s)
        row["speedup"] = rows[0]["step_s"] / step_s if rows else 1.0
        row["efficiency"] = row["speedup"] / world
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        rows.append(row)
    return rows
