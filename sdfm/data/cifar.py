"""CIFAR-10 from the python pickles: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``.

Each pickle is a dict with ``b"data"``, uint8 (10000, 3072) rows stored channel-planar
(R, G, B blocks of 32x32, row-major), and ``b"labels"``, a list of ids 0..9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sdfm.data.archives import archive_hint
from sdfm.data.dataset import DataError, Dataset
from sdfm.data.images import check_labels, image_dataset
from sdfm.data.options import OptionError, as_bool, as_dir
from sdfm.data.safe_pickle import load_pickle

__all__ = ["build_cifar10", "check_cifar10_options", "read_cifar_batch"]

TRAIN_FILES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_FILE = "test_batch"
NUM_CLASSES = 10
ROW = 3 * 32 * 32


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch as uint8 (n, 3, 32, 32) images and int64 labels.

    Raises:
        DataError: the file is missing or unreadable, or its arrays have the wrong type,
            size or labels.
    """
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: holds a {type(batch).__name__}, not a CIFAR batch dict; download it again")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: no data or labels entry; download the CIFAR-10 python version again")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW:
        raise DataError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (n, {ROW}); download it again")
    labels = check_labels(labels, NUM_CLASSES, len(data), str(path))
    return data.reshape(-1, 3, 32, 32), labels


def check_cifar10_options(*, path, flip) -> dict:
    """The options as :func:`build_cifar10` uses them (``path``: the folder of the batches).

    Raises:
        OptionError: ``path`` is no readable folder, or it lacks a batch file (with a hint to
            extract the archive when the folder holds the download).
    """
    folder, flip = as_dir("path", path), as_bool("flip", flip)
    if not (folder / TEST_FILE).exists() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    missing = [name for name in (*TRAIN_FILES, TEST_FILE) if not (folder / name).is_file()]
    if missing:
        raise OptionError("path", f"{folder / missing[0]}: no such file; download CIFAR-10's python version there"
                                  f"{archive_hint(folder)}")
    return {"path": folder, "flip": flip}


def build_cifar10(*, path: str | Path, flip: bool = False) -> Dataset:
    """Read CIFAR-10 from ``path``.

    Args:
        path: the folder with the batches (``cifar-10-batches-py`` or its parent).
        flip: double the training split with left-right mirrored copies.

    Returns:
        An ``"images"`` data set of shape (N, 3, 32, 32) with labels 0..9.
    """
    folder, flip = check_cifar10_options(path=path, flip=flip).values()
    batches = [read_cifar_batch(folder / name) for name in TRAIN_FILES]
    train = np.concatenate([images for images, _ in batches])
    train_labels = np.concatenate([labels for _, labels in batches])
    test, test_labels = read_cifar_batch(folder / TEST_FILE)
    return image_dataset("cifar10", train, test, train_labels, test_labels, NUM_CLASSES, flip=flip)
