"""Job ``prepare-data``: build a data set from its source and cache it as a hashed ``.npz``."""

from __future__ import annotations

from pathlib import Path

from sdfm.data import load_prepared, prepare_dataset
from sdfm.runtime import JobContext
from sdfm.tracking import job_run

__all__ = ["prepare_data_job"]


def prepare_data_job(dataset: str, source: str, options: dict, out: str | Path, ctx: JobContext) -> str:
    """Write the cache of ``dataset`` to ``out``; return its content hash."""
    key = {"stage": "prepare", "dataset": dataset, "source": source, "options": options}
    with job_run(ctx.experiment, f"prepare/{dataset}", key, {"stage": "prepare", "dataset": dataset},
                 ctx.results_dir) as run:
        digest = prepare_dataset(source, out, **options)
        data = load_prepared(out)
        run.log_params({"source": source, **{f"option.{k}": v for k, v in options.items()}})
        run.set_tags({"data_hash": digest})
        run.log_data(out)
        run.log_metrics({"n_train": data.train.shape[0], "n_test": data.test.shape[0], "dim": data.dim})
    return digest
