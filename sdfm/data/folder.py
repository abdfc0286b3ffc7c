"""A folder of images with one subfolder per class (PetFace, ImageNet-style trees), or a flat folder.

Class ids are the positions of the subfolder names in sorted order; files lying directly in
the root are then ignored. A folder without subfolders (e.g. CelebA's ``img_align_celeba``)
is read as one unlabelled set. Every image is converted to grey or RGB (each PIL mode's value
range scaled to 0..255: :mod:`sdfm.data.pixels`), scaled so its shorter side is R and
centre-cropped to R x R.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from sdfm.data.archives import archive_hint
from sdfm.data.dataset import DataError, Dataset
from sdfm.data.images import image_dataset, split_indices
from sdfm.data.options import OptionError, as_bool, as_dir, as_fraction, as_int, as_optional_int
from sdfm.data.pixels import to_8bit

__all__ = ["build_image_folder", "check_image_folder_options", "find_images", "read_image"]


def _image_suffixes() -> set[str]:
    """File suffixes PIL can open (lower case, with the dot)."""
    from PIL import Image

    Image.init()
    return {suffix.lower() for suffix, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _images_in(folder: Path, suffixes: set[str]) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, skipping hidden files."""
    return sorted(
        path for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")
    )


def find_images(root: Path) -> tuple[list[Path], np.ndarray | None, int | None]:
    """List the images of ``root`` and their class ids.

    Returns:
        ``(files, labels, num_classes)``; ``labels`` and ``num_classes`` are None for a flat folder.

    Raises:
        DataError: the folder holds no images, or a class subfolder is empty.
    """
    suffixes = _image_suffixes()
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        files = _images_in(root, suffixes)
        if not files:
            raise DataError(f"{root}: no images and no class subfolders; put images there, one subfolder per class"
                            f"{archive_hint(root)}")
        return files, None, None
    files, labels = [], []
    for label, folder in enumerate(classes):
        found = _images_in(folder, suffixes)
        if not found:
            raise DataError(f"{folder}: class folder without images; add images or remove the folder")
        files += found
        labels += [label] * len(found)
    return files, np.asarray(labels, dtype=np.int64), len(classes)


def read_image(path: Path, resolution: int, channels: int) -> np.ndarray:
    """Read ``path`` as a uint8 (channels, R, R) array, resized and centre-cropped.

    Raises:
        DataError: PIL cannot decode the file, or its mode has no defined 8-bit conversion.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()
            image = to_8bit(image, channels, str(path))
            image = ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.LANCZOS)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = f"{type(error).__name__}: {error}"
        raise DataError(f"{path}: not a readable image ({reason}); remove or replace it") from error
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def check_image_folder_options(*, path, resolution, channels, test_fraction, seed, flip, max_images) -> dict:
    """The options as :func:`build_image_folder` uses them; an :class:`OptionError` for a bad one."""
    channels = as_int("channels", channels, minimum=1)
    if channels not in (1, 3):
        raise OptionError("channels", f"option channels={channels}: give 1 (grey) or 3 (RGB)")
    return {"path": as_dir("path", path), "resolution": as_int("resolution", resolution, minimum=1),
            "channels": channels, "test_fraction": as_fraction("test_fraction", test_fraction),
            "seed": as_int("seed", seed, minimum=0), "flip": as_bool("flip", flip),
            "max_images": as_optional_int("max_images", max_images, minimum=1)}


def build_image_folder(
    *,
    path: str | Path,
    resolution: int = 64,
    channels: int = 3,
    test_fraction: float = 0.05,
    seed: int = 0,
    flip: bool = False,
    max_images: int | None = None,
) -> Dataset:
    """Read a class-folder tree of images.

    Args:
        path: the root folder.
        resolution: side R of the square images.
        channels: 3 for RGB, 1 for grey.
        test_fraction: share of the images held out for the test split (at least one when > 0).
        seed: seed of the subsample and of the train/test split.
        flip: double the training split with left-right mirrored copies.
        max_images: use a seeded random subset of this many images.

    Returns:
        An ``"images"`` data set of shape (N, channels, R, R); labelled when ``path`` has subfolders.
    """
    root, resolution, channels, test_fraction, seed, flip, max_images = check_image_folder_options(
        path=path, resolution=resolution, channels=channels, test_fraction=test_fraction, seed=seed, flip=flip,
        max_images=max_images).values()
    files, labels, num_classes = find_images(root)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(files))[:max_images]) if max_images is not None else np.arange(len(files))
    files = [files[i] for i in keep]
    labels = None if labels is None else labels[keep]
    n_test = int(round(test_fraction * len(files)))
    n_test = max(n_test, 1) if test_fraction > 0 and len(files) > 1 else n_test
    train_idx, test_idx = split_indices(len(files), n_test, seed, str(root))
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(lambda file: read_image(file, resolution, channels), files))
    images = np.stack(arrays)
    return image_dataset(
        "image_folder",
        images[train_idx],
        images[test_idx],
        None if labels is None else labels[train_idx],
        None if labels is None else labels[test_idx],
        num_classes,
        flip=flip,
    )
