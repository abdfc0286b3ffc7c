"""Many jobs at once against one SQLite tracking store, and a Snakemake run killed mid-way.

* 8 training and 8 evaluation jobs (plus data and potentials) at ``--cores 4``, all logging to
  ``results/mlflow.db``: every run exists once, is FINISHED and holds every param and metric.
* ``snakemake`` and all its jobs killed with SIGKILL while jobs run; unlocked (``--unlock``) and
  started again, it finishes, and every output of the DAG reads back (no half-written file
  satisfied a target).
"""

import copy
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from conftest import REPO, TINY, snakemake, write_config
from sdfm.data import load_prepared
from sdfm.tracking import PARENT_KEY_TAG, tracking_uri

PARALLEL = copy.deepcopy(TINY)
PARALLEL["experiment_name"] = "parallel"
PARALLEL["methods"] = {"fm": {}, "otfm": {"epsilons": [0.0]}, "sdfm": {"epsilons": [0.0, 0.1]}}
PARALLEL["seeds"] = [0, 1]
TRAIN_JOBS = 4 * 2  # variants x seeds

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]  # ~4 min: two DAG runs and a rerun


def _runs(workdir, experiment):
    """The job runs of ``experiment``, after checking that they hang under one parent run (the data set's)."""
    client = MlflowClient(tracking_uri=tracking_uri(workdir / "results"))
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if PARENT_KEY_TAG in r.data.tags]
    jobs = [r for r in runs if PARENT_KEY_TAG not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]  # one data set: one parent run
    assert {r.data.tags.get("mlflow.parentRunId") for r in jobs} == {parents[0].info.run_id}
    return client, jobs


def test_eight_parallel_jobs_lose_no_run_param_or_metric(tmp_path):
    write_config(tmp_path, PARALLEL)
    result = snakemake(tmp_path, "--cores", "4")
    assert result.returncode == 0, result.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs").rglob("*.log"))
    assert "Traceback" not in logs
    client, runs = _runs(tmp_path, "parallel")
    stages = pd.Series([r.data.tags["stage"] for r in runs]).value_counts().to_dict()
    assert stages == {"prepare": 1, "potential": 2, "train": TRAIN_JOBS, "evaluate": TRAIN_JOBS}
    assert {r.info.status for r in runs} == {"FINISHED"}
    train = [r for r in runs if r.data.tags["stage"] == "train"]
    keys = {(r.data.tags["method"], r.data.tags["epsilon_rel"], r.data.tags["seed"]) for r in train}
    assert len(keys) == TRAIN_JOBS
    expected_points = PARALLEL["train"]["steps"] // PARALLEL["train"]["log_every"]
    for method in PARALLEL["methods"]:  # the runs of a method hold the same params (SD-FM's add its potential's)
        param_sets = {frozenset(r.data.params) for r in train if r.data.tags["method"] == method}
        assert len(param_sets) == 1 and len(next(iter(param_sets))) > 10, (method, param_sets)
    for run in train:
        history = client.get_metric_history(run.info.run_id, "loss")
        assert sorted(m.step for m in history) == [PARALLEL["train"]["log_every"] * (i + 1) for i in range(expected_points)]
        assert {"pairing_seconds", "step_seconds", "final_loss"} <= set(run.data.metrics)
    table = pd.read_csv(tmp_path / "results" / "metrics.csv")
    assert len(table) == TRAIN_JOBS * len(PARALLEL["evaluate"]["nfe"]) * 2


def _outputs_read_back(results) -> int:
    """Open every output the DAG writes; return how many were read."""
    count = 0
    for path in results.rglob("*.npz"):
        load_prepared(path)
        count += 1
    for path in results.rglob("*.pt"):
        torch.load(path, weights_only=False)
        count += 1
    for path in list(results.rglob("metrics.csv")):
        assert len(pd.read_csv(path)) > 0
        count += 1
    return count


def test_killed_snakemake_run_completes_when_started_again(tmp_path):
    config = copy.deepcopy(TINY)
    config["experiment_name"] = "interrupted"
    write_config(tmp_path, config)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
           "--workflow-profile", str(REPO / "profiles" / "default")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    runs = tmp_path / "results" / "runs"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not list(runs.rglob("model.pt")):
        time.sleep(0.05)
    time.sleep(1.0)  # into the next jobs
    assert proc.poll() is None, "the DAG finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _outputs_read_back(tmp_path / "results")  # whatever exists after the kill is whole

    # A hard kill leaves Snakemake's directory lock; the documented recovery is --unlock, then run again.
    unlock = snakemake(tmp_path, "--unlock")
    assert unlock.returncode == 0, unlock.stderr[-2000:]
    again = snakemake(tmp_path, "--cores", "2", "--workflow-profile", str(REPO / "profiles" / "default"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert _outputs_read_back(tmp_path / "results") >= 1 + 2 + 4 + 4 + 1
    dry = snakemake(tmp_path, "--cores", "2", "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    _, tracked = _runs(tmp_path, "interrupted")
    finished = [r for r in tracked if r.info.status == "FINISHED"]
    assert len({r.data.tags.get("sdfm.run_key") for r in finished}) == len(finished) == 1 + 2 + 4 + 4
