"""MLflow tracking: one run per workflow job, keyed by a hash of its configuration.

The tracking URI is ``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<results>/mlflow.db``
with artifacts under ``<results>/mlartifacts``. A job's run carries the tag
``sdfm.run_key``, the hash of everything that defines the job (stage, dataset, method,
epsilon, seed and settings); running the job again reopens that run instead of adding one.
Every call into the store is retried with backoff, because parallel jobs writing to one
SQLite file meet "database is locked" (mlflow issue #4123).

What a person browsing the UI sees (the layout is built here, the jobs only name their factors):

- the experiment is tagged ``mlflow.experimentKind = custom_model_development`` (a model-training
  experiment, whose page is the runs table) when it is created;
- one parent run per data set (run name = the data set's name, tag ``sdfm.parent_key``) holds
  every job of that data set as a nested child (tag ``mlflow.parentRunId``). A data set, not a DAG
  invocation: a job's run is reopened by its key across invocations and resumes, so its parent
  must be as stable as the key. Parents are found or created under an exclusive file lock, so
  parallel jobs (``snakemake --cores N``) make one parent, never two; the parent's status follows
  its children (RUNNING while one runs, FAILED if one failed, else FINISHED);
- every run gets the experiment's factors as params (``dataset``, ``method``, ``epsilon`` (the
  label: ``0.1``, ``auto``), ``epsilon_rel``, ``epsilon_abs`` where one absolute value exists,
  ``seed``, ``stage``), so the runs table groups and compares by them; the git commit and
  source tags (``mlflow.source.git.commit``, ``mlflow.source.name``, ``mlflow.user``); and the
  prepared data set as a dataset input whose digest is the start of the data's SHA-256.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import math
import os
import random
import time
from functools import lru_cache
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TypeVar

__all__ = ["JobRun", "job_run", "log_auto_epsilon", "open_client", "run_key", "tracking_uri", "with_retries",
           "factor_params", "EXPERIMENT_KIND", "PARENT_KEY_TAG", "DIGEST_CHARS", "source_tags"]

T = TypeVar("T")
RUN_KEY_TAG = "sdfm.run_key"
PARENT_KEY_TAG = "sdfm.parent_key"
PARENT_TAG = "mlflow.parentRunId"
#: The experiment kind of a model-training experiment (MLflow 3); its UI page is the runs table.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: Characters of the data's SHA-256 kept as the dataset digest (MLflow stores at most 36).
DIGEST_CHARS = 16
#: The ``mlflow.data.context`` of the dataset input, by stage (the split the job reads).
DATA_CONTEXT = {"prepare": "preparation", "potential": "training", "train": "training", "feature_net": "training",
                "evaluate": "evaluation", "fid_reference": "evaluation"}


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


def _lock_file(results_dir: str | Path) -> Path:
    """The file whose exclusive lock serialises store creation and the parent runs' bookkeeping:
    next to the SQLite file, else under ``results_dir`` (shared by every job of a DAG)."""
    uri = tracking_uri(results_dir)
    if uri.startswith("sqlite:///"):
        return Path(f"{uri[len('sqlite:///'):]}.lock")
    return Path(results_dir).resolve() / ".mlflow.lock"


@contextmanager
def store_lock(results_dir: str | Path = "results"):
    """Hold the exclusive lock of :func:`_lock_file` (across processes; released on exit or death)."""
    path = _lock_file(results_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_client(results_dir: str | Path = "results"):
    """An ``MlflowClient`` on :func:`tracking_uri`.

    A new SQLite store is created (and migrated) under an exclusive file lock: two jobs that
    start together would otherwise both run the schema migration and one would fail.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(results_dir)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    with store_lock(results_dir):
        return MlflowClient(tracking_uri=uri)


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

    def __init__(self, client, run_id: str, results_dir: str | Path = "results", dataset: str | None = None,
                 stage: str | None = None, parent_id: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.results_dir = results_dir
        self.dataset, self.stage, self.parent_id = dataset, stage, parent_id

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

    def log_data(self, data_path: str | Path) -> None:
        """The prepared data file as the dataset input of this run and of its parent (:func:`_log_dataset_input`)."""
        if self.dataset is None:
            return
        _log_dataset_input(self.client, self.run_id, self.dataset, data_path, self.stage)
        if self.parent_id:
            _log_dataset_input(self.client, self.parent_id, self.dataset, data_path, "dataset")

    def log_torch_model(self, model, name: str = "model") -> None:
        """Log ``model`` with ``mlflow.pytorch`` (a LoggedModel of this run: the UI's Models column).

        Pickled (MLflow 3.17's default, ``pt2``, traces the graph and needs an input example; a
        velocity field takes (x, t)). The pickled module needs the ``sdfm`` package to load; it travels with the model
        (``code_paths``), so ``mlflow.pytorch.load_model(uri)`` works where only torch is installed.
        The requirements are given (torch's version), not inferred: inference imports the model in a
        subprocess, seconds per job.
        """
        import copy

        import mlflow
        import mlflow.pytorch
        import torch

        package = Path(__file__).resolve().parent
        cpu_model = copy.deepcopy(model).to("cpu").eval()
        with _fluent_tracking_uri(tracking_uri(self.results_dir)):
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                mlflow.pytorch.log_model(cpu_model, name=name, code_paths=[str(package)],
                                         serialization_format="pickle",
                                         pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])


