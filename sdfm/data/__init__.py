"""Data sets in model space, their registry, and the hashed ``.npz`` cache.

Example:
    >>> from sdfm.data import build_dataset
    >>> build_dataset("moons", n_train=100, n_test=10).train.shape
    torch.Size([100, 2])
"""

from __future__ import annotations

from sdfm.data.cache import load_prepared, prepare_dataset
from sdfm.data.dataset import DataError, Dataset
from sdfm.data.registry import DATASETS, build_dataset

__all__ = ["DATASETS", "DataError", "Dataset", "build_dataset", "load_prepared", "prepare_dataset"]
