"""Job ``fit-potential --distributed``: the fit-potential job with the points sharded across ranks.

Started by ``torchrun --nproc-per-node K -m sdfm.cli fit-potential ... --distributed``: every
rank loads the data set, keeps its contiguous shard (:func:`sdfm.ot.distributed.shard_bounds`)
on its device (``cuda:LOCAL_RANK`` with NCCL, or the CPU with gloo), and runs
:func:`sdfm.ot.distributed.fit_potential_sharded`. Rank 0 alone logs to MLflow (under the key
of the one-process job: it is the same job, computed otherwise) and writes the same two files
as :func:`sdfm.jobs.potential.fit_potential_job`, atomically: the potential gathered onto it
(without the data, guarded by its fingerprint) and the JSON summary.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from sdfm.data import load_prepared
from sdfm.io import atomic_write_json
from sdfm.jobs.common import JobContext
from sdfm.jobs.potential import absolute_epsilon, checkpoint_path, problem_targets
from sdfm.ot.distributed import fit_potential_sharded, init_distributed, shard_bounds, shard_checkpoint
from sdfm.ot.potential import data_fingerprint
from sdfm.tracking import job_run

__all__ = ["fit_potential_sharded_job"]


def fit_potential_sharded_job(
    data_path: str | Path,
    dataset: str,
    epsilon_rel: float,
    settings: dict,
    out: str | Path,
    summary_out: str | Path,
    ctx: JobContext,
    seed: int = 0,
    device: str | None = None,
    conditional: dict | None = None,
    superres: dict | None = None,
) -> dict:
    """Fit on every rank of the torch.distributed world; rank 0 writes ``out`` and ``summary_out``.

    Arguments as :func:`sdfm.jobs.potential.fit_potential_job`; ``device`` picks the backend
    (see :func:`sdfm.ot.distributed.init_distributed`). Returns the summary on every rank.
    """
    device = init_distributed(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        data = load_prepared(data_path)
        y, source = problem_targets(data, dataset, conditional, superres)
        settings = dict(settings)
        reference_batch = settings.pop("reference_batch", 4096)
        eps_abs = absolute_epsilon(epsilon_rel, y, reference_batch, seed, source)
        key = {"stage": "potential", "dataset": dataset, "epsilon_rel": epsilon_rel, "settings": settings,
               "seed": seed}
        tags = {"stage": "potential", "dataset": dataset, "epsilon_rel": epsilon_rel}
        if conditional:
            key["conditional"] = conditional
            tags["beta"] = conditional["beta"]
        if superres:
            key["superres"] = superres
            tags["beta"], tags["superres_factor"] = superres["beta"], superres["factor"]
        start, stop = shard_bounds(y.shape[0], world, rank)
        checkpoint = checkpoint_path(out, {**key, "data": data_fingerprint(y)})
        tracked = (job_run(ctx.experiment, f"potential/{dataset}/eps{epsilon_rel:g}", key, tags, ctx.results_dir)
                   if rank == 0 else contextlib.nullcontext())
        with tracked as run:
            if run is not None:
                run.log_params({"epsilon_rel": epsilon_rel, "epsilon_abs": eps_abs, "n_points": y.shape[0],
                                "dim": y.shape[1], **settings,
                                **({"beta": conditional["beta"]} if conditional else {})})
                run.set_tags({"sdfm.world_size": world, "sdfm.backend": dist.get_backend()})
            began = time.perf_counter()
            callback = (lambda step, values: run.log_metrics({"chi2": values["chi2"]}, step=step)) if run else None
            potential = fit_potential_sharded(
                y[start:stop].to(device), epsilon=eps_abs, seed=seed, progress=ctx.progress and rank == 0,
                checkpoint=checkpoint, callback=callback, source=source, **settings,
            )
            seconds = time.perf_counter() - began
            history = potential.history
            count, gen = 400_000 if y.shape[0] <= 20_000 else 65_536, torch.Generator().manual_seed(seed + 1)
            x = source(count, gen) if source is not None else torch.randn(count, y.shape[1], generator=gen)
            final = potential.chi2(x)
            full = potential.gather(y=y if rank == 0 else None)
            summary = {
                "dataset": dataset, "epsilon_rel": epsilon_rel, "epsilon_abs": eps_abs, "fit_seconds": seconds,
                "steps_run": history["steps_run"], "final_chi2": final,
                "chi2_curve": {"step": history["step"], "chi2": history["chi2"]},
                "lr0": history["lr0"], "gap_scale": history["gap_scale"], "diverging": history["diverging"],
                "world_size": world, "mlflow_run_id": run.run_id if run is not None else None,
            }
            if run is not None:
                if history["diverging"]:
                    print(f"WARNING: the chi^2 of potential {out} grew from {min(history['chi2']):.4g} to "
                          f"{history['chi2'][-1]:.4g}: lower potential.lr_scale or raise potential.steps",
                          file=sys.stderr)
                run.set_tags({"sdfm.potential_diverging": str(history["diverging"]).lower()})
                run.log_metrics({"final_chi2": final, "fit_seconds": seconds})
                full.history["mlflow_run_id"] = run.run_id  # the train jobs tag their runs with it
                full.to("cpu").save(out, include_data=False)
                atomic_write_json(summary_out, summary)
                run.log_artifact(summary_out)
        dist.barrier()  # the potential is written: the checkpoints can go
        shard_checkpoint(checkpoint, rank, world).unlink(missing_ok=True)
        return summary
    finally:
        dist.destroy_process_group()
