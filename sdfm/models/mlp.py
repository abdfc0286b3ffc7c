"""A multilayer perceptron velocity field for low-dimensional (or flattened) data."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sdfm.models.embeddings import Conditioning

__all__ = ["MLPVelocity"]


class MLPVelocity(nn.Module):
    """Velocity ``v(x, t)`` (or MeanFlow average velocity ``u(x, r, t)``) as an MLP.

    The input ``[x, c(t, r, label)]`` goes through ``depth`` hidden layers of width ``hidden``
    with SiLU activations and a linear read-out of width ``dim``. Inputs of shape (B, ...) are
    flattened to (B, dim) and the output takes the input's shape back, so the same network serves
    images.

    Args:
        dim: number of features of one sample (product of the sample shape).
        hidden: width of the hidden layers.
        depth: number of hidden layers (>= 1).
        time_embed_dim: width of the conditioning vector.
        num_classes: number of labels for a class-conditional model (plus a null class).
        mean_flow: also condition on the start time r (MeanFlow).
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 256,
        depth: int = 4,
        time_embed_dim: int = 64,
        num_classes: int | None = None,
        mean_flow: bool = False,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.dim = dim
        self.num_classes = num_classes
        self.mean_flow = mean_flow
        self.cond = Conditioning(time_embed_dim, time_embed_dim, num_classes, mean_flow)
        layers: list[nn.Module] = []
        width = dim + time_embed_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        labels: Tensor | None = None,
        r: Tensor | float | None = None,
        drop_labels: bool | Tensor = False,
    ) -> Tensor:
        """Return the velocity at ``(x, t)``, same shape as ``x``.

        Args:
            x: (B, ...) states with ``dim`` features each.
            t: scalar or (B,) times in [0, 1].
            labels: (B,) class labels, or ``None`` (the null class) for a conditional model.
            r: scalar or (B,) start times (MeanFlow models only; default ``r = t``).
            drop_labels: replace the labels by the null class (a bool, or a (B,) mask).
        """
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim} features per sample, got {flat.shape[1]}")
        c = self.cond(t, flat, labels, r, drop_labels)
        return self.net(torch.cat([flat, c.to(flat.dtype)], dim=1)).reshape(x.shape)

