"""Feature statistics of a reference image set, computed once and checked by what they were computed from.

A Frechet distance compares the Gaussian fitted to the features of generated images with the
reference split's ``N(mu, sigma)``. The reference side does not change between the sample sets
of a run (solvers, NFE, guidance scales, methods), so it is computed once per data set and split
and saved: ``mu`` (F,) and ``sigma`` (F, F) in float64, and, when kernel distances or precision /
recall need them, the (n, F) float32 features themselves.

The file (``numpy.savez``, no pickles) also records what the numbers depend on, as 0-d strings:
``data_sha256`` (the prepared data set's content hash), ``weights_sha256`` (the SHA-256 of the
feature extractor's weights file), ``extractor`` and ``split``. :func:`load_reference_statistics`
refuses a file whose record differs from what the caller expects, so statistics of other data or
other weights are never used silently.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sdfm.io import atomic_path

__all__ = ["KEYS", "ReferenceStatistics", "ReferenceMismatch", "file_sha256", "load_reference_statistics", "reference_statistics",
           "save_reference_statistics", "verified_sha256"]

#: What the statistics were computed from (each a string in the file).
KEYS = ("data_sha256", "weights_sha256", "extractor", "split")


class ReferenceMismatch(ValueError):
    """A weights file or a statistics file that is not what the job expects (a one-line message with the fix)."""


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_sha256(path: str | Path, expected: str | None = None, what: str = "weights file") -> str:
    """The SHA-256 of ``path``, checked against ``expected`` (hex) when given.

    Raises:
        ReferenceMismatch: one line naming the file, both checksums and the fix, when they differ.
    """
    actual = file_sha256(path)
    if expected is not None and actual != str(expected).strip().lower():
        raise ReferenceMismatch(f"{what} {path} has sha256 {actual}, expected {expected}: point the config at the file "
                         f"it names, or set the checksum to this file's (sha256sum {path})")
    return actual


@dataclass(frozen=True)
class ReferenceStatistics:
    """``mu`` (F,), ``sigma`` (F, F) float64, the number of images, optionally their (n, F) features, and the keys."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int
    features: Tensor | None = None
    keys: dict = field(default_factory=dict)


def reference_statistics(features: Tensor, keep_features: bool = False, **keys: str) -> ReferenceStatistics:
    """The statistics of (n, F) reference features (unbiased covariance, float64), with ``keys`` (:data:`KEYS`)."""
    from sdfm.metrics.frechet import gaussian_statistics

    unknown = sorted(set(keys) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown reference statistics key {unknown[0]!r}: the keys are {', '.join(KEYS)}")
    mu, sigma = gaussian_statistics(features)
    kept = features.detach().cpu().to(torch.float32) if keep_features else None
    return ReferenceStatistics(mu, sigma, int(features.shape[0]), kept, {k: str(v) for k, v in keys.items()})


def save_reference_statistics(stats: ReferenceStatistics, path: str | Path) -> Path:
    """Write ``stats`` to ``path`` (npz) atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "count": np.array(stats.count, dtype=np.int64),
              **{key: np.array(value) for key, value in stats.keys.items()}}
    if stats.features is not None:
        arrays["features"] = stats.features.numpy()
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_reference_statistics(path: str | Path, expect: dict | None = None,
                              need_features: bool = False) -> ReferenceStatistics:
    """Read statistics written by :func:`save_reference_statistics` and check their keys.

    Args:
        expect: ``{key: value}`` the file must record (e.g. the data hash and the weights' SHA-256).
        need_features: the caller needs the features (kernel distance, precision / recall).

    Raises:
        ReferenceMismatch: one line naming the file and the mismatch: unreadable, a key that differs,
            or no features when they are needed.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ReferenceMismatch(f"{path}: not readable reference statistics ({type(error).__name__}: {error}); "
                         f"delete it and rerun its fid_reference job") from None
    if "mu" not in entries or "sigma" not in entries:
        raise ReferenceMismatch(f"{path}: no mu / sigma entries; delete it and rerun its fid_reference job")
    keys = {key: str(entries[key]) for key in KEYS if key in entries}
    for key, value in (expect or {}).items():
        if keys.get(key) != str(value):
            raise ReferenceMismatch(f"{path}: computed with {key} {keys.get(key, 'unrecorded')[:16]}..., this job has "
                             f"{str(value)[:16]}...; delete it and rerun its fid_reference job")
    if need_features and "features" not in entries:
        raise ReferenceMismatch(f"{path}: holds mu and sigma only, and kid / precision / recall need the reference "
                         f"features; delete it and rerun its fid_reference job with them")
    features = torch.from_numpy(entries["features"]) if "features" in entries else None
    return ReferenceStatistics(entries["mu"], entries["sigma"], int(entries["count"]), features, keys)
