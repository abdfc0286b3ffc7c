"""Precision / recall through torch-fidelity (``frechet_distance(prc=True)``) against sdfm's k-NN definition."""

import pytest
import torch

from sdfm.metrics import FeatureNet, frechet_distance, precision_recall, save_feature_net
from sdfm.metrics.fidelity import to_uint8_rgb


def _images(n: int, shift: float, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) * spread - spread / 2 + shift).clamp(-1, 1)


@pytest.fixture(scope="module")
def net_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prc") / "fnet.pt"
    save_feature_net(FeatureNet(in_channels=1, feature_dim=8, width=4).eval(), path)
    return path


def _feats(path, images):
    """The features the extractor sees: uint8 quantisation, back to [-1, 1], channel mean."""
    from sdfm.metrics import load_feature_net

    net = load_feature_net(path)
    x = to_uint8_rgb(images).float() / 127.5 - 1
    with torch.no_grad():
        return net.features(x.mean(1, keepdim=True))


@pytest.mark.parametrize("n_gen", [60, 90])  # equal sizes (one pass), and more samples than test images
def test_prc_matches_the_knn_definition_on_equal_size_subsets(net_path, n_gen):
    gen, ref = _images(n_gen, 0.3, 1.2, 1), _images(60, 0.0, 1.6, 2)
    out = frechet_distance(gen, ref, feature_extractor="featurenet", feature_net_path=net_path, batch_size=32,
                           prc=True, prc_k=3, cuda=False)
    precision, recall = precision_recall(_feats(net_path, ref[:60]), _feats(net_path, gen[:60]), k=3)
    assert out["precision"] == pytest.approx(precision, abs=1e-6)  # float32 mean; one sample is 1/60
    assert out["recall"] == pytest.approx(recall, abs=1e-6)
    assert 0 < out["precision"] < 1 or 0 < out["recall"] < 1  # a case where the balls matter
    assert set(out) == {"fd", "precision", "recall"}


def test_prc_of_a_set_against_itself_is_one_and_k_is_checked(net_path):
    ref = _images(40, 0.0, 1.6, 3)
    out = frechet_distance(ref, ref, feature_extractor="featurenet", feature_net_path=net_path, prc=True, cuda=False)
    assert out["precision"] == 1.0 and out["recall"] == 1.0
    with pytest.raises(ValueError, match="k=3"):
        frechet_distance(ref[:3], ref, feature_extractor="featurenet", feature_net_path=net_path, prc=True,
                         cuda=False)
