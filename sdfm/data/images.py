"""Helpers shared by the image loaders: byte <-> model-space conversion, splits, flips, checks."""

from __future__ import annotations

import numpy as np
import torch

from sdfm.data.dataset import DataError, Dataset

__all__ = [
    "check_labels",
    "from_uint8",
    "image_dataset",
    "split_indices",
    "to_uint8",
]


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """Map uint8 images in 0..255 to float32 in [-1, 1] by ``x = u / 127.5 - 1``.

    The same operation runs when a data set is built and when its cache is loaded, so the
    two give bit-identical tensors.
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32)
    return x.div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Invert :func:`from_uint8`: float32 in [-1, 1] back to the uint8 values 0..255."""
    u = (images.detach().cpu().to(torch.float32) + 1.0).mul_(127.5).round_().clamp_(0, 255)
    return u.to(torch.uint8).numpy()


def check_labels(labels, num_classes: int, n: int, source: str, *, offset: int = 0) -> np.ndarray:
    """Return ``labels - offset`` as int64 after checking count and range.

    Args:
        labels: array-like of integer class ids as stored in ``source``.
        num_classes: the number of classes; stored ids must lie in
            ``offset .. offset + num_classes - 1``.
        n: the number of images the labels belong to.
        source: the file the labels came from, named in errors.
        offset: the first class id used by the file (1 for the 1-based ImageNet labels).

    Raises:
        DataError: wrong count, non-integer labels, or a label out of range.
    """
    array = np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != n:
        raise DataError(f"{source}: {array.shape} labels for {n} images; the file is damaged, download it again")
    if n and not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{source}: labels of dtype {array.dtype} are not integers; download the file again")
    array = array.astype(np.int64) - offset
    if n and (array.min() < 0 or array.max() >= num_classes):
        low, high = int(array.min()) + offset, int(array.max()) + offset
        raise DataError(
            f"{source}: labels span {low}..{high}, outside {offset}..{offset + num_classes - 1}; "
            "the file is damaged or from another data set"
        )
    return array


def split_indices(n: int, n_test: int, seed: int, source: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(n)`` into train and test index arrays (each sorted).

    Raises:
        DataError: ``n_test`` leaves no training sample.
    """
    if not 0 <= n_test < n:
        raise DataError(f"{source}: n_test={n_test} must leave at least one of the {n} samples for training")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def image_dataset(
    name: str,
    train: np.ndarray,
    test: np.ndarray,
    train_labels: np.ndarray | None,
    test_labels: np.ndarray | None,
    num_classes: int | None,
    *,
    flip: bool = False,
) -> Dataset:
    """Assemble an image :class:`Dataset` from uint8 NCHW arrays.

    With ``flip`` the training split is doubled: image ``N + i`` is image ``i`` mirrored left
    to right (``torch.flip(x, dims=[-1])``), with the same label. The test split is untouched.
    """
    for split, array in (("train", train), ("test", test)):
        if array.dtype != np.uint8 or array.ndim != 4:
            raise DataError(f"data set {name!r}: {split} must be uint8 (N, C, H, W), got {array.dtype} {array.shape}")
    if flip:
        train = np.concatenate([train, train[..., ::-1]])
        if train_labels is not None:
            train_labels = np.concatenate([train_labels, train_labels])

    def labels(array: np.ndarray | None) -> torch.Tensor | None:
        return None if array is None else torch.from_numpy(np.asarray(array, dtype=np.int64).copy())

    return Dataset(
        name=name,
        train=from_uint8(train),
        test=from_uint8(test),
        train_labels=labels(train_labels),
        test_labels=labels(test_labels),
        num_classes=num_classes,
        kind="images",
    )
