"""Animal-MNIST: 10,000 28x28 grey animal silhouettes in 10 classes, from the ``animal-mnist`` wheel.

The data files are read directly, without importing the package (which pulls in
TensorFlow): ``animal_mnist/data/Animal_MNIST/animal_data_version_3.gz`` is a gzipped pickle
of a uint8 (10000, 28, 28) array and ``animal_label_version_3.gz`` one of int64 (10000,)
labels 0..9, 1000 per class, stored sorted by class.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import numpy as np

from sdfm.data.dataset import DataError, Dataset
from sdfm.data.images import check_labels, image_dataset, split_indices
from sdfm.data.options import as_bool, as_int
from sdfm.data.safe_pickle import load_pickle

__all__ = ["animal_data_dir", "build_animals", "check_animals_options"]

DATA_FILE = "animal_data_version_3.gz"
LABEL_FILE = "animal_label_version_3.gz"
NUM_CLASSES = 10
INSTALL_HINT = "animal-mnist is not installed: run `pip install --no-deps animal-mnist==0.4` (make install does this)"


def animal_data_dir() -> Path:
    """The folder of the installed wheel that holds the two data files.

    Raises:
        DataError: the package is not installed.
    """
    spec = find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(INSTALL_HINT)
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"


def check_animals_options(*, n_test, seed, flip) -> dict:
    """The options as :func:`build_animals` uses them; an :class:`OptionError` for a bad one."""
    return {"n_test": as_int("n_test", n_test, minimum=0), "seed": as_int("seed", seed, minimum=0),
            "flip": as_bool("flip", flip)}


def build_animals(*, n_test: int = 1000, seed: int = 0, flip: bool = False) -> Dataset:
    """Load Animal-MNIST as 1x28x28 images with labels 0..9.

    Args:
        n_test: images held out for the test split.
        seed: seed of the random train/test split.
        flip: double the training split with left-right mirrored copies.

    Returns:
        An ``"images"`` data set of shape (N, 1, 28, 28).
    """
    n_test, seed, flip = check_animals_options(n_test=n_test, seed=seed, flip=flip).values()
    folder = animal_data_dir()
    images = load_pickle(folder / DATA_FILE, compressed=True)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(
            f"{folder / DATA_FILE}: expected uint8 (N, 28, 28) images, found {found}; reinstall animal-mnist"
        )
    label_file = folder / LABEL_FILE
    labels = check_labels(load_pickle(label_file, compressed=True), NUM_CLASSES, len(images), str(label_file))
    images = images[:, None]
    train, test = split_indices(len(images), n_test, seed, "animals")
    return image_dataset("animals", images[train], images[test], labels[train], labels[test], NUM_CLASSES, flip=flip)
