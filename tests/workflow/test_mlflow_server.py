"""The tiny DAG logging to a real MLflow tracking server (``MLFLOW_TRACKING_URI=http://...``).

The server runs here on 127.0.0.1 with a SQLite backend and proxied artifacts in a temporary
directory; the test reads everything back through the server's REST API, as any other client of
a shared server would, and stops the server's whole process group at the end.
"""

import subprocess
from pathlib import Path

import pytest

from conftest import REPO, TINY, TINY_JOBS_WITH_RUNS, snakemake, write_config
from sdfm.data.cache import prepared_hash
from sdfm.mlflow_ui import get_json as _get
from sdfm.mlflow_ui import mlflow_server as serve
from sdfm.mlflow_ui import post_json as _post
from sdfm.tracking import DIGEST_CHARS


@pytest.fixture
def mlflow_server(tmp_path):
    """``(url, artifacts_dir)`` of a tracking server started for this test alone (its whole process
    group is stopped at the end: sdfm.mlflow_ui.mlflow_server)."""
    artifacts = tmp_path / "server-artifacts"
    with serve(f"sqlite:///{tmp_path / 'server.db'}", tmp_path, "--serve-artifacts",
               "--artifacts-destination", str(artifacts)) as url:
        yield url, artifacts


@pytest.mark.slow  # ~2.5 min on 2 cores: server start, the tiny DAG with models logged, REST checks
def test_tiny_dag_logs_runs_params_metrics_and_artifacts_to_a_tracking_server(tmp_path, mlflow_server):
    url, artifacts = mlflow_server
    workdir = tmp_path / "work"
    write_config(workdir, {**TINY, "mlflow": {"log_model": True}})
    result = snakemake(workdir, "--cores", "2", env={"MLFLOW_TRACKING_URI": url})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (workdir / "results" / "mlflow.db").exists()  # nothing went to the local default store

    experiment = _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="tiny")["experiment"]
    assert {t["key"]: t["value"] for t in experiment["tags"]}["mlflow.experimentKind"] == "custom_model_development"
    runs = _post(url, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000}).get("runs", [])
    assert len(runs) == TINY_JOBS_WITH_RUNS + 1  # the jobs and the data set's parent run
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}

    by_stage = {}
    for run in runs:
        by_stage.setdefault(_tags(run).get("stage"), []).append(run)
    (parent,) = by_stage.pop(None)
    assert {stage: len(group) for stage, group in by_stage.items()} == {"prepare": 1, "potential": 2, "train": 4,
                                                                        "evaluate": 4}
    for run in by_stage["train"]:
        assert {"method", "epsilon_rel", "seed", "train.steps"} <= _names(run, "params")
        assert "loss" in _names(run, "metrics")
    for run in by_stage["potential"]:
        assert "epsilon_abs" in _names(run, "params") and "chi2" in _names(run, "metrics")

    # The loss curve is there step by step, not just its last value.
    train_id = by_stage["train"][0]["info"]["run_id"]
    history = _get(url, "/api/2.0/mlflow/metrics/get-history", run_id=train_id, metric_key="loss")["metrics"]
    assert sorted(m["step"] for m in history) == [20, 40, 60]

    # Artifacts went through the server (proxied) into its artifact store, not into the work dir.
    evaluate_id = by_stage["evaluate"][0]["info"]["run_id"]
    listed = _get(url, "/api/2.0/mlflow/artifacts/list", run_id=evaluate_id).get("files", [])
    assert "metrics.csv" in {Path(f["path"]).name for f in listed}
    stored = list(artifacts.rglob(f"{evaluate_id}/artifacts/metrics.csv"))
    assert len(stored) == 1 and stored[0].stat().st_size > 0
    assert not (workdir / "results" / "mlartifacts").exists()

    _check_browsable_layout(url, experiment["experiment_id"], parent, by_stage, workdir)


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _params(run: dict) -> dict:
    return {p["key"]: p["value"] for p in run["data"].get("params", [])}


def _names(run: dict, kind: str) -> set:
    return {item["key"] for item in run["data"].get(kind, [])}


def _check_browsable_layout(url: str, experiment_id: str, parent: dict, by_stage: dict, workdir: Path) -> None:
    """Parent run, factor params, git and source tags, dataset inputs and logged models, over REST."""
    jobs = [run for group in by_stage.values() for run in group]
    assert parent["info"]["run_name"] == "moons" and "sdfm.parent_key" in _tags(parent)
    assert {_tags(run)["mlflow.parentRunId"] for run in jobs} == {parent["info"]["run_id"]}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    digest = prepared_hash(workdir / "results" / "data" / "moons.npz")[:DIGEST_CHARS]
    for run in [parent, *jobs]:
        tags, params = _tags(run), _params(run)
        assert tags["mlflow.source.git.commit"] == commit
        assert params["dataset"] == "moons"
        (given,) = run["inputs"]["dataset_inputs"]
        assert (given["dataset"]["name"], given["dataset"]["digest"]) == ("moons", digest)
    for run in jobs:
        assert _tags(run)["mlflow.source.name"] == f"sdfm {_tags(run)['stage']}"
    epsilon_abs = {_params(run)["epsilon"]: _params(run)["epsilon_abs"] for run in by_stage["potential"]}
    assert set(epsilon_abs) == {"0", "0.1"} and float(epsilon_abs["0.1"]) > float(epsilon_abs["0"]) >= 0
    for run in by_stage["train"] + by_stage["evaluate"]:  # the factors the runs table groups by
        params = _params(run)
        assert {"method", "epsilon", "epsilon_rel", "seed"} <= set(params)
        assert params.get("epsilon_abs") == (epsilon_abs[params["epsilon"]] if params["method"] == "sdfm" else None)
    for run in by_stage["evaluate"]:  # solver and NFE: params, and one metric column per (solver, NFE)
        params = _params(run)
        assert (params["solvers"], params["nfe"]) == ("euler", "1,4")
        assert {"w2_euler_nfe1", "w2_euler_nfe4", "energy_euler_nfe4"} <= _names(run, "metrics")
    models = _post(url, "/api/2.0/mlflow/logged-models/search", {"experiment_ids": [experiment_id]})["models"]
    assert sorted(m["info"]["source_run_id"] for m in models) == sorted(r["info"]["run_id"] for r in by_stage["train"])
    assert {(m["info"]["name"], m["info"]["status"]) for m in models} == {("model", "LOGGED_MODEL_READY")}
