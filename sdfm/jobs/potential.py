"""Job ``fit-potential``: fit the semidiscrete potential of one (data set, relative epsilon)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from sdfm.data import load_prepared
from sdfm.io import atomic_write_json
from sdfm.jobs.common import JobContext, pick_device
from sdfm.ot import fit_potential, relative_epsilon
from sdfm.tracking import job_run

__all__ = ["fit_potential_job", "absolute_epsilon"]


def absolute_epsilon(epsilon_rel: float, y: torch.Tensor, reference_batch: int, seed: int = 0) -> float:
    """``epsilon_rel * std(C)`` for ``C = -<x, y>`` on a seeded reference batch of noise and data."""
    if epsilon_rel == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    n = min(reference_batch, y.shape[0])
    rows = torch.randperm(y.shape[0], generator=gen)[:n]
    x = torch.randn(n, y.shape[1], generator=gen, dtype=y.dtype)
    return relative_epsilon(epsilon_rel, x, y[rows].cpu())


def fit_potential_job(
    data_path: str | Path,
    dataset: str,
    epsilon_rel: float,
    settings: dict,
    out: str | Path,
    summary_out: str | Path,
    ctx: JobContext,
    seed: int = 0,
    device: str | None = None,
) -> dict:
    """Fit, save the potential (without its data, guarded by a fingerprint) and a JSON summary."""
    data = load_prepared(data_path)
    y = data.flat_train()
    settings = dict(settings)
    reference_batch = settings.pop("reference_batch", 4096)
    eps_abs = absolute_epsilon(epsilon_rel, y, reference_batch, seed)
    key = {"stage": "potential", "dataset": dataset, "epsilon_rel": epsilon_rel, "settings": settings, "seed": seed}
    tags = {"stage": "potential", "dataset": dataset, "epsilon_rel": epsilon_rel}
    with job_run(ctx.experiment, f"potential/{dataset}/eps{epsilon_rel:g}", key, tags, ctx.results_dir) as run:
        run.log_params({"epsilon_rel": epsilon_rel, "epsilon_abs": eps_abs, "n_points": y.shape[0],
                        "dim": y.shape[1], **settings})
        start = time.perf_counter()
        potential = fit_potential(
            y.to(pick_device(device)), epsilon=eps_abs, seed=seed, progress=ctx.progress,
            callback=lambda step, values: run.log_metrics({"chi2": values["chi2"]}, step=step), **settings,
        )
        seconds = time.perf_counter() - start
        final = potential.chi2(torch.randn(400_000 if y.shape[0] <= 20_000 else 65_536, y.shape[1],
                                           generator=torch.Generator().manual_seed(seed + 1)))
        summary = {
            "dataset": dataset, "epsilon_rel": epsilon_rel, "epsilon_abs": eps_abs, "fit_seconds": seconds,
            "steps_run": potential.history["steps_run"], "final_chi2": final,
            "chi2_curve": {"step": potential.history["step"], "chi2": potential.history["chi2"]},
            "lr0": potential.history["lr0"], "gap_scale": potential.history["gap_scale"], "mlflow_run_id": run.run_id,
        }
        run.log_metrics({"final_chi2": final, "fit_seconds": seconds})
        potential.to("cpu").save(out, include_data=False)
        atomic_write_json(summary_out, summary)
        run.log_artifact(summary_out)
    return summary
