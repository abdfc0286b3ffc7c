"""Your own vectors: a ``.npy``, ``.npz``, ``.csv`` or ``.parquet`` file of N points in R^d.

The rows are the samples, the columns their coordinates (embeddings, tabular features, a
single-cell matrix after PCA, the output of another project). Options (``datasets.<name>.options``
of a config with ``source: arrays``):

- ``path``: the file; its suffix picks the reader.
- ``features``: which array (``.npz``: its name, default the only array besides the labels) or which
  columns (``.csv`` / ``.parquet``: a list of names, default every column but the label column).
- ``label_column``: the class of each row, for a class-conditional run (``conditional:`` in the
  config): a column of the table, or an array of the ``.npz``. Integers or strings; the sorted
  distinct values become the class ids 0..K-1.
- ``test_path``: a held-out file in the same layout; else ``test_fraction`` of the rows
  (default 0.1, at least one) is held out by a ``seed``-ed random split.
- ``max_rows``: use a ``seed``-ed random subset of this many rows (before the split).
- ``standardize``: centre and scale each coordinate by the training split's mean and standard
  deviation (the source of the flow is N(0, I), so data at a very different scale trains badly).

Every problem is one :class:`DataError` line naming the file or option and the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sdfm.data.dataset import DataError, Dataset
from sdfm.data.images import split_indices
from sdfm.data.options import OptionError, as_bool, as_fraction, as_int, as_optional_int

__all__ = ["ARRAY_SUFFIXES", "build_arrays", "check_arrays_options", "read_array_file"]

ARRAY_SUFFIXES = (".npy", ".npz", ".csv", ".parquet")


def _existing_file(option: str, value) -> Path:
    if value is None or str(value) == "":
        raise OptionError(option, f"option {option} is required: give the path of a {'/'.join(ARRAY_SUFFIXES)} file")
    if not isinstance(value, (str, os.PathLike)):
        raise OptionError(option, f"option {option}={value!r}: give the path of one {'/'.join(ARRAY_SUFFIXES)} file")
    path = Path(value).expanduser()
    if path.is_dir():
        raise OptionError(option, f"{path}: a folder, not a file (option {option}); give the file that holds the points")
    if not path.is_file():
        raise OptionError(option, f"{path}: no such file (option {option}); fix the path")
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise OptionError(option, f"{path}: unsupported file type {path.suffix or '(none)'!r} (option {option}); "
                                  f"save the points as {', '.join(ARRAY_SUFFIXES)}")
    return path


def check_arrays_options(*, path, features, label_column, test_path, test_fraction, seed, max_rows,
                         standardize) -> dict:
    """The options as :func:`build_arrays` uses them, checked without reading the file's contents."""
    if label_column is not None and not isinstance(label_column, str):
        raise OptionError("label_column", f"option label_column={label_column!r}: give the name of a column or array")
    if features is not None and not isinstance(features, str) and not (
            isinstance(features, list) and features and all(isinstance(f, str) for f in features)):
        raise OptionError("features", f"option features={features!r}: give an array name or a list of column names")
    return {"path": _existing_file("path", path), "features": features, "label_column": label_column,
            "test_path": None if test_path is None else _existing_file("test_path", test_path),
            "test_fraction": as_fraction("test_fraction", test_fraction), "seed": as_int("seed", seed, minimum=0),
            "max_rows": as_optional_int("max_rows", max_rows, minimum=2),
            "standardize": as_bool("standardize", standardize)}


def _read_npz(path: Path, features, label_column) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err}); save it with numpy.savez") from None
    with archive:
        names = list(archive.files)
        if label_column is not None and label_column not in names:
            raise DataError(f"{path}: no array {label_column!r} (option label_column); its arrays are {', '.join(names)}")
        candidates = [n for n in names if n != label_column]
        if features is None:
            if len(candidates) != 1:
                raise DataError(f"{path}: holds arrays {', '.join(names) or 'none'}; name the one with the points "
                                f"in option features")
            features = candidates[0]
        if not isinstance(features, str) or features not in names:
            raise DataError(f"{path}: no array {features!r} (option features); its arrays are {', '.join(names)}")
        try:
            points = archive[features]
            labels = None if label_column is None else archive[label_column]
        except ValueError as err:  # object arrays need pickles, which are refused
            raise DataError(f"{path}: array not loadable without pickle ({err}); store numbers or strings") from None
    return points, labels


