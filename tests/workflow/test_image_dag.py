"""The image track end to end on a tiny digits config: FeatureNet, fd_digits rows, sample grids, MLflow."""

import math

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from conftest import job_runs, run_dag

from sdfm.artifacts import METRIC_COLUMNS

TINY_DIGITS = {
    "experiment_name": "tiny-digits",
    "datasets": {
        "digits": {
            "source": "digits",
            "model": {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2]},
            "feature_net": {"epochs": 1},
        }
    },
    "methods": {"fm": {}, "sdfm": {"epsilons": [0.0]}},
    "seeds": [0],
    "potential": {"steps": 100, "batch_size": 256, "eval_every": 50, "eval_batch": 4096},
    "train": {"steps": 30, "batch_size": 64, "checkpoint_every": 0, "log_every": 10, "warmup_steps": 5},
    "evaluate": {"solvers": ["euler", "dopri5"], "nfe": [1, 2], "n_samples": 64, "metrics": ["fd", "w2"]},
}
#: prepare + feature net + potential + (train + evaluate) x 2 methods
JOBS_WITH_RUNS = 1 + 1 + 1 + 2 * 2


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    return run_dag(tmp_path_factory, "digits_dag", TINY_DIGITS)


def test_fd_rows_are_named_by_the_data_set_and_finite(digits_run):
    table = pd.read_csv(digits_run / "results" / "metrics.csv")
    assert list(table.columns) == METRIC_COLUMNS and "epsilon_label" in METRIC_COLUMNS
    fd = table[table.metric == "fd_digits"]
    assert "fid" not in set(table.metric) and "fd" not in set(table.metric)
    assert len(fd) == 2 * 3  # methods x (euler 1, euler 2, dopri5)
    assert all(math.isfinite(v) and v >= 0 for v in fd.value)
    dopri = table[table.solver == "dopri5"]
    assert (dopri.nfe > 2).all()  # the NFE dopri5 actually used, not a placeholder
    assert "fd_digits" in (digits_run / "reports" / "report.md").read_text()


def test_a_sample_grid_per_solver_and_nfe(digits_run):
    table = pd.read_csv(digits_run / "results" / "metrics.csv")
    for (method, solver, nfe), _ in table.groupby(["method", "solver", "nfe"]):
        grid = digits_run / "results" / "runs" / "digits" / method / "eps0" / "seed0" / "samples" / f"{solver}_nfe{nfe}.png"
        assert grid.exists(), grid
        with Image.open(grid) as image:
            assert image.width >= 8 * 8 * 4  # 8 columns of 8x8 digits, enlarged 4x
    assert (digits_run / "results" / "feature_nets" / "digits.pt").exists()


def test_one_mlflow_run_per_job(digits_run):
    client = MlflowClient(tracking_uri=f"sqlite:///{digits_run / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny-digits")
    runs = job_runs(client.search_runs([experiment.experiment_id], max_results=1000))
    assert len(runs) == JOBS_WITH_RUNS
    assert {r.info.status for r in runs} == {"FINISHED"}
    stages = sorted(r.data.tags["stage"] for r in runs)
    assert stages == sorted(["prepare", "feature_net", "potential", "train", "train", "evaluate", "evaluate"])
    feature_net = next(r for r in runs if r.data.tags["stage"] == "feature_net")
    assert 0 <= feature_net.data.metrics["accuracy"] <= 1
    evaluate = next(r for r in runs if r.data.tags["stage"] == "evaluate")
    artifacts = [a.path for a in client.list_artifacts(evaluate.info.run_id, "samples")]
    assert "samples/euler_nfe1.png" in artifacts
