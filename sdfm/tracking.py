"""MLflow tracking: one run per workflow job, keyed by a hash of its configuration.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<results>/mlflow.db``
with artifacts under ``<results>/mlartifacts``. A job's run carries the tag
``sdfm.run_key``, the hash of everything that defines the job (stage, dataset, method,
epsilon, seed and settings); running the job again reopens that run instead of adding one.
Every call into the store is retried with backoff, because parallel jobs writing to one
SQLite file meet "database is locked" (mlflow issue #4123).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar

__all__ = ["JobRun", "job_run", "open_client", "run_key", "tracking_uri", "with_retries"]

T = TypeVar("T")
RUN_KEY_TAG = "sdfm.run_key"


def tracking_uri(results_dir: str | Path = "results") -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the SQLite store under ``results_dir``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path(results_dir).resolve() / 'mlflow.db')}"


def artifact_location(results_dir: str | Path = "results") -> str | None:
    """Artifact root for new experiments with the default store (None: the server decides)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (Path(results_dir).resolve() / "mlartifacts").as_uri()


def open_client(results_dir: str | Path = "results"):
    """An ``MlflowClient`` on :func:`tracking_uri`.

    A new SQLite store is created (and migrated) under an exclusive file lock: two jobs that
    start together would otherwise both run the schema migration and one would fail.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(results_dir)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return MlflowClient(tracking_uri=uri)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def run_key(fields: dict) -> str:
    """Stable hash of a job's defining fields."""
    blob = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def with_retries(fn: Callable[[], T], attempts: int = 12, base_delay: float = 0.2) -> T:
    """Call ``fn``, retrying with jittered exponential backoff on store errors such as a locked SQLite file."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - MLflow wraps SQLAlchemy errors in several types
            transient = any(word in str(err).lower() for word in ("locked", "busy", "timeout", "connection", "unique"))
            if not transient or attempt == attempts - 1:
                raise
            time.sleep(base_delay * (2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


class JobRun:
    """Thin handle on an MLflow run that retries every write."""

    def __init__(self, client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict) -> None:
        existing = with_retries(lambda: self.client.get_run(self.run_id)).data.params
        fresh = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
        if fresh:
            from mlflow.entities import Param

            with_retries(lambda: self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in fresh.items()]))

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        with_retries(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def set_tags(self, tags: dict) -> None:
        from mlflow.entities import RunTag

        with_retries(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with_retries(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))


def _experiment_id(client, name: str, results_dir) -> str:
    experiment = with_retries(lambda: client.get_experiment_by_name(name))
    if experiment is not None:
        return experiment.experiment_id
    try:
        return with_retries(lambda: client.create_experiment(name, artifact_location=artifact_location(results_dir)))
    except Exception:  # noqa: BLE001 - another job created it first
        return with_retries(lambda: client.get_experiment_by_name(name)).experiment_id


@contextmanager
def job_run(experiment: str, run_name: str, key_fields: dict, tags: dict | None = None, results_dir="results"):
    """Open (or reopen) the run of one job; mark it FINISHED on success and FAILED on error.

    Args:
        experiment: MLflow experiment name (one per config).
        run_name: human-readable name shown in the UI.
        key_fields: the fields that define the job; their hash keys the run.
        tags: extra tags (dataset, method, stage, parent potential run...).
        results_dir: where the default SQLite store lives.
    """
    client = open_client(results_dir)
    experiment_id = _experiment_id(client, experiment, results_dir)
    key = run_key(key_fields)
    query = f"tags.`{RUN_KEY_TAG}` = '{key}'"
    found = with_retries(lambda: client.search_runs([experiment_id], filter_string=query, max_results=1))
    if found:
        run_id = found[0].info.run_id
        with_retries(lambda: client.update_run(run_id, status="RUNNING"))
    else:
        # Tag values must be strings: a tracking server (REST store) rejects anything else.
        all_tags = {k: str(v) for k, v in {RUN_KEY_TAG: key, "mlflow.runName": run_name, **(tags or {})}.items()}
        run_id = with_retries(lambda: client.create_run(experiment_id, tags=all_tags, run_name=run_name)).info.run_id
    handle = JobRun(client, run_id)
    if tags:
        handle.set_tags(tags)
    try:
        yield handle
    except BaseException:
        with_retries(lambda: client.set_terminated(run_id, status="FAILED"))
        raise
    with_retries(lambda: client.set_terminated(run_id, status="FINISHED"))
