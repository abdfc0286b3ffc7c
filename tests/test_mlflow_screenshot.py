"""scripts/mlflow_screenshot.py and sdfm.mlflow_ui: store arguments, the runs-table address, the PNG
palette, and (slow) a real server with a real headless Chromium on a small store."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdfm import mlflow_ui
from sdfm.tracking import job_run, open_client

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mlflow_screenshot.py"


def _script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})


def test_runs_table_address_names_the_model_training_workflow():
    assert mlflow_ui.runs_table_url("http://127.0.0.1:5000", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")


def test_a_missing_store_is_a_one_line_error(tmp_path):
    result = _script("--store", str(tmp_path / "nope.db"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"mlflow_screenshot: {tmp_path / 'nope.db'}: no such MLflow store; run the workflow first, or pass --store URI"]


def test_shrink_png_keeps_the_picture_in_a_palette(tmp_path):
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(12, 3), dtype=np.uint8)
    picture = colours[rng.integers(0, 12, size=(120, 200))]  # a UI shot: few distinct colours
    path = tmp_path / "shot.png"
    Image.fromarray(picture).save(path)
    mlflow_ui.shrink_png(path)
    with Image.open(path) as shrunk:
        assert shrunk.mode == "P" and shrunk.size == (200, 120)
        assert np.array_equal(np.asarray(shrunk.convert("RGB")), picture)


@pytest.fixture
def small_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    results = tmp_path / "results"
    for seed in (0, 1):
        tags = {"stage": "train", "dataset": "moons", "method": "sdfm", "epsilon_rel": 0.1, "seed": seed}
        with job_run("shot", f"train/moons/sdfm/eps0.1/seed{seed}", {"seed": seed}, tags, results) as run:
            run.log_metrics({"loss": 1.0 / (seed + 1)})
    open_client(results)
    return results / "mlflow.db"


@pytest.mark.slow  # ~1 min on 2 cores: two server starts and a headless Chromium
def test_script_serves_the_store_and_screenshots_the_runs_table(small_store, tmp_path):
    no_browser = _script("--store", str(small_store), "--experiment", "shot", "--browser", "no-such-browser")
    assert no_browser.returncode == 2 and "make browser" in no_browser.stderr
    assert "/#/experiments/1/runs?workflowType=machine_learning" in no_browser.stderr
    if mlflow_ui.find_browser() is None:
        pytest.skip("no chromium on PATH (make browser installs Debian's)")
    out = tmp_path / "runs.png"
    result = _script("--store", str(small_store), "--experiment", "shot", "--out", str(out), "--width", "1200",
                     "--height", "700")
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(out) as shot:
        assert shot.size == (1200, 700) and shot.mode == "P"
        pixels = np.asarray(shot.convert("L"))
    assert pixels.std() > 10  # a page was drawn, not a blank window
