from __future__ import annotations

import math

import pytest
import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

from sdfm.metrics import FeatureNet, frechet_distance, frechet_distance_features, save_feature_net
from sdfm.metrics.fidelity import to_uint8_rgb


def _images(n: int, channels: int, size: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, channels, size, size, generator=g) * 1.6 - 0.8 + shift).clamp(-1, 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_featurenet_fd_through_torch_fidelity_matches_features(tmp_path, channels):
    torch.manual_seed(0)
    net = FeatureNet(in_channels=channels, feature_dim=8, width=4).eval()
    path = tmp_path / "fnet.pt"
    save_feature_net(net, path)
    gen, ref = _images(40, channels, 8, 0.2, 1), _images(50, channels, 8, 0.0, 2)

    out = frechet_distance(gen, ref, feature_extractor="featurenet", feature_net_path=path, batch_size=16, kid=True)

    def feats(images: torch.Tensor) -> torch.Tensor:  # the quantisation the extractor sees
        x = to_uint8_rgb(images).float() / 127.5 - 1
        with torch.no_grad():
            return net.features(x[:, :channels] if channels == 3 else x.mean(1, keepdim=True))

    assert set(out) == {"fd", "kid"}
    assert out["fd"] == pytest.approx(frechet_distance_features(feats(gen), feats(ref)), rel=1e-4, abs=1e-6)
    assert math.isfinite(out["kid"])


def test_missing_weights_raise_clear_errors(tmp_path):
    x = _images(4, 3, 8, 0.0, 0)
    with pytest.raises(ValueError, match="inception_weights_path"):
        frechet_distance(x, x)
    missing = tmp_path / "weights-inception.pth"
    with pytest.raises(ValueError, match="weights-inception.pth"):
        frechet_distance(x, x, inception_weights_path=missing)
    with pytest.raises(ValueError, match="feature_net_path"):
        frechet_distance(x, x, feature_extractor="featurenet")
    with pytest.raises(ValueError, match="feature_extractor"):
        frechet_distance(x, x, feature_extractor="clip")


def _random_inception_weights(path, monkeypatch) -> None:
    """Save a structurally valid (random) state dict for torch-fidelity's Inception-v3."""
    with monkeypatch.context() as patch:
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        torch.manual_seed(0)
        model = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), path)


@pytest.mark.slow  # ~20 s on 2 CPU cores: Inception at 299x299 plus eigvals of a 2048x2048 product
def test_inception_loads_local_weights_file(tmp_path, monkeypatch):
    path = tmp_path / "inception.pth"
    _random_inception_weights(path, monkeypatch)
    gen, ref = _images(2, 3, 32, 0.3, 3), _images(2, 1, 32, 0.0, 4)
    out = frechet_distance(gen, ref, inception_weights_path=path, cuda=False)
    assert set(out) == {"fd"}
    assert math.isfinite(out["fd"])
