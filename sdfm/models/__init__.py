"""Velocity networks: an MLP for vectors, a compact UNet for images, and shared conditioning.

Every model is called as ``model(x, t, labels=None, r=None, drop_labels=False)`` and returns a
tensor shaped like ``x``: the velocity ``v(x, t)``, or the MeanFlow average velocity
``u(x, r, t)`` for models built with ``mean_flow=True``.
"""

from __future__ import annotations

import math

from torch import nn

from sdfm.models.embeddings import ClassEmbedding, Conditioning, TimeEmbedding, sinusoidal_embedding
from sdfm.models.mlp import MLPVelocity
from sdfm.models.unet import UNetVelocity

__all__ = [
    "ClassEmbedding",
    "Conditioning",
    "MLPVelocity",
    "TimeEmbedding",
    "UNetVelocity",
    "build_model",
    "sinusoidal_embedding",
]


def build_model(kind: str, sample_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Build a velocity network for samples of shape ``sample_shape``.

    Args:
        kind: ``"mlp"`` (any shape; images are flattened inside the model) or ``"unet"``
            (``sample_shape = (C, H, W)``).
        sample_shape: shape of one sample, without the batch dimension.
        **kwargs: constructor arguments of :class:`MLPVelocity` or :class:`UNetVelocity`.
    """
    sample_shape = tuple(int(s) for s in sample_shape)
    if kind == "mlp":
        return MLPVelocity(math.prod(sample_shape), **kwargs)
    if kind == "unet":
        if len(sample_shape) != 3:
            raise ValueError(f"a UNet needs (C, H, W) samples, got shape {sample_shape}")
        return UNetVelocity(sample_shape[0], (sample_shape[1], sample_shape[2]), **kwargs)
    raise ValueError(f"unknown model kind {kind!r}: expected 'mlp' or 'unet'")
