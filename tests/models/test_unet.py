"""Tests of the UNet velocity field (sdfm.models.unet)."""

from __future__ import annotations

import pytest
import torch

from sdfm.models import UNetVelocity, build_model

SMALL = dict(base_channels=8, num_res_blocks=1)


def _perturb(model):
    """Zero-initialised output layers make a fresh UNet output 0; randomise them for the tests."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize(
    "shape, options",
    [
        ((1, 8, 8), dict(channel_mults=(1, 2), attention_resolutions=(4,))),
        ((1, 28, 28), dict(channel_mults=(1, 2, 2))),
        ((1, 28, 28), dict(channel_mults=(1, 2, 2, 2))),  # 28 -> padded to 32
        ((3, 32, 32), dict(channel_mults=(1, 2), attention_resolutions=(16,))),
    ],
)
@pytest.mark.parametrize("num_classes", [None, 10])
def test_unet_forward_shapes(shape, options, num_classes):
    model = build_model("unet", shape, num_classes=num_classes, **SMALL, **options)
    x = torch.randn(2, *shape)
    labels = torch.tensor([1, 7]) if num_classes else None
    with torch.no_grad():
        out = model(x, torch.rand(2), labels=labels)
    assert out.shape == x.shape
    assert float(out.abs().max()) == 0.0  # zero-initialised read-out
    assert model.padded_size[0] % 2 ** (len(options["channel_mults"]) - 1) == 0


def test_unet_padding_is_cropped_and_does_not_leak():
    model = _perturb(UNetVelocity(1, 28, channel_mults=(1, 2, 2, 2), **SMALL))
    assert model.padded_size == (32, 32)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        out = model(x, 0.4)
    assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all()
    assert float(out.abs().max()) > 0
    # Each sample is processed independently of the others in the batch.
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1], 0.4), out[:1], rtol=1e-4, atol=1e-5)


def test_unet_null_class_and_label_dropout_mask():
    model = _perturb(UNetVelocity(1, 8, num_classes=3, **SMALL)).eval()
    x, t, labels = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 1, 2])
    null, cond = model(x, t), model(x, t, labels=labels)
    assert not torch.allclose(null, cond)
    torch.testing.assert_close(model(x, t, labels=labels, drop_labels=True), null)
    mixed = model(x, t, labels=labels, drop_labels=torch.tensor([True, False, False]))
    torch.testing.assert_close(mixed[0], null[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mixed[1:], cond[1:], rtol=1e-4, atol=1e-5)


def test_unet_mean_flow_jvp_with_attention():
    torch.manual_seed(0)
    model = _perturb(UNetVelocity(1, 8, attention_resolutions=(8, 4), mean_flow=True, **SMALL)).double()
    z, v = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.randn(2, 1, 8, 8, dtype=torch.float64)
    r, t = torch.tensor([0.1, 0.5], dtype=torch.float64), torch.tensor([0.9, 0.5], dtype=torch.float64)
    one, zero = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    u, dudr = torch.func.jvp(lambda a, b, c: model(a, c, r=b), (z, r, t), (v, one, zero))
    eps = 1e-7  # central differences: truncation ~ eps^2 * (1000 rad per unit time)^3
    finite = (model(z + eps * v, t, r=r + eps) - model(z - eps * v, t, r=r - eps)) / (2 * eps)
    torch.testing.assert_close(dudr, finite, rtol=1e-5, atol=1e-5)
    assert u.shape == z.shape
