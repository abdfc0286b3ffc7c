"""Downsampled ImageNet (32x32 and 64x64) from the official npz batches in a local folder.

The folder holds ``train_data_batch_1.npz`` .. ``train_data_batch_10.npz`` and
``val_data.npz``. Each file has ``data``, uint8 (n, 3 R R) rows stored channel-planar (the R
block, then G, then B, each row-major), ``labels``, 1-based class ids 1..1000, and
sometimes ``mean``, which is ignored. The validation set is the test split.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from sdfm.data.archives import archive_hint, load_npz
from sdfm.data.dataset import DataError, Dataset
from sdfm.data.images import check_labels, image_dataset
from sdfm.data.options import OptionError, as_bool, as_dir, as_optional_int

__all__ = ["IMAGENET_DATASETS", "ImageNetBuilder", "read_batch"]

NUM_CLASSES = 1000
VAL_FILE = "val_data.npz"
_TRAIN_PATTERN = re.compile(r"train_data_batch_(\d+)\.npz")


def read_batch(path: Path, resolution: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read one npz batch as uint8 (n, 3, R, R) images and 0-based int64 labels.

    Args:
        path: the ``.npz`` file.
        resolution: the side R the images must have.
        limit: read at most this many rows.

    Raises:
        DataError: the file is missing, not a readable npz, lacks ``data`` or ``labels``, has
            rows of the wrong size or type, or labels outside 1..1000.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file; download the downsampled ImageNet batches there"
                        f"{archive_hint(path.parent)}")
    arrays = load_npz(path, ("data", "labels"), "download the downsampled ImageNet batch again")
    if len(arrays) < 2:
        missing = sorted({"data", "labels"} - set(arrays))
        raise DataError(f"{path}: no {' or '.join(missing)} array in the npz; download the file again")
    data, labels = arrays["data"], arrays["labels"]
    row = 3 * resolution * resolution
    if data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (n, {row}); download it again")
    if data.shape[1] != row:
        side = int(round((data.shape[1] / 3) ** 0.5))
        hint = f", i.e. {side}x{side} images" if 3 * side * side == data.shape[1] else ""
        raise DataError(
            f"{path}: rows of {data.shape[1]} values{hint}, expected 3*{resolution}*{resolution} = {row}; "
            f"point the imagenet{resolution} path at the {resolution}x{resolution} batches"
        )
    labels = check_labels(labels, NUM_CLASSES, len(data), str(path), offset=1)
    if limit is not None:
        data, labels = data[:limit], labels[:limit]
    return data.reshape(-1, 3, resolution, resolution), labels


def _train_files(folder: Path) -> list[Path]:
    """The training batches, in batch order; they must be numbered 1..k without gaps."""
    numbered = {}
    for path in folder.iterdir():
        match = _TRAIN_PATTERN.fullmatch(path.name)
        if match:
            numbered[int(match.group(1))] = path
    if not numbered:
        raise DataError(f"{folder}: no train_data_batch_<k>.npz files; download the downsampled ImageNet batches "
                        f"there{archive_hint(folder)}")
    for k in range(1, max(numbered) + 1):
        if k not in numbered:
            gap = folder / f"train_data_batch_{k}.npz"
            raise DataError(f"{gap}: missing while batch {max(numbered)} exists; download it")
    return [numbered[k] for k in sorted(numbered)]


class ImageNetBuilder:
    """Builds ``imagenet32`` or ``imagenet64``; the options are the keyword arguments of :meth:`__call__`."""

    def __init__(self, resolution: int) -> None:
        self.resolution = resolution
        self.name = f"imagenet{resolution}"

    def __repr__(self) -> str:
        return f"ImageNetBuilder({self.resolution})"

    @staticmethod
    def check_options(*, path, max_train, flip) -> dict:
        """The options as the builder uses them; an :class:`OptionError` for a bad one or a folder without batches."""
        folder = as_dir("path", path)
        try:
            _train_files(folder)
        except DataError as error:
            raise OptionError("path", str(error)) from None
        if not (folder / VAL_FILE).is_file():
            raise OptionError("path", f"{folder / VAL_FILE}: no such file; download the downsampled ImageNet "
                                      f"validation batch there{archive_hint(folder)}")
        return {"path": folder, "max_train": as_optional_int("max_train", max_train, minimum=1),
                "flip": as_bool("flip", flip)}

    def __call__(self, *, path: str | Path, max_train: int | None = None, flip: bool = False) -> Dataset:
        """Read the batches in ``path``.

        Args:
            path: folder holding ``train_data_batch_<k>.npz`` and ``val_data.npz``.
            max_train: keep only the first ``max_train`` training images (before flipping).
            flip: double the training split with mirrored copies (1.28M -> 2.56M, as in the paper).

        Returns:
            An ``"images"`` data set of shape (N, 3, R, R) with labels 0..999.
        """
        folder, max_train, flip = self.check_options(path=path, max_train=max_train, flip=flip).values()
        images, labels, count = [], [], 0
        for file in _train_files(folder):
            remaining = None if max_train is None else max_train - count
            if remaining == 0:
                break
            batch, batch_labels = read_batch(file, self.resolution, remaining)
            images.append(batch)
            labels.append(batch_labels)
            count += len(batch)
        test, test_labels = read_batch(folder / VAL_FILE, self.resolution)
        train = np.concatenate(images) if len(images) > 1 else images[0]
        train_labels = np.concatenate(labels)
        return image_dataset(self.name, train, test, train_labels, test_labels, NUM_CLASSES, flip=flip)


IMAGENET_DATASETS = {builder.name: builder for builder in (ImageNetBuilder(32), ImageNetBuilder(64))}
