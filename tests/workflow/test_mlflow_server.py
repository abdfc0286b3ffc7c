"""The tiny DAG logging to a real MLflow tracking server (``MLFLOW_TRACKING_URI=http://...``).

The server runs here on 127.0.0.1 with a SQLite backend and proxied artifacts in a temporary
directory; the test reads everything back through the server's REST API, as any other client of
a shared server would, and stops the server's whole process group at the end.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY, TINY_JOBS_WITH_RUNS, snakemake, write_config

MLFLOW = Path(sys.executable).parent / "mlflow"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str, path: str, **query) -> dict:
    full = f"{url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    with urllib.request.urlopen(full, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``, read from /proc."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


def _stop(server: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its uvicorn/gunicorn workers too), SIGKILL what stays."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        if not _group_alive(server.pid):
            break
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while _group_alive(server.pid) and time.monotonic() < deadline:
            server.poll()
            time.sleep(0.2)
    server.wait(timeout=5)


@pytest.fixture
def mlflow_server(tmp_path):
    """``(url, artifacts_dir)`` of a tracking server started for this test alone."""
    if not MLFLOW.exists():
        pytest.skip(f"no mlflow command next to {sys.executable}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    artifacts = tmp_path / "server-artifacts"
    log = tmp_path / "server.log"
    cmd = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
           "--serve-artifacts", "--artifacts-destination", str(artifacts)]
    with open(log, "w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
                                  env={**os.environ, "OMP_NUM_THREADS": "1",
                                       # no background job workers (huey): not needed to track runs
                                       "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer on {url}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, artifacts
    finally:
        _stop(server)
        assert not _group_alive(server.pid), "mlflow server processes left running"


@pytest.mark.slow  # ~1.5 min on 2 cores: server start, the tiny DAG, REST checks
def test_tiny_dag_logs_runs_params_metrics_and_artifacts_to_a_tracking_server(tmp_path, mlflow_server):
    url, artifacts = mlflow_server
    workdir = tmp_path / "work"
    write_config(workdir, TINY)
    result = snakemake(workdir, "--cores", "2", env={"MLFLOW_TRACKING_URI": url})
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (workdir / "results" / "mlflow.db").exists()  # nothing went to the local default store

    experiment = _get(url, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="tiny")["experiment"]
    runs = _post(url, "/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000}).get("runs", [])
    assert len(runs) == TINY_JOBS_WITH_RUNS
    assert {r["info"]["status"] for r in runs} == {"FINISHED"}

    def tags(run):
        return {t["key"]: t["value"] for t in run["data"].get("tags", [])}

    def names(run, kind):
        return {item["key"] for item in run["data"].get(kind, [])}

    by_stage = {}
    for run in runs:
        by_stage.setdefault(tags(run).get("stage"), []).append(run)
    assert {stage: len(group) for stage, group in by_stage.items()} == {"prepare": 1, "potential": 2, "train": 4,
                                                                        "evaluate": 4}
    for run in by_stage["train"]:
        assert {"method", "epsilon_rel", "seed", "train.steps"} <= names(run, "params")
        assert "loss" in names(run, "metrics")
    for run in by_stage["potential"]:
        assert "epsilon_abs" in names(run, "params") and "chi2" in names(run, "metrics")

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
