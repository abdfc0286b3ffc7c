"""Reading the pickles that data sets ship in, allowing only plain containers and numpy arrays.

CIFAR-10 batches and the Animal-MNIST files are pickles. A pickle can run any code it names,
so this reader resolves only the few globals that numpy needs to rebuild arrays and refuses
the rest; a refused or damaged file becomes a :class:`DataError` naming it.
"""

from __future__ import annotations

import gzip
import importlib
import pickle
from pathlib import Path

from sdfm.data.dataset import DataError

__all__ = ["load_pickle"]

_ALLOWED = {
    ("_codecs", "encode"),
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals in ``_ALLOWED``."""

    def find_class(self, module: str, name: str):
        if module.startswith("numpy.core."):  # pickles written by numpy 1.x
            module = "numpy._core." + module[len("numpy.core.") :]
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return getattr(importlib.import_module(module), name)


def load_pickle(path: str | Path, *, compressed: bool = False):
    """Unpickle ``path`` (gzip-compressed when ``compressed``), allowing only data objects.

    Python 2 strings are decoded as bytes, as the CIFAR-10 batches need.

    Args:
        path: the pickle file.
        compressed: whether the file is gzip-compressed.

    Returns:
        The unpickled object (dicts, lists, numbers, bytes, numpy arrays).

    Raises:
        DataError: the file is missing, truncated, corrupt, or names a forbidden global.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; download the data set there or fix the path")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle:
            return _ArrayUnpickler(handle, encoding="bytes").load()
    except Exception as error:  # any failure to unpickle means the file is unusable
        raise DataError(
            f"{path}: not a readable pickle ({type(error).__name__}: {error}); download it again"
        ) from error
