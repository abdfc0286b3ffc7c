"""The prepared-data cache: one ``.npz`` per data set, checked by a content hash on load.

Layout of the file (``numpy.savez``, no pickles):

- ``train``, ``test``: uint8 (N, C, H, W) bytes 0..255 for images, float32 (N, d) for points;
- ``train_labels``, ``test_labels``: int64 class ids, only for labelled sets;
- ``name``, ``kind``: 0-d strings; ``num_classes``: 0-d int64, -1 when unlabelled;
- ``format_version``: 0-d int64, currently 1;
- ``sha256``: 0-d string, the :func:`content_hash` of everything above but itself.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from sdfm.data.dataset import KINDS, DataError, Dataset
from sdfm.data.images import from_uint8, to_uint8
from sdfm.data.registry import build_dataset
from sdfm.io import atomic_path

__all__ = ["FORMAT_VERSION", "content_hash", "load_prepared", "prepare_dataset", "prepared_hash", "save_prepared"]

FORMAT_VERSION = 1
_ARRAYS = ("train", "test", "train_labels", "test_labels")
_REQUIRED = ("train", "test", "name", "kind", "num_classes", "format_version", "sha256")


def content_hash(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 hex digest over the cache entries, each as key, dtype, shape and raw bytes, in key order.

    Args:
        arrays: the entries of a cache file other than ``sha256``.
    """
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()


def _entries(dataset: Dataset) -> dict[str, np.ndarray]:
    """The cache entries of ``dataset`` (without ``sha256``)."""
    encode = to_uint8 if dataset.kind == "images" else (lambda x: x.detach().cpu().to(torch.float32).numpy())
    entries = {"train": encode(dataset.train), "test": encode(dataset.test)}
    if dataset.train_labels is not None:
        entries["train_labels"] = dataset.train_labels.detach().cpu().to(torch.int64).numpy()
        entries["test_labels"] = dataset.test_labels.detach().cpu().to(torch.int64).numpy()
    entries["name"] = np.array(dataset.name)
    entries["kind"] = np.array(dataset.kind)
    entries["num_classes"] = np.array(-1 if dataset.num_classes is None else dataset.num_classes, dtype=np.int64)
    entries["format_version"] = np.array(FORMAT_VERSION, dtype=np.int64)
    return entries


def save_prepared(dataset: Dataset, path: str | Path) -> str:
    """Write ``dataset`` to the cache file ``path`` atomically and return its content hash."""
    entries = _entries(dataset)
    entries["sha256"] = np.array(content_hash(entries))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **entries)
    return str(entries["sha256"])


def prepare_dataset(name: str, path: str | Path, /, **options) -> str:
    """Build data set ``name`` with ``options`` (see :func:`sdfm.data.build_dataset`) and cache it at ``path``.

    ``name`` and ``path`` are positional-only, so a source's own ``path`` option (the folder of an
    ``image_folder``, ``imagenet32``, ``cifar10`` ... set) travels in ``options`` without colliding.

    Returns:
        The SHA-256 content hash stored in the file.
    """
    return save_prepared(build_dataset(name, **options), path)


def _read(path: Path) -> dict[str, np.ndarray]:
    """All entries of the cache file, or a :class:`DataError` naming it."""
    if not path.is_file():
        raise DataError(f"{path}: no such prepared data file; run prepare_dataset (sdfm prepare-data) first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"{path}: corrupt or truncated cache ({type(error).__name__}: {error}); delete it and prepare it again"
        ) from error
    missing = [key for key in _REQUIRED if key not in entries]
    if missing:
        raise DataError(f"{path}: not a prepared data file (no {missing[0]!r} entry); delete it and prepare it again")
    return entries


def prepared_hash(path: str | Path) -> str:
    """The content hash stored in a cache file (read alone; :func:`load_prepared` verifies it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such prepared data file; run prepare_dataset (sdfm prepare-data) first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return str(npz["sha256"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: no readable content hash ({type(error).__name__}); delete it and prepare it "
                        f"again") from error


def load_prepared(path: str | Path) -> Dataset:
    """Read a cache file written by :func:`prepare_dataset` and verify its content hash.

    Image bytes become float32 in [-1, 1] exactly as :func:`sdfm.data.build_dataset` makes
    them, so a build and a load of its cache are bit-identical.

    Raises:
        DataError: the file is missing, truncated, corrupt, of another format version, or its
            content does not match the stored hash.
    """
    path = Path(path)
    entries = _read(path)
    stored = str(entries.pop("sha256"))
    actual = content_hash(entries)
    if actual != stored:
        raise DataError(
            f"{path}: content hash {actual[:16]}... does not match the stored {stored[:16]}...; "
            "the file was damaged or edited: delete it and prepare it again"
        )
    if int(entries["format_version"]) != FORMAT_VERSION:
        version = int(entries["format_version"])
        raise DataError(f"{path}: cache format {version}, expected {FORMAT_VERSION}; prepare it again")
    kind, num_classes = str(entries["kind"]), int(entries["num_classes"])
    if kind not in KINDS:
        raise DataError(f"{path}: unknown kind {kind!r}; delete it and prepare it again")
    train, test = entries["train"], entries["test"]
    if kind == "images":
        if train.dtype != np.uint8 or train.ndim != 4 or test.dtype != np.uint8:
            raise DataError(f"{path}: image arrays must be uint8 (N, C, H, W), got {train.dtype} {train.shape}")
        train_t, test_t = from_uint8(train), from_uint8(test)
    else:
        if train.dtype != np.float32 or train.ndim != 2 or test.dtype != np.float32:
            raise DataError(f"{path}: point arrays must be float32 (N, d), got {train.dtype} {train.shape}")
        if not (np.isfinite(train).all() and np.isfinite(test).all()):
            raise DataError(f"{path}: point data holds NaN or inf; rebuild it from a clean source")
        train_t, test_t = torch.from_numpy(train), torch.from_numpy(test)
    labels = {key: torch.from_numpy(entries[key].astype(np.int64)) if key in entries else None for key in _ARRAYS[2:]}
    try:
        return Dataset(
            name=str(entries["name"]),
            train=train_t,
            test=test_t,
            num_classes=None if num_classes < 0 else num_classes,
            kind=kind,
            **labels,
        )
    except DataError as error:
        raise DataError(f"{path}: {error}") from error
