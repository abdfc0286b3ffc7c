"""Mixed precision and data-parallel training: bf16 autocast keeps MeanFlow's JVP target and float32
master weights; two gloo ranks at the same global batch equal one process, and resume from a checkpoint."""

import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sdfm.fm.couplings import make_coupling
from sdfm.fm.data_parallel import batch_rows
from sdfm.models import build_model
from sdfm.fm.objectives import mean_flow_target
from sdfm.ot import SemidiscretePotential
from sdfm.fm.train import TrainConfig, train

DATA = torch.randn(300, 2, generator=torch.Generator().manual_seed(0)) * torch.tensor([2.0, 0.5])


def _model(mean_flow=False):
    torch.manual_seed(0)
    return build_model("mlp", (2,), hidden=32, depth=2, mean_flow=mean_flow)


def _coupling(method):
    if method == "otfm_plan":  # OT plans of 128 pairs: two global batches each, every rank solving the same plan
        return make_coupling("otfm", DATA, ot_batch_size=128)
    potential = SemidiscretePotential(DATA, -0.5 * DATA.square().sum(1)) if method == "sdfm" else None
    return make_coupling(method, DATA, potential=potential)


def test_bf16_autocast_meanflow_target_agrees_with_fp32():
    model = _model(mean_flow=True)
    gen = torch.Generator().manual_seed(1)
    z, v = torch.randn(256, 2, generator=gen), torch.randn(256, 2, generator=gen)
    r = torch.rand(256, generator=gen) * 0.5
    t = r + torch.rand(256, generator=gen) * 0.5
    u32, target32 = mean_flow_target(model, z, r, t, v)
    # the float32 JVP is the derivative along (v, 1, 0): central differences in float64
    model64, h = _model(mean_flow=True).double(), 1e-6
    plus = model64(z.double() + h * v.double(), t.double(), r=r.double() + h)
    minus = model64(z.double() - h * v.double(), t.double(), r=r.double() - h)
    torch.testing.assert_close(target32.double(), v.double() + (t - r).double()[:, None] * (plus - minus) / (2 * h),
                               rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        u16, target16 = mean_flow_target(model, z, r, t, v)
    assert u16.dtype == torch.bfloat16 and u16.requires_grad
    scale = target32.abs().mean()
    assert float((target16.float() - target32).abs().mean()) < 0.02 * float(scale)  # bf16: 8 mantissa bits
    assert float((u16.float() - u32).abs().mean()) < 0.02 * float(u32.abs().mean())


@pytest.mark.parametrize("objective", ["fm", "meanflow"])
def test_bf16_training_keeps_float32_master_weights_and_tracks_fp32(objective):
    losses = {}
    for precision in ("fp32", "bf16", "tf32"):
        model = _model(mean_flow=objective == "meanflow")
        config = TrainConfig(steps=20, batch_size=64, objective=objective, precision=precision, progress=False)
        result = train(model, _coupling("sdfm"), config, sample_shape=(2,))
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
        assert all(p.dtype == torch.float32 for p in result.ema_model.parameters())
        losses[precision] = torch.tensor(result.losses)
    assert torch.equal(losses["tf32"], losses["fp32"])  # TF32 changes nothing on a CPU
    assert not torch.equal(losses["bf16"], losses["fp32"])  # autocast did run in bfloat16
    torch.testing.assert_close(losses["bf16"], losses["fp32"], rtol=0.05, atol=0.02)
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(steps=1, batch_size=2, precision="fp16")


def test_batch_rows_split_the_global_batch():
    assert batch_rows(64, 0, 1) is None
    assert [batch_rows(64, r, 4) for r in range(4)] == [slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 64)]
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        batch_rows(64, 0, 3)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {}
        for method in ("sdfm", "fm", "otfm_plan"):
            config = TrainConfig(steps=6, batch_size=64, progress=False, checkpoint_every=3)
            whole = train(_model(), _coupling(method), config, sample_shape=(2,))
            # a run stopped after its step-3 checkpoint, resumed by a second call on the same file
            ckpt = os.path.join(out, f"{method}.ckpt")
            train(_model(), _coupling(method), replace(config, steps=3), sample_shape=(2,),
                  checkpoint_path=ckpt)
            dist.barrier()
            resumed = train(_model(), _coupling(method), config, sample_shape=(2,), checkpoint_path=ckpt)
            results[method] = (_flat(whole.model), _flat(whole.ema_model), _flat(resumed.model), whole.losses)
        if rank == 0:
            torch.save(results, os.path.join(out, "ranks.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_and_resume(tmp_path):
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = torch.load(tmp_path / "ranks.pt")
    for method in ("sdfm", "fm", "otfm_plan"):
        single = train(_model(), _coupling(method), TrainConfig(steps=6, batch_size=64, progress=False),
                       sample_shape=(2,))
        weights, ema, resumed, losses = ranks[method]
        torch.testing.assert_close(weights, _flat(single.model), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ema, _flat(single.ema_model), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(losses), torch.tensor(single.losses), rtol=1e-5, atol=1e-7)
        assert torch.equal(resumed, weights)  # the resumed two-rank run is the uninterrupted one, bit for bit
        assert not torch.equal(weights, _flat(_model()))  # it trained
    two_rank_ckpt = torch.load(tmp_path / "sdfm.ckpt", weights_only=False)
    assert len(two_rank_ckpt["ranks"]) == 2 and two_rank_ckpt["step"] == 6
    with pytest.raises(ValueError, match="written by 2 processes"):
        train(_model(), _coupling("sdfm"), TrainConfig(steps=8, batch_size=64, progress=False, checkpoint_every=3),
              sample_shape=(2,), checkpoint_path=tmp_path / "sdfm.ckpt")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_torchrun_train_job_writes_the_one_process_model(tmp_path, monkeypatch):
    """``torchrun --nproc-per-node 2 -m sdfm.cli train --distributed`` (what ``train.processes: 2`` runs):
    rank 0 writes the model and the summary, which equal the one-process job's to float tolerance."""
    import json
    import subprocess
    import sys

    from sdfm.runtime import JobContext
    from sdfm.jobs.prepare import prepare_data_job
    from sdfm.jobs.train import train_job

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = JobContext(experiment="ddp-train", results_dir=str(tmp_path / "results"), progress=False)
    data = tmp_path / "moons.npz"
    prepare_data_job("moons", "moons", {"n_train": 400, "n_test": 100}, data, ctx)
    model = {"kind": "mlp", "hidden": 16, "depth": 1}
    settings = {"steps": 4, "batch_size": 32, "warmup_steps": 0, "checkpoint_every": 2, "log_every": 1}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "sdfm.cli", "train",
           "--data", str(data), "--dataset", "moons", "--method", "fm", "--model", json.dumps(model),
           "--train", json.dumps({**settings, "processes": 2}), "--out", str(tmp_path / "two.pt"),
           "--checkpoint", str(tmp_path / "two.ckpt"), "--experiment", "ddp-train", "--results-dir", ctx.results_dir,
           "--device", "cpu", "--threads", "1", "--no-progress", "--distributed"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    train_job(data, "moons", "fm", 0.0, 0, model, settings, tmp_path / "one.pt", tmp_path / "one.ckpt", ctx,
              device="cpu")
    two, one = torch.load(tmp_path / "two.pt", weights_only=False), torch.load(tmp_path / "one.pt", weights_only=False)
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "two.json").read_text())["final_loss"] == pytest.approx(
        json.loads((tmp_path / "one.json").read_text())["final_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="torchrun --nproc-per-node 2"):
        train_job(data, "moons", "fm", 0.0, 0, model, {**settings, "processes": 2}, tmp_path / "x.pt",
                  tmp_path / "x.ckpt", ctx, device="cpu")
