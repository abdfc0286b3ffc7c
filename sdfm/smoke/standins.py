"""Stand-in data files in the formats the file-based sources read, generated (nothing is downloaded).

Each writer produces a small folder the matching source reads exactly as it reads the real data:

- :func:`write_imagenet_batches`: the official downsampled-ImageNet npz batches
  (``train_data_batch_<k>.npz`` with ``data`` uint8 channel-planar rows, ``labels`` 1..1000 as a
  list, and a ``mean`` entry the reader ignores; ``val_data.npz``);
- :func:`write_image_folder`: a class-folder tree (one subfolder per class) of PNG and JPEG files of
  mixed sizes and modes (RGB, grey, RGBA), a nested subfolder and files the reader skips; with
  ``classes=None`` a flat folder of CelebA-sized (178 x 218) JPEGs;
- :func:`write_cifar10`: the CIFAR-10 python pickles (``data_batch_1..5``, ``test_batch``, dicts with
  bytes keys) in ``cifar-10-batches-py/``;
- :func:`write_arrays`: a file of vectors (``.npy``, ``.npz``, ``.csv``, ``.parquet``) with the array or
  column names a config's ``arrays`` entry reads, and text class labels when it names a label column.

Images are smooth colour fields (a per-class hue, a gradient and noise), so that classes differ and
models have something to learn.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

__all__ = ["write_arrays", "write_cifar10", "write_image_folder", "write_imagenet_batches", "smooth_images"]


def smooth_images(rng: np.random.Generator, n: int, height: int, width: int, labels=None,
                  num_classes: int = 10) -> np.ndarray:
    """``n`` uint8 (H, W, 3) images: a hue per label, a random linear gradient and pixel noise."""
    labels = rng.integers(0, num_classes, n) if labels is None else np.asarray(labels)
    hues = np.stack([np.cos(2 * np.pi * (labels / num_classes + shift)) for shift in (0.0, 1 / 3, 2 / 3)], axis=1)
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    slopes = rng.normal(0, 0.4, size=(n, 2))
    gradient = slopes[:, 0, None, None] * yy + slopes[:, 1, None, None] * xx
    images = 0.5 * hues[:, None, None, :] + gradient[..., None] + rng.normal(0, 0.15, size=(n, height, width, 3))
    return np.clip((images + 1) * 127.5, 0, 255).round().astype(np.uint8)


def write_imagenet_batches(folder: str | Path, resolution: int, train_sizes=(24, 16), n_val: int = 12,
                           seed: int = 0) -> Path:
    """Two (or more) training batches and a validation batch in the official npz layout; returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = [(f"train_data_batch_{k + 1}.npz", n) for k, n in enumerate(train_sizes)] + [("val_data.npz", n_val)]
    for name, n in files:
        labels = rng.integers(1, 1001, size=n)
        images = smooth_images(rng, n, resolution, resolution, labels - 1, num_classes=1000)
        rows = images.transpose(0, 3, 1, 2).reshape(n, -1)  # channel-planar: the R block, then G, then B
        extra = {"mean": rows.mean(axis=0)} if name.startswith("train") else {}
        np.savez(folder / name, data=rows, labels=labels.tolist(), **extra)
    return folder


#: (width, height, suffix, PIL mode) of the files of each class: PNG and JPEG, larger and smaller
#: than the resolution, square and not, RGB, grey and RGBA.
_FOLDER_FILES = ((80, 64, ".png", "RGB"), (64, 64, ".jpg", "RGB"), (48, 40, ".jpeg", "RGB"), (96, 96, ".png", "L"),
                 (70, 90, ".png", "RGBA"), (33, 33, ".JPG", "RGB"))


def write_image_folder(folder: str | Path, classes=("cat", "dog"), per_class: int = 10, seed: int = 0) -> Path:
    """A class-folder tree (or, with ``classes=None``, a flat folder of 178 x 218 JPEGs); returns ``folder``."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if classes is None:
        for i, image in enumerate(smooth_images(rng, per_class, 218, 178, num_classes=1)):
            Image.fromarray(image).save(folder / f"{i + 1:06d}.jpg", quality=90)
        return folder
    for label, name in enumerate(classes):
        target = folder / name
        for i in range(per_class):
            width, height, suffix, mode = _FOLDER_FILES[i % len(_FOLDER_FILES)]
            nested = target / "more" if i % 4 == 3 else target  # the reader looks into subfolders of a class
            nested.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(smooth_images(rng, 1, height, width, [label], len(classes))[0]).convert(mode)
            image.save(nested / f"{name}_{i:03d}{suffix}", **({"quality": 90} if suffix.lower() != ".png" else {}))
        (target / "notes.txt").write_text("not an image: skipped\n")
        (target / ".hidden.png").write_bytes(b"")  # hidden: skipped
    return folder


def write_cifar10(folder: str | Path, per_batch: int = 8, n_test: int = 8, seed: int = 0) -> Path:
    """The CIFAR-10 python batches under ``folder/cifar-10-batches-py``; returns ``folder``."""
    folder = Path(folder)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [(f"data_batch_{k}", per_batch) for k in range(1, 6)] + [("test_batch", n_test)]
    for name, n in names:
        labels = rng.integers(0, 10, n)
        rows = smooth_images(rng, n, 32, 32, labels).transpose(0, 3, 1, 2).reshape(n, -1)
        batch = {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": rows,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        with open(batches / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with open(batches / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"class{k}".encode() for k in range(10)]}, handle, protocol=2)
    return folder


def write_arrays(path: str | Path, features=None, label_column: str | None = None, n: int = 400, seed: int = 0) -> Path:
    """Three Gaussian clusters in R^d (d = the number of ``features`` columns, else 2) in ``path``'s format.

    ``features``: the ``.npz`` array name or the table's column names (default ``x`` / ``x0, x1``);
    ``label_column``: an array or column of the class names ``a``, ``b``, ``c`` (one per cluster).
    """
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(features) if isinstance(features, list) else ["x0", "x1"]
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = 2.0 * rng.standard_normal((3, len(columns)))
    points = (centres[labels] + 0.3 * rng.standard_normal((n, len(columns)))).astype(np.float32)
    names = np.array(["a", "b", "c"])[labels]
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, points)
    elif suffix == ".npz":
        arrays = {features if isinstance(features, str) else "x": points}
        np.savez(path, **arrays, **({label_column: names} if label_column else {}))
    else:
        table = pd.DataFrame(points, columns=columns)
        if label_column:
            table[label_column] = names
        table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
    return path
