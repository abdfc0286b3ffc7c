"""The train job passes methods.otfm.ot_batch_size, epsilon_reference and the MeanFlow settings through."""

import json

import pytest
import torch

from sdfm.data.cache import save_prepared
from sdfm.data.dataset import Dataset
from sdfm.jobs.train import train_job
from sdfm.runtime import JobContext

MODEL = {"kind": "mlp", "hidden": 16, "depth": 1}


@pytest.fixture()
def vectors(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    gen = torch.Generator().manual_seed(0)
    save_prepared(Dataset("vectors", torch.randn(200, 4, generator=gen), torch.randn(20, 4, generator=gen), None, None,
                          None, "points"), tmp_path / "v.npz")
    return tmp_path / "v.npz", JobContext(experiment="otfm-plan", results_dir=str(tmp_path / "results"), progress=False)


def test_otfm_plan_job_records_plans_and_cost_per_pair(tmp_path, vectors):
    data, ctx = vectors
    settings = {"steps": 6, "batch_size": 16, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1}
    stats = train_job(data, "vectors", "otfm", 0.1, 0, MODEL, settings, tmp_path / "m.pt", tmp_path / "c.pt", ctx,
                      device="cpu", ot_batch_size=64, epsilon_reference="sq_euclidean")
    assert stats["ot_plans"] == 2 and stats["ot_seconds_per_pair"] > 0  # 6 batches of 16 from plans of 64
    summary = json.loads((tmp_path / "m.json").read_text())
    assert summary["ot_batch_size"] == 64 and summary["epsilon_reference"] == "sq_euclidean"
    # n equal to the training batch is the plain per-batch coupling: no plan entries, no extra key
    stats = train_job(data, "vectors", "otfm", 0.0, 0, MODEL, settings, tmp_path / "p.pt", tmp_path / "pc.pt", ctx,
                      device="cpu", ot_batch_size=16)
    assert "ot_plans" not in stats and "ot_batch_size" not in json.loads((tmp_path / "p.json").read_text())


def test_meanflow_settings_reach_the_training_config(tmp_path, vectors):
    data, ctx = vectors
    settings = {"steps": 2, "batch_size": 8, "warmup_steps": 0, "checkpoint_every": 1, "log_every": 1,
                "objective": "meanflow", "meanflow_adaptive_power": 0.5,
                "meanflow_time": {"distribution": "logit_normal", "mean": 0.4, "std": 1.0}}
    train_job(data, "vectors", "fm", 0.0, 0, MODEL, settings, tmp_path / "m.pt", tmp_path / "c.pt", ctx, device="cpu")
    saved = torch.load(tmp_path / "c.pt", weights_only=False)["config"]
    assert saved["adaptive_power"] == 0.5
    assert saved["mean_flow_time"] == {"distribution": "logit_normal", "mean": 0.4, "std": 1.0}
