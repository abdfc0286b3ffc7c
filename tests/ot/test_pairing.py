"""Screened pairing (bf16 screen, exact re-rank, verified) equals the float64 argmax / Gumbel-max draw."""

import pytest
import torch

from sdfm.ot import SemidiscretePotential
from sdfm.ot.kernel import augment_keys
from sdfm.ot.pairing import ScreenedPairing, _gumbel, default_pairing


def _dense64(x, keys):
    return x.double() @ keys[:, :-1].double().T + keys[:, -1].double()


@pytest.mark.parametrize("k", [1, 8])
def test_screened_argmax_is_the_float64_argmax(k):
    gen = torch.Generator().manual_seed(0)
    y = torch.randn(3000, 20, generator=gen)
    keys = augment_keys(y, -0.5 * y.double().square().sum(1) + 0.1 * torch.randn(3000, generator=gen, dtype=torch.float64))
    x = torch.randn(500, 20, generator=gen)
    pairing = ScreenedPairing(keys, k=k, block_elems=500 * 700)  # 5 column chunks
    assert torch.equal(pairing(x), _dense64(x, keys).argmax(dim=1))
    stats = pairing.last_stats
    assert stats.rows == 500
    # k = 1 can never be verified (its own screened score is the bound): every row falls back
    assert stats.fallback_rows == 500 if k == 1 else stats.fallback_rows < 25


def test_adversarial_near_ties_below_the_bf16_resolution():
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(40, 16, generator=gen) * 3
    # 40 clusters of 50 keys each, the keys of a cluster 1e-4 apart: bf16 cannot tell them apart
    y = (base[:, None, :] + 1e-4 * torch.randn(40, 50, 16, generator=gen)).reshape(2000, 16)
    keys = augment_keys(y, torch.zeros(2000, dtype=torch.float64))
    x = torch.randn(300, 16, generator=gen)
    dense = _dense64(x, keys)
    top2 = dense.topk(2, dim=1).values
    assert (top2[:, 0] - top2[:, 1] < 2e-3).float().mean() > 0.5  # most rows are near-ties
    pairing = ScreenedPairing(keys, k=8)
    assert torch.equal(pairing(x), dense.argmax(dim=1))
    assert pairing.last_stats.fallback_rows > 0  # the verification caught them


def test_exact_ties_go_to_the_lowest_index():
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    keys = augment_keys(y, torch.zeros(4, dtype=torch.float64))
    x = torch.tensor([[2.0, 1.0], [1.0, 3.0]])
    assert ScreenedPairing(keys, k=2)(x).tolist() == [0, 1]


def test_screened_gumbel_draw_is_the_exact_gumbel_max_draw():
    gen = torch.Generator().manual_seed(2)
    y = torch.randn(700, 5, generator=gen)
    keys = augment_keys(y, 0.3 * torch.randn(700, generator=gen, dtype=torch.float64))
    x = torch.randn(64, 5, generator=gen)
    eps = 0.5
    pairing = ScreenedPairing(keys, k=4, block_elems=64 * 300)  # chunks of 300 columns
    drawn = pairing(x, eps, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    noise = torch.cat([_gumbel((64, 300), replay, "cpu"), _gumbel((64, 300), replay, "cpu"),
                       _gumbel((64, 100), replay, "cpu")], dim=1)
    assert torch.equal(drawn, (_dense64(x, keys) / eps + noise.double()).argmax(dim=1))


def test_screened_gumbel_draw_follows_the_softmax():
    y = torch.tensor([[0.0], [0.3], [0.5], [1.0]])
    keys = augment_keys(y, torch.tensor([0.0, 0.1, -0.2, -0.4], dtype=torch.float64))
    x = torch.full((40000, 1), 0.7)
    eps = 0.25
    counts = torch.bincount(ScreenedPairing(keys, k=2)(x, eps, torch.Generator().manual_seed(3)), minlength=4)
    probs = torch.softmax(_dense64(x[:1], keys)[0] / eps, 0)
    stat = float(((counts.double() - 40000 * probs) ** 2 / (40000 * probs)).sum())
    assert stat < 16.3  # chi-square with 3 degrees of freedom, p = 0.001


def test_potential_assign_methods_agree():
    gen = torch.Generator().manual_seed(4)
    y = torch.randn(500, 8, generator=gen)
    pot = SemidiscretePotential(y, torch.randn(500, generator=gen))
    x = torch.randn(200, 8, generator=gen)
    assert torch.equal(pot.assign(x, method="screened"), pot.assign(x, method="exact"))
    assert pot.pairing_backend("cpu") == "torch-fp32" and default_pairing("cpu") == "exact"
    with pytest.raises(ValueError, match="method"):
        pot.assign(x, method="fast")
