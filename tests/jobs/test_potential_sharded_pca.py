"""The PCA cost on a sharded fit: ``torchrun --nproc-per-node 2 -m sdfm.cli fit-potential --distributed``
with ``pca_dim`` writes the potential of the one-process PCA job (same basis, same k-dim potential up to
reduction order) and its full-space ``pca`` summary."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from sdfm.data import load_prepared
from sdfm.jobs.potential import fit_potential_job
from sdfm.jobs.prepare import prepare_data_job
from sdfm.ot.pca import ProjectedPotential
from sdfm.runtime import JobContext

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # ~70 s each on a busy 2-core machine: two torchrun ranks, a one-process fit

SETTINGS = {"steps": 200, "batch_size": 256, "eval_every": 100, "eval_batch": 2048}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("epsilon", ["0", "0.1"])
def test_a_sharded_pca_fit_writes_the_one_process_pca_potential(tmp_path, monkeypatch, epsilon):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = JobContext(experiment="sharded-pca", results_dir=str(tmp_path / "results"), progress=False)
    data = tmp_path / "digits.npz"
    prepare_data_job("digits", "digits", {"n_test": 297}, data, ctx)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "sdfm.cli", "fit-potential",
           "--data", str(data), "--dataset", "digits", "--epsilon", epsilon, "--settings", json.dumps(SETTINGS), "--pca-dim", "8",
           "--out", str(tmp_path / "two.pt"), "--summary", str(tmp_path / "two.json"), "--experiment", "sharded-pca",
           "--results-dir", ctx.results_dir, "--device", "cpu", "--threads", "1", "--no-progress", "--distributed"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=200, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    one_summary = fit_potential_job(data, "digits", float(epsilon), SETTINGS, tmp_path / "one.pt",
                                    tmp_path / "one.json", ctx, pca_dim=8)

    y = load_prepared(data).flat_train()
    two, one = ProjectedPotential.load(tmp_path / "two.pt", y=y), ProjectedPotential.load(tmp_path / "one.pt", y=y)
    assert two.pca_dim == one.pca_dim == 8 and two.dim == one.dim == 64
    torch.testing.assert_close(two.basis.components, one.basis.components, rtol=0, atol=1e-9)
    assert two.epsilon == pytest.approx(one.epsilon, rel=1e-6)  # the same reference batch, projected
    torch.testing.assert_close(two.y, one.y, rtol=0, atol=1e-5)  # the projected keys, gathered in order
    scale = float(one.g.max() - one.g.min())
    # float32 keys: reduction order only (measured 0 at eps 0, 8e-8 of the range at eps 0.1)
    assert float((two.g - one.g).abs().max()) <= 1e-5 * scale
    summary = json.loads((tmp_path / "two.json").read_text())
    assert summary["world_size"] == 2 and summary["pca"]["dim"] == 8 and summary["pca"]["input_dim"] == 64
    assert summary["pca"]["explained_variance_ratio"] == pytest.approx(
        one_summary["pca"]["explained_variance_ratio"], rel=1e-9)
    # the PCA pairs cost less in the full space than independent pairs
    assert summary["pca"]["cost"] < summary["pca"]["cost_independent"]
