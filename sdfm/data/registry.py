"""The data set registry: names, their builders, and option checking.

A builder is a callable whose keyword-only parameters are the data set's options; a
parameter without a default is a required option.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from sdfm.data.animals import build_animals
from sdfm.data.cifar import build_cifar10
from sdfm.data.dataset import DataError, Dataset
from sdfm.data.digits import build_digits
from sdfm.data.folder import build_image_folder
from sdfm.data.imagenet import IMAGENET_DATASETS
from sdfm.data.toy import TOY_DATASETS

__all__ = ["DATASETS", "build_dataset", "dataset_options"]

DATASETS: dict[str, Callable[..., Dataset]] = {
    **TOY_DATASETS,
    "digits": build_digits,
    "animals": build_animals,
    **IMAGENET_DATASETS,
    "image_folder": build_image_folder,
    "cifar10": build_cifar10,
}


def _builder(name: str) -> Callable[..., Dataset]:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_options(name: str) -> dict[str, object]:
    """The options of data set ``name`` and their defaults (``inspect.Parameter.empty`` when required)."""
    parameters = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_dataset(name: str, **options) -> Dataset:
    """Build data set ``name`` from its source (generated, shipped with a package, or read from files).

    Args:
        name: a key of :data:`DATASETS`.
        **options: the data set's options (see :func:`dataset_options`).

    Returns:
        The data set in model space.

    Raises:
        DataError: unknown name, unknown or missing option, bad option value, or bad data.
    """
    known = dataset_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(
            f"unknown option {unknown[0]!r} for data set {name!r}: its options are {', '.join(known) or 'none'}"
        )
    missing = [key for key, default in known.items() if default is inspect.Parameter.empty and key not in options]
    if missing:
        raise DataError(f"data set {name!r} needs option {missing[0]!r}: give it, e.g. {missing[0]}=...")
    return _builder(name)(**options)
