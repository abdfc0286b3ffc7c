"""Snakemake as its users call it: config layers, the default profile, and a DAG whose names need quoting.

The layers (README, "Configuration"): the embedded config.yaml, each --configfile in order, --config;
each top-level key comes whole from the last layer that sets it. The DAG run reads a user's own CSV of
vectors with a label column (source ``arrays``, conditional) from a folder named "Bob's data", logs to
the MLflow experiment "Bob's run", writes to "my results" / "my reports", and shows progress lines in
its job logs.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from conftest import REPO
from sdfm.config import layer_configs, typed_overrides
from sdfm.data import load_prepared


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    cmd = [str(Path(sys.executable).parent / "snakemake"), "-s", str(REPO / "Snakefile"), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=1200)


def _job_counts(output: str) -> dict[str, int]:
    """The dry run's job table: rule -> count."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", output, re.MULTILINE)}


def test_layer_configs_takes_each_top_level_key_from_the_last_layer():
    defaults = {"seeds": [0, 1], "train": {"steps": 2000, "lr": 0.001}, "datasets": {"a": {}, "b": {}}}
    merged = layer_configs([defaults, {"datasets": {"mine": {}}, "train": {"steps": 7}}, {"seeds": [3]}])
    assert merged == {"seeds": [3], "train": {"steps": 7}, "datasets": {"mine": {}}}
    assert defaults["train"] == {"steps": 2000, "lr": 0.001}  # the layers are not modified


def test_nested_config_values_are_typed_like_yaml():
    # what Snakemake hands over for seeds=[0] 'potential={steps: 100, chi2_threshold: null}' name=07 ...
    given = {"seeds": ["0", "1"], "potential": {"steps": "100", "chi2_threshold": "null", "init": "gaussian"},
             "evaluate": {"nfe": ["1", "4"], "dopri5_tol": "1.0e-4", "save_samples": "true"},
             "experiment_name": "07", "progress_seconds": 5, "datasets": {"d": {"options": {"path": "2024-01-01"}}}}
    assert typed_overrides(given) == {
        "seeds": [0, 1], "potential": {"steps": 100, "chi2_threshold": None, "init": "gaussian"},
        "evaluate": {"nfe": [1, 4], "dopri5_tol": 1e-4, "save_samples": True},
        "experiment_name": "07", "progress_seconds": 5, "datasets": {"d": {"options": {"path": "2024-01-01"}}}}


def test_config_overrides_one_key_of_the_default_and_the_default_profile_is_used(tmp_path):
    default = _snakemake(tmp_path, "-n", "--cores", "1")
    assert default.returncode == 0, default.stderr[-2000:]
    out = default.stdout + default.stderr
    assert "profiles/default" in out  # Snakemake's own search: profiles/default beside the Snakefile
    one_seed = _snakemake(tmp_path, "-n", "--cores", "1", "--config", "seeds=[0]")
    assert one_seed.returncode == 0, one_seed.stderr[-2000:]
    # 3 data sets x (fm, otfm at 2 epsilons, sdfm at 2 epsilons) x seeds
    assert _job_counts(out)["train"] == 30 and _job_counts(one_seed.stdout + one_seed.stderr)["train"] == 15


def test_configfiles_then_config_in_order_and_quoted_in_the_commands(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({
        "datasets": {"moons": {"source": "moons", "options": {"n_train": 100, "n_test": 50}}},
        "train": {"steps": 7, "lr": 0.5}}))
    (tmp_path / "b b.yaml").write_text(yaml.safe_dump({"train": {"steps": 9}}))
    result = _snakemake(tmp_path, "-n", "-p", "--cores", "1", "--configfile", "a.yaml", "b b.yaml",
                        "--config", "experiment_name=Bob's run", "potential={chi2_threshold: null}")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout + result.stderr
    # data sets from a.yaml, methods and seeds from config.yaml: 1 x 5 variants x 2 seeds
    assert _job_counts(out)["train"] == 10 and _job_counts(out)["prepare_data"] == 1
    train = [line for line in out.splitlines() if line.startswith("Shell command: sdfm train")]
    assert train and all('"steps": 9' in line and '"lr": 0.5' not in line for line in train)  # b b.yaml's train, whole
    assert all("--experiment 'Bob'\"'\"'s run'" in line for line in train)
    fit = [line for line in out.splitlines() if line.startswith("Shell command: sdfm fit-potential")]
    assert fit and all('"chi2_threshold": null' in line for line in fit)  # --config replaced config.yaml's


