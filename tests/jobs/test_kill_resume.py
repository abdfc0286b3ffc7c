"""kill -9 a potential fit and a training job at random points; the reruns finish from the last
checkpoint with results bit-identical to an uninterrupted run (CPU, fixed seeds).

Each job is started through the ``sdfm`` command line, as Snakemake starts it, and killed with
SIGKILL (no handler runs) at a random moment after one of its checkpoints was written: mid-step,
mid-log or mid-write of the next checkpoint. The MLflow store of the killed job is the same file
for all its attempts, so the test also checks that the reopened run holds every metric value.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from sdfm.data import prepare_dataset
from sdfm.tracking import tracking_uri

KILLS = 5
POTENTIAL = {"steps": 1500, "batch_size": 256, "eval_every": 50, "eval_batch": 4096}
MODEL = {"kind": "mlp", "hidden": 64, "depth": 2}
TRAIN = {"steps": 480, "batch_size": 64, "checkpoint_every": 20, "log_every": 10, "warmup_steps": 10}
EVALUATE = {"solvers": ["euler"], "nfe": [1, 4], "n_samples": 300, "metrics": ["w2", "energy"]}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # ~2 min: 14 job starts


def _command(name: str, results: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sdfm.cli", name, "--experiment", "kill", "--results-dir", str(results),
            "--device", "cpu", "--threads", "1", "--no-progress", *args]


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]


def _checkpoint_stamp(pattern: Path) -> int | None:
    files = sorted(pattern.parent.glob(pattern.name))
    return files[0].stat().st_mtime_ns if files else None


def _run_with_kills(cmd: list[str], checkpoint: Path, rng: random.Random) -> int:
    """Run ``cmd`` to completion, SIGKILLing it ``KILLS`` times shortly after a fresh checkpoint.

    Returns the number of kills that hit a running process (the test asks for all of them).
    """
    kills = 0
    for _ in range(KILLS + 1):
        before = _checkpoint_stamp(checkpoint)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        if kills == KILLS:
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()[-2000:]
            return kills
        fresh_needed, seen = rng.randint(1, 2), before
        deadline = time.monotonic() + 300
        while proc.poll() is None and fresh_needed > 0 and time.monotonic() < deadline:
            stamp = _checkpoint_stamp(checkpoint)
            if stamp is not None and stamp != seen:
                fresh_needed, seen = fresh_needed - 1, stamp
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        proc.stderr.close()
        if proc.returncode == 0:  # it finished before the kill landed: the budget of checkpoints ran out
            return kills
    return kills


def _metric_values(results: Path, stage: str, metric: str) -> set[tuple[int, float]]:
    client = MlflowClient(tracking_uri=tracking_uri(results))
    experiment = client.get_experiment_by_name("kill")
    runs = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("stage") == stage]
    assert len(runs) == 1, f"expected one {stage} run, found {len(runs)}"
    assert runs[0].info.status == "FINISHED"
    return {(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, metric)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "checkerboard.npz"
    prepare_dataset("checkerboard", path, n_train=1500, n_test=500, seed=0)
    return path


@pytest.fixture(scope="module")
def potentials(data, tmp_path_factory):
    """The same fit run straight through (reference) and killed 5 times (killed)."""
    rng = random.Random(1)
    out = {}
    for name in ("reference", "killed"):
        results = tmp_path_factory.mktemp(name)
        pot = results / "potentials" / "eps0.1.pt"
        cmd = _command("fit-potential", results, "--data", str(data), "--dataset", "checkerboard", "--epsilon", "0.1",
                       "--settings", json.dumps(POTENTIAL), "--out", str(pot), "--summary", str(pot.with_suffix(".json")))
        kills = _run(cmd) if name == "reference" else _run_with_kills(cmd, pot.parent / ".eps0.1.*.ckpt", rng)
        out[name] = (results, pot, kills)
    return out


def test_killed_potential_fit_finishes_bit_identically(potentials):
    (ref_dir, ref, _), (kill_dir, killed, kills) = potentials["reference"], potentials["killed"]
    assert kills == KILLS
    a, b = torch.load(ref, weights_only=False), torch.load(killed, weights_only=False)
    assert torch.equal(a["g"], b["g"])
    summary_a, summary_b = (json.loads(p.with_suffix(".json").read_text()) for p in (ref, killed))
    assert summary_a["final_chi2"] == summary_b["final_chi2"]
    assert summary_a["chi2_curve"] == summary_b["chi2_curve"]
    assert not list(killed.parent.glob("*.ckpt")) and not list(killed.parent.glob(".*.ckpt"))
    assert _metric_values(kill_dir, "potential", "chi2") == _metric_values(ref_dir, "potential", "chi2")


def test_killed_training_job_finishes_bit_identically(data, potentials, tmp_path_factory):
    rng = random.Random(2)
    potential = potentials["reference"][1]
    tables, weights, dirs, kills = {}, {}, {}, None
    for name in ("reference", "killed"):
        results = tmp_path_factory.mktemp(f"train_{name}")
        run = results / "runs" / "sdfm"
        run.mkdir(parents=True)
        cmd = _command("train", results, "--data", str(data), "--dataset", "checkerboard", "--method", "sdfm",
                       "--epsilon", "0.1", "--seed", "0", "--model", json.dumps(MODEL), "--train", json.dumps(TRAIN),
                       "--potential", str(potential), "--out", str(run / "model.pt"),
                       "--checkpoint", str(run / "checkpoint.pt"))
        if name == "reference":
            _run(cmd)
        else:
            kills = _run_with_kills(cmd, run / "checkpoint.pt", rng)
        _run(_command("evaluate", results, "--data", str(data), "--dataset", "checkerboard", "--method", "sdfm",
                      "--epsilon", "0.1", "--seed", "0", "--model", str(run / "model.pt"),
                      "--batch-size", "64", "--settings", json.dumps(EVALUATE), "--out", str(run / "metrics.csv")))
        weights[name] = torch.load(run / "model.pt", weights_only=False)["model"]
        tables[name] = pd.read_csv(run / "metrics.csv")
        dirs[name] = results
    assert kills == KILLS
    assert weights["reference"].keys() == weights["killed"].keys()
    assert all(torch.equal(weights["reference"][k], weights["killed"][k]) for k in weights["reference"])
    pd.testing.assert_frame_equal(tables["reference"], tables["killed"], check_exact=True)
    assert _metric_values(dirs["killed"], "train", "loss") == _metric_values(dirs["reference"], "train", "loss")
