"""Conditioning shared by the velocity networks: time (and MeanFlow interval) and class embeddings.

A flow model is conditioned on the time ``t`` in [0, 1], on the start time ``r <= t`` when it
predicts a MeanFlow average velocity ``u(z, r, t)``, and optionally on a class label. The three
are mapped to one vector ``c`` of width ``embed_dim``:

    c = MLP(sin_emb(t)) [+ MLP(sin_emb(t - r))] [+ E[label]],

where ``sin_emb`` is the transformer sinusoidal embedding of ``1000 t`` and ``E`` has
``num_classes + 1`` rows: the last one is the "null" class used for unconditional predictions
and for label dropout (classifier-free guidance).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ClassEmbedding", "Conditioning", "TimeEmbedding", "as_batch_times", "sinusoidal_embedding"]

#: Times in [0, 1] are multiplied by this before the sinusoidal embedding (DDPM uses integer steps).
TIME_SCALE = 1000.0


def as_batch_times(t: Tensor | float, batch: int, like: Tensor) -> Tensor:
    """Broadcast a scalar or ``(B,)``/``(B, 1, ...)`` time to a flat ``(B,)`` tensor like ``like``."""
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    if t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.numel() != batch:
        raise ValueError(f"expected {batch} times or one, got shape {tuple(t.shape)}")
    return t.reshape(batch)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal features ``[cos(w_k s), sin(w_k s)]`` of ``s = TIME_SCALE * t``.

    Args:
        t: (B,) times, nominally in [0, 1].
        dim: output width (an odd width gets one zero column).
        max_period: the slowest frequency is ``1 / max_period``; ``w_k = max_period^(-k / half)``.

    Returns:
        (B, dim) features.
    """
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)  # at least float32, even for half-precision inputs
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = (TIME_SCALE * t.to(dtype))[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb.to(t.dtype)


class TimeEmbedding(nn.Module):
    """``MLP(sin_emb(t))``: sinusoidal features of width ``freq_dim`` -> Linear -> SiLU -> Linear."""

    def __init__(self, embed_dim: int, freq_dim: int = 64) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(sinusoidal_embedding(t, self.freq_dim))


class ClassEmbedding(nn.Module):
    """Label embedding with an extra null class ``num_classes`` (unconditional / dropped labels)."""

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, embed_dim)

    def forward(self, labels: Tensor | None, batch: int, drop: bool | Tensor = False) -> Tensor:
        """Embed ``labels`` (B,), replaced by the null class where ``drop`` is true or labels are None."""
        device = self.table.weight.device
        null = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if labels is None:
            return self.table(null)
        labels = labels.to(device=device, dtype=torch.long).reshape(batch)
        drop = torch.as_tensor(drop, dtype=torch.bool, device=device)
        return self.table(torch.where(drop, null, labels))


class Conditioning(nn.Module):
    """The conditioning vector ``c(t, r, label)`` of width ``embed_dim``.

    Args:
        embed_dim: width of ``c``.
        freq_dim: width of the sinusoidal features.
        num_classes: number of labels, or ``None`` for an unconditional model.
        mean_flow: also embed the interval length ``t - r`` (``r = t`` when not given, so the
            model then predicts the instantaneous velocity ``u(z, t, t) = v(z, t)``).
    """

    def __init__(self, embed_dim: int, freq_dim: int = 64, num_classes: int | None = None, mean_flow: bool = False):
        super().__init__()
        self.time = TimeEmbedding(embed_dim, freq_dim)
        self.interval = TimeEmbedding(embed_dim, freq_dim) if mean_flow else None
        self.label = ClassEmbedding(num_classes, embed_dim) if num_classes is not None else None

    def forward(
        self, t: Tensor | float, like: Tensor, labels: Tensor | None = None, r: Tensor | float | None = None,
        drop_labels: bool | Tensor = False,
    ) -> Tensor:
        """Return (B, embed_dim) for a batch shaped like ``like`` (B = ``like.shape[0]``)."""
        batch = like.shape[0]
        t = as_batch_times(t, batch, like)
        c = self.time(t)
        if self.interval is not None:
            r = t if r is None else as_batch_times(r, batch, like)
            c = c + self.interval(t - r)
        elif r is not None:
            raise ValueError("r was given to a model built without mean_flow=True")
        if self.label is not None:
            c = c + self.label(labels, batch, drop_labels)
        elif labels is not None:
            raise ValueError("labels were given to a model built without num_classes")
        return c
