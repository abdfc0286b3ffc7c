"""Job ``evaluate``: sample a trained model at each (solver, NFE) and score it against held-out data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from sdfm.data import load_prepared
from sdfm.io import atomic_path
from sdfm.jobs.common import JobContext, pick_device
from sdfm.jobs.train import load_trained
from sdfm.metrics import energy_distance, path_curvature, wasserstein2
from sdfm.sampling import generate, integrate
from sdfm.tracking import job_run

__all__ = ["evaluate_run", "METRIC_COLUMNS"]

#: Columns of the tidy results table (DESIGN.md, Artifacts).
METRIC_COLUMNS = ["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe", "metric", "value"]


def _score(metric: str, samples: torch.Tensor, reference: torch.Tensor, seed: int) -> float:
    flat_s, flat_r = samples.flatten(1), reference.flatten(1)
    if metric == "w2":
        return wasserstein2(flat_s, flat_r, seed=seed)
    if metric == "energy":
        return energy_distance(flat_s, flat_r, seed=seed)
    raise ValueError(f"unknown sample metric {metric!r}")


def evaluate_run(
    data_path: str | Path,
    model_path: str | Path,
    dataset: str,
    method: str,
    epsilon_rel: float,
    seed: int,
    batch_size: int,
    settings: dict,
    out: str | Path,
    ctx: JobContext,
    device: str | None = None,
) -> pd.DataFrame:
    """Write the tidy rows (one per solver, NFE and metric) of one trained run to ``out`` (CSV)."""
    device = pick_device(device)
    data = load_prepared(data_path)
    model, _ = load_trained(model_path, device)
    reference = data.test
    n = min(settings["n_samples"], reference.shape[0]) if settings["n_samples"] else reference.shape[0]
    rows = []
    key = {"stage": "evaluate", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
           "settings": settings, "model": str(Path(model_path).resolve())}
    tags = {"stage": "evaluate", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed}
    name = f"evaluate/{dataset}/{method}/eps{epsilon_rel:g}/seed{seed}"
    with job_run(ctx.experiment, name, key, tags, ctx.results_dir) as run:
        run.log_params({"n_samples": n, "solvers": ",".join(settings["solvers"]),
                        "nfe": ",".join(map(str, settings["nfe"]))})
        for solver in settings["solvers"]:
            for nfe in ([None] if solver == "dopri5" else settings["nfe"]):
                samples, used = generate(model, n, data.sample_shape, solver=solver, nfe=nfe, seed=seed, device=device)
                for metric in settings["metrics"]:
                    if metric == "curvature":
                        value = _curvature(model, data.sample_shape, solver, nfe, seed, device)
                    else:
                        value = _score(metric, samples, reference[:n], seed)
                    rows.append([dataset, method, epsilon_rel, batch_size, seed, solver, used, metric, value])
                    run.log_metrics({f"{metric}_{solver}": value}, step=used)
        table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
        run.log_artifact(out)
    return table


def _curvature(model, sample_shape, solver, nfe, seed, device, n: int = 512) -> float:
    gen = torch.Generator().manual_seed(seed + 7)
    x0 = torch.randn(n, *sample_shape, generator=gen).to(device)
    with torch.no_grad():
        result = integrate(lambda x, t: model(x, t), x0, solver="euler", nfe=32, return_trajectory=True)
    return path_curvature(result.trajectory.cpu())