def _read_table(path: Path, features, label_column) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    try:
        table = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except ImportError as err:
        raise DataError(f"{path}: reading parquet needs pyarrow ({err}); run `make install`") from None
    except Exception as err:  # noqa: BLE001 - the reader's own error, in one line
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{path}: not a readable table ({reason}); check the file") from None
    columns = [str(c) for c in table.columns]
    table.columns = columns
    if label_column is not None and label_column not in columns:
        raise DataError(f"{path}: no column {label_column!r} (option label_column); its columns are "
                        f"{', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}")
    if features is None:
        features = [c for c in columns if c != label_column]
    elif isinstance(features, str):
        features = [features]
    if not isinstance(features, list) or not features:
        raise DataError(f"{path}: option features must list column names, e.g. [x, y]")
    missing = [c for c in features if c not in columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r} (option features); its columns are "
                        f"{', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}")
    text = [c for c in features if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        hint = "name it in option label_column" if label_column is None else "list the numeric ones in option features"
        raise DataError(f"{path}: column {text[0]!r} is not numeric; {hint}")
    labels = None
    if label_column is not None:
        column = table[label_column]
        if column.isna().any():
            raise DataError(f"{path}: row {int(column.isna().to_numpy().argmax())} has no {label_column!r}; "
                            "give every row a label")
        labels = column.to_numpy() if pd.api.types.is_numeric_dtype(column) else column.astype(str).to_numpy(dtype=str)
    return table[features].to_numpy(), labels


def read_array_file(path: Path, features=None, label_column=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The (N, d) float32 points of ``path`` and the raw labels (or None), checked.

    Raises:
        DataError: unreadable file, missing array or column, non-numeric or non-finite values, wrong shape.
    """
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if label_column is not None or features is not None:
            raise DataError(f"{path}: a .npy file holds one array; for labels or named arrays use a .npz or a table")
        try:
            points, labels = np.load(path, allow_pickle=False), None
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: not a readable .npy array ({err}); save it with numpy.save") from None
    elif suffix == ".npz":
        points, labels = _read_npz(path, features, label_column)
    else:
        points, labels = _read_table(path, features, label_column)
    if points.ndim == 1:
        points = points[:, None]
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 1:
        raise DataError(f"{path}: points of shape {points.shape}; give a 2-D (rows, coordinates) array")
    if not (np.issubdtype(points.dtype, np.number) or points.dtype == bool):
        raise DataError(f"{path}: values of dtype {points.dtype} are not numbers; store floats")
    points = points.astype(np.float32)
    bad = ~np.isfinite(points)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{path}: {int(bad.sum())} values are NaN or infinite (first at row {row}, column {col}); "
                        f"drop or impute them")
    if labels is not None and len(labels) != len(points):
        raise DataError(f"{path}: {len(labels)} labels for {len(points)} rows; give one label per row")
    return points, labels


def _class_ids(train_labels: np.ndarray, test_labels: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Class ids 0..K-1 from the sorted distinct training labels; test labels must be among them."""
    for labels in (train_labels, test_labels):
        if labels.dtype.kind == "f":
            whole = np.isfinite(labels) & (labels == np.round(labels))
            if not whole.all():
                raise DataError(f"{source}: label {labels[~whole][0].item()!r} is neither an integer nor a string; "
                                "give class names or ids")
        elif labels.dtype.kind not in "biuUS":
            raise DataError(f"{source}: labels of dtype {labels.dtype} are neither integers nor strings; "
                            "give class names or ids")
    classes = np.unique(train_labels)
    unseen = np.setdiff1d(np.unique(test_labels), classes)
    if unseen.size:
        raise DataError(f"{source}: held-out label {unseen[0].item()!r} never occurs in the training split; "
                        "give every class training rows")
    return np.searchsorted(classes, train_labels), np.searchsorted(classes, test_labels), len(classes)


def build_arrays(
    *,
    path: str | Path,
    features: str | list | None = None,
    label_column: str | None = None,
    test_path: str | Path | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    max_rows: int | None = None,
    standardize: bool = False,
) -> Dataset:
    """Read a file of vectors (see the module docstring for the options).

    Returns:
        A ``"points"`` data set of shape (N, d), labelled when ``label_column`` is given.
    """
    checked = check_arrays_options(path=path, features=features, label_column=label_column, test_path=test_path,
                                   test_fraction=test_fraction, seed=seed, max_rows=max_rows, standardize=standardize)
    file, seed, standardize = checked["path"], checked["seed"], checked["standardize"]
    max_rows, test_fraction = checked["max_rows"], checked["test_fraction"]
    points, labels = read_array_file(file, features, label_column)
    rng = np.random.default_rng(seed)
    if max_rows is not None and max_rows < len(points):
        keep = np.sort(rng.permutation(len(points))[:max_rows])
        points, labels = points[keep], None if labels is None else labels[keep]
    if checked["test_path"] is not None:
        held = checked["test_path"]
        train, train_labels = points, labels
        test, test_labels = read_array_file(held, features, label_column)
        if test.shape[1] != train.shape[1]:
            raise DataError(f"{held}: {test.shape[1]} coordinates per row, but {file} has {train.shape[1]}; "
                            "give both files the same columns")
    else:
        n_test = max(1, int(round(test_fraction * len(points)))) if test_fraction > 0 and len(points) > 1 else 0
        if n_test == 0:
            raise DataError(f"{file}: no held-out rows (test_fraction={test_fraction}, {len(points)} rows); "
                            "raise test_fraction or give test_path")
        train_idx, test_idx = split_indices(len(points), n_test, seed, str(file))
        train, test = points[train_idx], points[test_idx]
        train_labels = None if labels is None else labels[train_idx]
        test_labels = None if labels is None else labels[test_idx]
    num_classes = None
    if labels is not None:
        train_labels, test_labels, num_classes = _class_ids(train_labels, test_labels, str(file))
    if standardize:
        mean, std = train.mean(axis=0), train.std(axis=0)
        if (std == 0).any():
            raise DataError(f"{file}: coordinate {int(np.argmax(std == 0))} is constant in the training split; "
                            "drop it or set standardize false")
        train, test = (train - mean) / std, (test - mean) / std

    def tensor(array, dtype):
        return None if array is None else torch.from_numpy(np.ascontiguousarray(array)).to(dtype)

    return Dataset(name="arrays", train=tensor(train, torch.float32), test=tensor(test, torch.float32),
                   train_labels=tensor(train_labels, torch.int64), test_labels=tensor(test_labels, torch.int64),
                   num_classes=num_classes, kind="points")
