"""Tests of the training loop (sdfm.fm.train): learning, exact resumption, divergence, MeanFlow."""

from __future__ import annotations

import hashlib

import pytest
import torch

from sdfm.fm.couplings import IndependentCoupling, PairBatch, make_coupling
from sdfm.fm.train import TrainConfig, TrainingDiverged, train
from sdfm.models import MLPVelocity, UNetVelocity


def _two_moons(n=256, seed=0):
    gen = torch.Generator().manual_seed(seed)
    angle = torch.rand(n, generator=gen) * torch.pi
    upper = torch.rand(n, generator=gen) < 0.5
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    return 2 * torch.stack([x, y], dim=1), upper.long()


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_mlp_loss_decreases_and_logs():
    data, _ = _two_moons()
    torch.manual_seed(0)
    model = MLPVelocity(2, hidden=64, depth=2)
    logged = []
    config = TrainConfig(steps=300, batch_size=128, lr=3e-3, warmup_steps=20, log_every=100, progress=False)
    coupling = make_coupling("otfm", data)
    result = train(model, coupling, config, sample_shape=(2,), log_fn=lambda s, m: logged.append((s, m)))
    assert len(result.losses) == 300
    first, last = sum(result.losses[:20]) / 20, sum(result.losses[-50:]) / 50
    assert last < 0.7 * first, (first, last)
    assert [s for s, _ in logged] == [100, 200, 300] and logged[0][1]["lr"] == pytest.approx(3e-3)
    assert result.pairing_seconds > 0 and result.step_seconds > 0
    assert not torch.equal(result.ema_model.net[0].weight, model.net[0].weight)


def _crash_at(step):
    def log_fn(s, metrics):
        if s == step:
            raise KeyboardInterrupt("simulated crash")

    return log_fn


@pytest.mark.parametrize(
    "build, objective, shape",
    [
        (lambda: MLPVelocity(2, hidden=32, depth=2, num_classes=2), "fm", (2,)),
        (
            lambda: UNetVelocity(1, 4, base_channels=8, dropout=0.2, num_classes=2, mean_flow=True),
            "meanflow",
            (1, 4, 4),
        ),
    ],
)
def test_resume_is_bit_identical(tmp_path, build, objective, shape):
    data, labels = _two_moons(64)
    flat = data.repeat(1, 8) if shape != (2,) else data
    config = TrainConfig(steps=20, batch_size=16, objective=objective, label_dropout=0.3, warmup_steps=5,
                         checkpoint_every=5, log_every=1, progress=False)

    torch.manual_seed(1)
    straight = train(build(), IndependentCoupling(flat, labels), config, sample_shape=shape)

    torch.manual_seed(1)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        train(build(), IndependentCoupling(flat, labels), config, sample_shape=shape, checkpoint_path=path,
              log_fn=_crash_at(13))
    assert torch.load(path, weights_only=False)["step"] == 10
    torch.manual_seed(99)  # the fresh model's initial weights and the global RNG must not matter
    resumed = train(build(), IndependentCoupling(flat, labels), config, sample_shape=shape, checkpoint_path=path)

    _assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    _assert_same_state(straight.ema_model.state_dict(), resumed.ema_model.state_dict())
    assert straight.losses == resumed.losses
    assert torch.load(path, weights_only=False)["step"] == 20


def test_resume_refuses_other_settings(tmp_path):
    data, _ = _two_moons(32)
    path = tmp_path / "ckpt.pt"
    config = TrainConfig(steps=2, batch_size=4, progress=False)
    train(MLPVelocity(2, hidden=8, depth=1), IndependentCoupling(data), config, sample_shape=(2,), checkpoint_path=path)
    with pytest.raises(ValueError, match="other settings"):
        train(MLPVelocity(2, hidden=8, depth=1), IndependentCoupling(data),
              TrainConfig(steps=4, batch_size=4, lr=0.5, progress=False), sample_shape=(2,), checkpoint_path=path)


class _PoisonedCoupling:
    """Independent pairs that turn NaN from the ``bad``-th draw on."""

    name = "poisoned"

    def __init__(self, data, bad):
        self.inner, self.bad, self.calls = IndependentCoupling(data), bad, 0

    def sample(self, batch_size, generator) -> PairBatch:
        self.calls += 1
        batch = self.inner.sample(batch_size, generator)
        if self.calls >= self.bad:
            batch.x1 = torch.full_like(batch.x1, float("nan"))
        return batch


def test_nan_raises_and_keeps_last_checkpoint(tmp_path):
    data, _ = _two_moons(32)
    path = tmp_path / "ckpt.pt"
    snapshots = {}

    def log_fn(step, metrics):  # runs before the checkpoint of its step is written
        if path.exists():
            snapshots[step] = _digest(path)

    config = TrainConfig(steps=20, batch_size=8, checkpoint_every=5, log_every=1, progress=False)
    with pytest.raises(TrainingDiverged, match="step 8") as info:
        train(MLPVelocity(2, hidden=8, depth=1), _PoisonedCoupling(data, bad=8), config, sample_shape=(2,),
              checkpoint_path=path, log_fn=log_fn)
    assert "\n" not in str(info.value)
    assert _digest(path) == snapshots[7]  # the step-5 checkpoint, as it was before the NaN
    state = torch.load(path, weights_only=False)
    assert state["step"] == 5 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_mean_flow_training_step_mlp():
    data, _ = _two_moons(64)
    model = MLPVelocity(2, hidden=16, depth=1, mean_flow=True)
    before = [p.detach().clone() for p in model.parameters()]
    result = train(model, IndependentCoupling(data), TrainConfig(steps=3, batch_size=16, objective="meanflow",
                   adaptive_power=1.0, progress=False), sample_shape=(2,))
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
