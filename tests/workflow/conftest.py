"""A tiny DAG run shared by the workflow tests (it takes about a minute on two cores)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

TINY = {
    "experiment_name": "tiny",
    "datasets": {"moons": {"source": "moons", "options": {"n_train": 400, "n_test": 200, "seed": 0}}},
    "methods": {"fm": {}, "otfm": {"epsilons": [0.0]}, "sdfm": {"epsilons": [0.0, 0.1]}},
    "seeds": [0],
    "potential": {"steps": 200, "batch_size": 256, "eval_every": 100, "eval_batch": 4096},
    "train": {"steps": 60, "batch_size": 64, "checkpoint_every": 20, "log_every": 20, "warmup_steps": 10},
    "evaluate": {"nfe": [1, 4], "n_samples": 200},
}
#: prepare 1 + potentials 2 + (train + evaluate) x 4 variants
TINY_JOBS_WITH_RUNS = 1 + 2 + 2 * 4


def job_runs(runs: list) -> list:
    """The runs of jobs, without the parent run of each data set (sdfm.tracking)."""
    return [run for run in runs if "sdfm.parent_key" not in run.data.tags]


def snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` with the venv's tools on PATH."""
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    full_env.pop("MLFLOW_TRACKING_URI", None) if not (env and "MLFLOW_TRACKING_URI" in env) else None
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=1200)


def write_config(workdir: Path, config: dict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def run_dag(tmp_path_factory, name: str, config: dict) -> Path:
    """Run ``config`` to completion in a fresh directory; return that directory."""
    workdir = tmp_path_factory.mktemp(name)
    write_config(workdir, config)
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny config run once to completion; yields its working directory."""
    return run_dag(tmp_path_factory, "tiny_dag", TINY)
