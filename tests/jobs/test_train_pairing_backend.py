"""The train job records which MIPS paired its SD-FM batches (faiss where the measured rule says so)."""

import importlib.util
import json

import torch

from sdfm.data.cache import save_prepared
from sdfm.data.dataset import Dataset
from sdfm.runtime import JobContext
from sdfm.jobs.train import train_job
from sdfm.ot import SemidiscretePotential
from sdfm.tracking import open_client

MODEL = {"kind": "mlp", "hidden": 16, "depth": 1}


def test_sdfm_training_logs_its_pairing_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(400, 784, generator=gen)  # d = 784: where faiss pairs batches of >= 256 on CPU
    save_prepared(Dataset("vectors", train, torch.randn(20, 784, generator=gen), None, None, None, "points"),
                  tmp_path / "v.npz")
    SemidiscretePotential(train, -0.5 * train.square().sum(1)).save(tmp_path / "p.pt")
    ctx = JobContext(experiment="pairing-backend", results_dir=str(tmp_path / "results"), progress=False)
    settings = {"steps": 1, "batch_size": 256, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1}
    train_job(tmp_path / "v.npz", "vectors", "sdfm", 0.0, 0, MODEL, settings, tmp_path / "m.pt", tmp_path / "c.pt",
              ctx, potential_path=tmp_path / "p.pt", device="cpu")
    has_faiss = importlib.util.find_spec("faiss") is not None
    expected = "faiss-flat-ip" if has_faiss else "torch-fp32"  # B = 256 >= 256, d = 784, eps = 0, CPU
    summary = json.loads((tmp_path / "m.json").read_text())
    assert summary["pairing_backend"] == expected
    assert open_client(ctx.results_dir).get_run(summary["mlflow_run_id"]).data.params["pairing_backend"] == expected
