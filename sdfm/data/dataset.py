"""The in-memory data set: train and test splits in model space, with optional class labels."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["DataError", "Dataset", "KINDS"]

KINDS = ("points", "images")


class DataError(ValueError):
    """A data set, a data file or a data option is unusable.

    The message is one line: it names the file (or option) at fault and says how to fix it.
    """


@dataclass
class Dataset:
    """A data set as the models see it.

    Points are raw coordinates, shape (N, d). Images are (N, C, H, W), float32 in [-1, 1]
    (``x = u / 127.5 - 1`` for the stored bytes ``u`` in 0..255).

    Attributes:
        name: registry name, e.g. ``"moons"`` or ``"imagenet32"``.
        train: float32 training split; with ``flip=True`` it holds every image and its mirror.
        test: float32 held-out split, same per-sample layout as ``train``.
        train_labels: int64 (N,) class ids in ``0..num_classes-1``, or None when unlabelled.
        test_labels: int64 class ids of ``test``, or None.
        num_classes: number of classes, or None when unlabelled.
        kind: ``"points"`` or ``"images"``.
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    num_classes: int | None
    kind: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise DataError(f"data set {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.train.shape[1:] != self.test.shape[1:]:
            raise DataError(
                f"data set {self.name!r}: train samples {tuple(self.train.shape[1:])} and test samples "
                f"{tuple(self.test.shape[1:])} differ in shape; rebuild it"
            )
        labelled = (self.train_labels is not None, self.test_labels is not None, self.num_classes is not None)
        if any(labelled) and not all(labelled):
            raise DataError(
                f"data set {self.name!r}: train_labels, test_labels and num_classes must be all set or all None"
            )

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample, e.g. ``(2,)`` for 2-D points or ``(1, 8, 8)`` for digits."""
        return tuple(self.train.shape[1:])

    @property
    def dim(self) -> int:
        """Number of coordinates of one sample, ``prod(sample_shape)``."""
        return math.prod(self.sample_shape)

    def flat_train(self) -> torch.Tensor:
        """The training split as an (N, dim) float32 matrix (a view when ``train`` is contiguous)."""
        return self.train.reshape(self.train.shape[0], self.dim)
