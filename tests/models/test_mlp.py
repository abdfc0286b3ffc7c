"""Tests of the MLP velocity field and the shared conditioning (sdfm.models)."""

from __future__ import annotations

import pytest
import torch

from sdfm.models import MLPVelocity, build_model, sinusoidal_embedding


def test_sinusoidal_embedding_shape_and_distinct_times():
    emb = sinusoidal_embedding(torch.tensor([0.0, 0.5, 1.0]), 9)
    assert emb.shape == (3, 9)
    torch.testing.assert_close(emb[0, :4], torch.ones(4))  # cos(0)
    assert (emb[1] - emb[2]).abs().max() > 0.1


def test_mlp_shapes_scalar_and_batch_times():
    model = MLPVelocity(3, hidden=32, depth=2)
    x = torch.randn(5, 3)
    out = model(x, 0.3)
    assert out.shape == (5, 3)
    torch.testing.assert_close(out, model(x, torch.full((5,), 0.3)))
    assert not torch.allclose(out, model(x, 0.9))


def test_mlp_flattens_images_through_build_model():
    model = build_model("mlp", (1, 4, 4), hidden=16, depth=1)
    assert model(torch.randn(2, 1, 4, 4), torch.rand(2)).shape == (2, 1, 4, 4)
    with pytest.raises(ValueError, match="features"):
        model(torch.randn(2, 5), 0.1)
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("transformer", (2,))


def test_mlp_labels_null_class_and_mean_flow():
    model = MLPVelocity(2, hidden=16, depth=1, num_classes=3, mean_flow=True)
    x, t = torch.randn(4, 2), torch.rand(4)
    labels = torch.tensor([0, 1, 2, 0])
    cond = model(x, t, labels=labels)
    null = model(x, t)
    torch.testing.assert_close(model(x, t, labels=labels, drop_labels=True), null)
    mask = torch.tensor([True, False, True, False])
    mixed = model(x, t, labels=labels, drop_labels=mask)
    torch.testing.assert_close(mixed[mask], null[mask])
    torch.testing.assert_close(mixed[~mask], cond[~mask])
    torch.testing.assert_close(model(x, t, labels=labels, r=t), cond)  # r defaults to t
    assert not torch.allclose(model(x, t, labels=labels, r=torch.zeros(4)), cond)


def test_unconditional_mlp_refuses_labels_and_r():
    model = MLPVelocity(2, hidden=8, depth=1)
    with pytest.raises(ValueError, match="num_classes"):
        model(torch.randn(2, 2), 0.5, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="mean_flow"):
        model(torch.randn(2, 2), 0.5, r=0.1)
