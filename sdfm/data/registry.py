"""The data set registry: names, their builders, and option checking.

A builder is a callable whose keyword-only parameters are the data set's options; a
parameter without a default is a required option.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from sdfm.data.animals import build_animals, check_animals_options
from sdfm.data.arrays import build_arrays, check_arrays_options
from sdfm.data.cifar import build_cifar10, check_cifar10_options
from sdfm.data.dataset import DataError, Dataset
from sdfm.data.digits import build_digits, check_digits_options
from sdfm.data.folder import build_image_folder, check_image_folder_options
from sdfm.data.imagenet import IMAGENET_DATASETS
from sdfm.data.options import OptionError
from sdfm.data.toy import TOY_DATASETS

__all__ = ["DATASETS", "build_dataset", "check_options", "dataset_options"]

DATASETS: dict[str, Callable[..., Dataset]] = {
    **TOY_DATASETS,
    "digits": build_digits,
    "animals": build_animals,
    **IMAGENET_DATASETS,
    "image_folder": build_image_folder,
    "cifar10": build_cifar10,
    "arrays": build_arrays,
}

#: Each builder's own option checks, without loading data: every option (defaults filled in) -> their values.
_OPTION_CHECKS: dict[str, Callable[..., dict]] = {
    **{name: builder.check_options for name, builder in TOY_DATASETS.items()},
    "digits": check_digits_options,
    "animals": check_animals_options,
    **{name: builder.check_options for name, builder in IMAGENET_DATASETS.items()},
    "image_folder": check_image_folder_options,
    "cifar10": check_cifar10_options,
    "arrays": check_arrays_options,
}


def _builder(name: str) -> Callable[..., Dataset]:
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def dataset_options(name: str) -> dict[str, object]:
    """The options of data set ``name`` and their defaults (``inspect.Parameter.empty`` when required)."""
    parameters = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_dataset(name: str, /, **options) -> Dataset:
    """Build data set ``name`` from its source (generated, shipped with a package, or read from files).

    Args:
        name: a key of :data:`DATASETS` (positional-only: a source may have an option ``name``).
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


def check_options(name: str, options: dict) -> dict:
    """Check ``options`` of data set ``name`` as its builder will, without loading any data.

    Option types and ranges, and for file-based sources the data folder (its kind, readability
    and the files it must hold), are checked; the data itself is read only by the builder.

    Returns:
        Every option of the data set (defaults filled in) as the builder will use it.

    Raises:
        DataError: an unknown data set; :class:`OptionError` (naming the option): an unknown,
            missing or bad option.
    """
    known = dataset_options(name)
    for option in options:
        if option not in known:
            raise OptionError(option, f"unknown option {option!r} for data set {name!r}: its options are "
                                      f"{', '.join(known) or 'none'}")
    for option, default in known.items():
        if default is inspect.Parameter.empty and option not in options:
            raise OptionError(option, f"data set {name!r} needs option {option!r}: give it")
    return _OPTION_CHECKS[name](**{key: options.get(key, default) for key, default in known.items()})