def _cells_csv(folder: Path) -> Path:
    """What a user has: 3 kinds of cells as 2-D embeddings with a text label column, one file."""
    rng = np.random.default_rng(0)
    kinds = np.array(["B cell", "NK", "T cell"])[rng.integers(0, 3, 300)]
    centres = {"B cell": (-2.0, 0.0), "NK": (2.0, 0.0), "T cell": (0.0, 2.5)}
    points = np.array([centres[k] for k in kinds]) + 0.3 * rng.standard_normal((300, 2))
    folder.mkdir(parents=True)
    path = folder / "cells 1.csv"
    pd.DataFrame({"umap_1": points[:, 0], "umap_2": points[:, 1], "cell type": kinds}).to_csv(path, index=False)
    return path


@pytest.mark.slow  # 8 jobs: about a minute on two quiet cores (8 min measured on a shared, loaded one)
def test_my_vectors_run_through_the_dag_with_names_that_need_quoting(tmp_path):
    csv = _cells_csv(tmp_path / "Bob's data")
    config = {
        "experiment_name": "Bob's run",
        "results_dir": str(tmp_path / "my results"),
        "reports_dir": str(tmp_path / "my reports"),
        "progress_seconds": 0,
        "datasets": {"cells": {"source": "arrays", "conditional": {"beta": 1.0}, "model": {"hidden": 32, "depth": 2},
                               "options": {"path": str(csv), "label_column": "cell type", "test_fraction": 0.2}}},
        "methods": {"fm": {}, "sdfm": {"epsilons": [0.0]}},
        "seeds": [0],
        "potential": {"steps": 60, "batch_size": 128, "eval_every": 20, "eval_batch": 2048},
        "train": {"steps": 30, "batch_size": 64, "checkpoint_every": 10, "log_every": 10, "warmup_steps": 5},
        "evaluate": {"nfe": [1, 4], "n_samples": 60},
    }
    (tmp_path / "Bob's config.yaml").write_text(yaml.safe_dump(config))
    result = _snakemake(tmp_path, "--cores", "2", "--configfile", "Bob's config.yaml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    results = tmp_path / "my results"
    data = load_prepared(results / "data" / "cells.npz")
    assert data.kind == "points" and data.num_classes == 3 and (len(data.train), len(data.test)) == (240, 60)
    table = pd.read_csv(results / "metrics.csv")
    assert set(table.method) == {"fm", "sdfm"} and set(table.metric) == {"w2", "energy"}
    assert table.value.notna().all() and len(table) == 2 * 2 * 2
    assert "## cells" in (tmp_path / "my reports" / "report.md").read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("Bob's run")
    runs = client.search_runs([experiment.experiment_id])
    assert {r.data.tags.get("stage") for r in runs} >= {"prepare", "potential", "train", "evaluate"}

    # progress lines (progress_seconds: 0, one per step) in the job logs
    logs = results / "logs"
    fit = (logs / "potential" / "cells" / "eps0.log").read_text()
    assert "potential eps=0: start at step 0/60" in fit and re.search(r"step 60/60 \(100%\) chi2=\S+ sd=\S+ \|", fit)
    train = (logs / "train" / "cells" / "sdfm-eps0-seed0.log").read_text()
    assert re.search(r"train \S+: step 15/30 \(50%\) loss=\S+ \| \S+ steps/s \| elapsed \S+ \| ETA \S+", train)
    evaluate = (logs / "evaluate" / "cells" / "fm-eps0-seed0.log").read_text()
    assert re.search(r"evaluate fm eps=0: step 2/2 \(100%\) solver=euler nfe=4 w2=\S+ energy=\S+ \|", evaluate)
