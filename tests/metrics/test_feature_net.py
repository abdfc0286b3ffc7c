from __future__ import annotations

import pytest
import torch

from sdfm.metrics import FeatureNet, load_feature_net, save_feature_net, train_feature_net


def _toy_digits(n: int = 160, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes of 8x8 grey images: a bright left half or a bright right half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.full((n, 1, 8, 8), -0.8)
    images[labels == 0, :, :, :4] = 0.8
    images[labels == 1, :, :, 4:] = 0.8
    return (images + 0.2 * torch.randn(images.shape, generator=g)).clamp(-1, 1), labels


def test_shapes():
    net = FeatureNet(in_channels=3, num_classes=7, feature_dim=16, width=4)
    x = torch.rand(5, 3, 28, 28) * 2 - 1
    assert net.features(x).shape == (5, 16)
    assert net(x).shape == (5, 7)


def test_train_is_seeded_and_learns(tmp_path):
    images, labels = _toy_digits()
    rng_state = torch.random.get_rng_state()
    options = dict(epochs=2, batch_size=32, lr=1e-2, seed=1, progress=False, width=4)
    net, accuracy = train_feature_net(images, labels, **options)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    assert accuracy >= 0.9
    again, accuracy_again = train_feature_net(images, labels, **options)
    assert accuracy_again == accuracy
    assert torch.allclose(net.features(images[:8]), again.features(images[:8]))

    path = tmp_path / "sub" / "featurenet.pt"
    save_feature_net(net, path, metadata={"accuracy": accuracy})
    loaded = load_feature_net(path)
    assert loaded.config == net.config
    assert torch.equal(loaded.features(images[:8]), net.features(images[:8]))


def test_load_rejects_foreign_file(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a FeatureNet"):
        load_feature_net(path)
