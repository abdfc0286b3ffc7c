"""scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped with the library."""

from __future__ import annotations

import numpy as np

from sdfm.data.dataset import Dataset
from sdfm.data.images import check_labels, image_dataset, split_indices
from sdfm.data.options import as_bool, as_int

__all__ = ["build_digits", "check_digits_options"]


def check_digits_options(*, n_test, seed, flip) -> dict:
    """The options as :func:`build_digits` uses them; an :class:`OptionError` for a bad one."""
    return {"n_test": as_int("n_test", n_test, minimum=0), "seed": as_int("seed", seed, minimum=0),
            "flip": as_bool("flip", flip)}


def build_digits(*, n_test: int = 297, seed: int = 0, flip: bool = False) -> Dataset:
    """Load ``sklearn.datasets.load_digits`` as 1x8x8 images.

    The 17 grey levels 0..16 are mapped to bytes by ``round(v * 255 / 16)``.

    Args:
        n_test: images held out for the test split (297 leaves 1500 for training).
        seed: seed of the random train/test split.
        flip: double the training split with left-right mirrored copies.

    Returns:
        An ``"images"`` data set of shape (N, 1, 8, 8) with labels 0..9.
    """
    from sklearn.datasets import load_digits

    n_test, seed, flip = check_digits_options(n_test=n_test, seed=seed, flip=flip).values()
    bunch = load_digits()
    grey = np.asarray(bunch.images, dtype=np.float64)
    images = np.rint(grey * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = check_labels(bunch.target, 10, len(images), "sklearn load_digits")
    train, test = split_indices(len(images), n_test, seed, "digits")
    return image_dataset("digits", images[train], images[test], labels[train], labels[test], 10, flip=flip)
