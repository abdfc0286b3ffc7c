"""A small CNN classifier whose penultimate layer embeds small image sets for Frechet distances.

Inception-v3 features are meaningless for 8x8 digits and weak for 28x28 sketches, and the
Inception weights may be unavailable offline. For such sets we train :class:`FeatureNet` on the
labelled training images and compute Frechet distances in its ``feature_dim`` embedding
(report them as e.g. ``fd_digits``, never as ``fid``).

Architecture (any H, W >= 4; ``width`` w): three 3x3 conv + GroupNorm + SiLU stages with w, 2w,
4w channels (the last two stride 2), global average pooling, a linear map to the embedding
``h = features(x)`` (no nonlinearity, so no dead coordinates), then ``logits = W SiLU(h) + c``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdfm.io import atomic_torch_save

__all__ = ["FeatureNet", "FeatureNetConfig", "train_feature_net", "save_feature_net", "load_feature_net"]

_FORMAT = "sdfm.FeatureNet/1"


@dataclass(frozen=True)
class FeatureNetConfig:
    """Hyper-parameters that rebuild a :class:`FeatureNet` (stored beside its weights)."""

    in_channels: int = 1
    num_classes: int = 10
    feature_dim: int = 64
    width: int = 32


def _stage(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.GroupNorm(min(8, c_out), c_out), nn.SiLU()
    )


class FeatureNet(nn.Module):
    """Small CNN classifier; :meth:`features` is the embedding, :meth:`forward` the logits.

    Args:
        in_channels: image channels (1 for grey, 3 for colour).
        num_classes: classifier outputs.
        feature_dim: embedding dimension of :meth:`features`.
        width: channels of the first stage.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, feature_dim: int = 64, width: int = 32):
        super().__init__()
        self.config = FeatureNetConfig(in_channels, num_classes, feature_dim, width)
        self.body = nn.Sequential(
            _stage(in_channels, width, 1), _stage(width, 2 * width, 2), _stage(2 * width, 4 * width, 2)
        )
        self.embed = nn.Linear(4 * width, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """(B, feature_dim) embedding of images x (B, C, H, W) scaled to [-1, 1]."""
        return self.embed(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> Tensor:
        """(B, num_classes) logits."""
        return self.head(F.silu(self.features(x)))


@torch.no_grad()
def _accuracy(net: FeatureNet, images: Tensor, labels: Tensor, batch_size: int, device: torch.device) -> float:
    net.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        correct += int((net(x).argmax(dim=1).cpu() == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)


def train_feature_net(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    feature_dim: int = 64,
    width: int = 32,
    device: str | torch.device | None = None,
) -> tuple[FeatureNet, float]:
    """Train a :class:`FeatureNet` by Adam on cross-entropy; hold out a seeded 10% split.

    Args:
        images: (N, C, H, W) float images in [-1, 1].
        labels: (N,) integer class labels in [0, num_classes); num_classes = max label + 1.
        epochs: passes over the 90% training split.
        batch_size: minibatch size.
        lr: Adam learning rate.
        seed: seeds the split, the initialisation and the shuffling (the global RNG is restored).
        progress: print one line per epoch to stderr.
        feature_dim: embedding dimension.
        width: channels of the first stage.
        device: where to train (default: CUDA when available); the net is returned on the CPU.

    Returns:
        The trained net in eval mode, and its accuracy on the held-out 10% (at least one image).
    """
    if images.dim() != 4 or len(images) != len(labels) or len(images) < 2:
        raise ValueError(f"need images (N, C, H, W) and labels (N,), N >= 2; got {tuple(images.shape)}, {len(labels)}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images, labels = images.detach().float().cpu(), labels.detach().long().cpu()
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    n_held = max(1, len(images) // 10)
    held, train = order[:n_held], order[n_held:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureNet(images.shape[1], int(labels.max()) + 1, feature_dim, width).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    for epoch in range(epochs):
        net.train()
        perm = train[torch.randperm(len(train), generator=generator)]
        total, count = 0.0, 0
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            x, y = images[idx].to(device), labels[idx].to(device)
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        if progress:
            print(f"feature net epoch {epoch + 1}/{epochs}: train loss {total / max(count, 1):.4f}", file=sys.stderr)
    accuracy = _accuracy(net, images[held], labels[held], batch_size, device)
    if progress:
        print(f"feature net held-out accuracy {accuracy:.4f} on {n_held} images", file=sys.stderr)
    return net.cpu().eval(), accuracy


def save_feature_net(net: FeatureNet, path: str | Path, metadata: dict | None = None) -> None:
    """Write the net's config and weights (and optional metadata) atomically with ``torch.save``."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    atomic_torch_save(
        {"format": _FORMAT, "config": asdict(net.config), "state_dict": state, "metadata": dict(metadata or {})},
        path,
    )


def load_feature_net(path: str | Path) -> FeatureNet:
    """Rebuild a :class:`FeatureNet` saved by :func:`save_feature_net`, on the CPU, in eval mode."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a FeatureNet file written by save_feature_net")
    net = FeatureNet(**payload["config"])
    net.load_state_dict(payload["state_dict"])
    return net.eval()