@contextmanager
def _fluent_tracking_uri(uri: str):
    """Point MLflow's fluent API at ``uri`` for a while, then restore its global and ``MLFLOW_TRACKING_URI``
    as they were (``mlflow.set_tracking_uri`` also sets that variable, which :func:`tracking_uri` reads)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    previous_global, previous_env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous_global)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def factor_params(tags: dict) -> dict:
    """The experiment's factors of a job, as params: what the runs table groups and compares by.

    ``epsilon`` is the label of the run's folder (``0.1``, ``auto``); ``epsilon_rel`` the number it
    stands for (epsilon ``auto`` resolved); ``epsilon_abs`` the absolute value, where the job has one.
    """
    params = {key: tags[key] for key in ("stage", "dataset", "method", "seed", "epsilon_abs") if key in tags}
    if "epsilon_rel" in tags:
        auto = str(tags.get("epsilon_auto", "")).lower() == "true" or tags["epsilon_rel"] == "auto"
        params["epsilon"] = "auto" if auto else f"{float(tags['epsilon_rel']):g}"
        if tags["epsilon_rel"] != "auto":
            params["epsilon_rel"] = tags["epsilon_rel"]
    return params


@lru_cache(maxsize=1)
def source_tags() -> dict:
    """``mlflow.source.*`` and ``mlflow.user`` tags: the git commit of the checkout holding this package
    (with ``sdfm.git.dirty``), left out when the package is not in a git checkout."""
    from sdfm.provenance import git_state

    tags = {"mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    state = git_state(Path(__file__).resolve().parent)
    if state["commit"]:
        tags.update({"mlflow.source.git.commit": state["commit"], "sdfm.git.dirty": str(state["dirty"]).lower()})
    return tags


def _experiment_id(client, name: str, results_dir) -> str:
    """The experiment's id, creating it as a model-training experiment (:data:`EXPERIMENT_KIND`);
    an existing experiment without a kind gets it too (a kind chosen in the UI is kept)."""
    experiment = with_retries(lambda: client.get_experiment_by_name(name))
    if experiment is None:
        try:
            return with_retries(lambda: client.create_experiment(
                name, artifact_location=artifact_location(results_dir), tags=EXPERIMENT_KIND))
        except Exception:  # noqa: BLE001 - another job created it first
            experiment = with_retries(lambda: client.get_experiment_by_name(name))
    if not set(EXPERIMENT_KIND) & set(experiment.tags):
        for key, value in EXPERIMENT_KIND.items():
            with_retries(lambda: client.set_experiment_tag(experiment.experiment_id, key, value))
    return experiment.experiment_id


def _find_run(client, experiment_id: str, tag: str, value: str):
    query = f"tags.`{tag}` = '{value}'"
    found = with_retries(lambda: client.search_runs([experiment_id], filter_string=query, max_results=1))
    return found[0] if found else None


def _parent_run(client, experiment_id: str, dataset: str) -> str:
    """Find or create the parent run of ``dataset`` (call under :func:`store_lock`)."""
    key = run_key({"parent": "dataset", "dataset": dataset})
    found = _find_run(client, experiment_id, PARENT_KEY_TAG, key)
    if found is not None:
        return found.info.run_id
    tags = {PARENT_KEY_TAG: key, "dataset": dataset, "mlflow.source.name": "snakemake", **source_tags()}
    run = with_retries(lambda: client.create_run(experiment_id, tags=tags, run_name=dataset))
    JobRun(client, run.info.run_id).log_params({"dataset": dataset})
    return run.info.run_id


def _refresh_parent(client, experiment_id: str, parent_id: str) -> None:
    """Set the parent's status from its children's: RUNNING while one runs, FAILED if one failed, else
    FINISHED (call under :func:`store_lock`, after the child's own status was written)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_id}'"
    children = with_retries(lambda: client.search_runs([experiment_id], filter_string=query, max_results=50000))
    statuses = {child.info.status for child in children}
    if "RUNNING" in statuses:
        with_retries(lambda: client.update_run(parent_id, status="RUNNING"))
    else:
        with_retries(lambda: client.set_terminated(parent_id, status="FAILED" if "FAILED" in statuses else "FINISHED"))


def _log_dataset_input(client, run_id: str, dataset: str, data_path: str | Path, stage: str | None) -> None:
    """The prepared data set as the run's dataset input: digest = its SHA-256's first :data:`DIGEST_CHARS`."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from sdfm.data.cache import prepared_hash

    path = Path(data_path).resolve()
    sha256 = prepared_hash(path)
    entity = Dataset(name=dataset, digest=sha256[:DIGEST_CHARS], source_type="local",
                     source=json.dumps({"uri": path.as_uri()}), profile=json.dumps({"sha256": sha256}))
    context = [InputTag("mlflow.data.context", DATA_CONTEXT.get(stage, stage or "input"))]
    with_retries(lambda: client.log_inputs(run_id, datasets=[DatasetInput(entity, context)]))


def _open_run(client, experiment_id: str, run_name: str, key: str, tags: dict, dataset) -> tuple[str, str | None]:
    """Reopen the run keyed ``key`` or create it under its data set's parent; return ``(run id, parent id)``."""
    parent_id = _parent_run(client, experiment_id, dataset) if dataset is not None else None
    found = _find_run(client, experiment_id, RUN_KEY_TAG, key)
    if found is not None:
        run_id = found.info.run_id
        with_retries(lambda: client.update_run(run_id, status="RUNNING"))
        if parent_id and found.data.tags.get(PARENT_TAG) != parent_id:  # a run of an older store
            with_retries(lambda: client.set_tag(run_id, PARENT_TAG, parent_id))
    else:
        all_tags = {RUN_KEY_TAG: key, "mlflow.runName": run_name, **source_tags(), **tags}
        if parent_id:
            all_tags[PARENT_TAG] = parent_id
        # Tag values must be strings: a tracking server (REST store) rejects anything else.
        all_tags = {k: str(v) for k, v in all_tags.items()}
        run_id = with_retries(lambda: client.create_run(experiment_id, tags=all_tags, run_name=run_name)).info.run_id
    if parent_id:
        with_retries(lambda: client.update_run(parent_id, status="RUNNING"))
    return run_id, parent_id


@contextmanager
def job_run(experiment: str, run_name: str, key_fields: dict, tags: dict | None = None, results_dir="results",
            data_path: str | Path | None = None):
    """Open (or reopen) the run of one job; mark it FINISHED on success and FAILED on error.

    Args:
        experiment: MLflow experiment name (one per config).
        run_name: human-readable name shown in the UI.
        key_fields: the fields that define the job; their hash keys the run.
        tags: extra tags (dataset, method, stage, parent potential run...); the factors among them
            also become params (:func:`factor_params`), and ``dataset`` names the parent run.
        results_dir: where the default SQLite store lives.
        data_path: the prepared data file the job reads, logged as the run's dataset input.
    """
    tags = dict(tags or {})
    client = open_client(results_dir)
    experiment_id = _experiment_id(client, experiment, results_dir)
    dataset = tags.get("dataset")
    tags.setdefault("mlflow.source.name", f"sdfm {tags['stage']}" if "stage" in tags else "sdfm")
    with store_lock(results_dir):
        run_id, parent_id = _open_run(client, experiment_id, run_name, run_key(key_fields), tags, dataset)
    handle = JobRun(client, run_id, results_dir, dataset, tags.get("stage"), parent_id)
    handle.set_tags({**source_tags(), **tags})  # a reopened run: the commit that ran it last
    handle.log_params(factor_params(tags))
    if data_path is not None:
        handle.log_data(data_path)
    try:
        yield handle
    except BaseException:
        _close(client, experiment_id, run_id, parent_id, "FAILED", results_dir)
        raise
    _close(client, experiment_id, run_id, parent_id, "FINISHED", results_dir)


def _close(client, experiment_id: str, run_id: str, parent_id: str | None, status: str, results_dir) -> None:
    with_retries(lambda: client.set_terminated(run_id, status=status))
    if parent_id:
        with store_lock(results_dir):
            _refresh_parent(client, experiment_id, parent_id)


def log_auto_epsilon(run: JobRun, auto) -> None:
    """MLflow: the choice of epsilon ``auto`` (an :class:`sdfm.ot.auto_epsilon.AutoEpsilon`) as params
    and metrics, and its entropy curve (step = evaluation in epsilon order)."""
    run.log_params({"epsilon_auto": True, "auto_target_entropy": auto.target, "auto_reference_batch": auto.n,
                    "auto_criterion": auto.criterion})
    run.log_metrics({"auto_epsilon_rel": auto.epsilon_rel, "auto_entropy": auto.entropy})
    for step, (eps, entropy) in enumerate(zip(auto.curve["epsilon_rel"], auto.curve["entropy"])):
        run.log_metrics({"auto_curve_log10_epsilon_rel": math.log10(eps), "auto_curve_entropy": entropy}, step=step)
