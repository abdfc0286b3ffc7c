"""Telling data files apart by their content, and archives left unextracted in a data folder.

A file's name can lie: a ``.npy`` array saved under an ``.npz`` name makes ``numpy.load`` return
an array instead of an archive. :func:`load_npz` looks at the first bytes (the magic number)
before it trusts the name. :func:`archive_hint` turns "no such file" into "extract the archive
you downloaded" when the folder holds one.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from sdfm.data.dataset import DataError

__all__ = ["archive_hint", "file_kind", "load_npz"]

#: Leading bytes of the file kinds a data folder may hold by mistake.
_MAGIC = (
    (b"PK\x03\x04", "npz"),  # a zip archive (np.savez writes one)
    (b"PK\x05\x06", "npz"),  # an empty zip archive
    (b"\x93NUMPY", "npy"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x80", "pickle"),
)
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.xz", ".tar.bz2", ".zip")


def file_kind(path: Path) -> str:
    """``npz``, ``npy``, ``gzip``, ``xz``, ``bzip2``, ``pickle`` or ``unknown``, from the file's first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    kind = next((kind for magic, kind in _MAGIC if head.startswith(magic)), "unknown")
    return "tar" if kind == "unknown" and _is_tar(path) else kind


def _is_tar(path: Path) -> bool:
    """An uncompressed tar file (its magic ``ustar`` sits at byte 257)."""
    with open(path, "rb") as handle:
        handle.seek(257)
        return handle.read(5) == b"ustar"


def load_npz(path: Path, keys: tuple[str, ...], fix: str) -> dict[str, np.ndarray]:
    """The arrays ``keys`` (those present) of the npz archive ``path``, read without pickles.

    Args:
        path: the file; its content, not its name, decides how it is read.
        keys: the entries to read.
        fix: what the user should do about a bad file, appended to every error.

    Raises:
        DataError: the file is missing, is not an npz archive (a ``.npy`` array, a compressed
            file, ...), or is truncated or damaged.
    """
    if not path.is_file():
        raise DataError(f"{path}: no such file; {fix}")
    kind = file_kind(path)
    if kind == "npy":
        raise DataError(f"{path}: holds a single .npy array, not an .npz archive of named arrays "
                        f"({', '.join(keys)}); {fix}")
    if kind in ("gzip", "xz", "bzip2", "tar"):
        raise DataError(f"{path}: is a {kind} file, not an .npz archive; extract it first, or {fix}")
    if kind != "npz":
        raise DataError(f"{path}: not an .npz archive (its first bytes are no zip header); {fix}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable npz ({type(error).__name__}: {error}); {fix}") from error


def archive_hint(folder: Path) -> str:
    """``"; it holds the archive X: extract it there (tar -xzf X -C folder)"``, or ``""`` when there is none."""
    if not folder.is_dir():
        return ""
    archives = sorted(path for path in folder.iterdir()
                      if path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES))
    if not archives:
        return ""
    archive = archives[0]
    command = (f"unzip {archive} -d {folder}" if archive.name.lower().endswith(".zip")
               else f"tar -xf {archive} -C {folder}")
    return f"; it holds the archive {archive.name}, not yet extracted: extract it there ({command})"
