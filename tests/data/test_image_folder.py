"""Class-folder trees of PNG images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sdfm.data import DataError, build_dataset


def _png(path, size=(12, 8), colour=(200, 10, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


@pytest.fixture
def tree(tmp_path):
    """Three classes (cat: 4, dog: 3, fox: 3 images) of various sizes, plus a stray text file."""
    for k in range(4):
        _png(tmp_path / "cat" / f"{k}.png", size=(12 + k, 9), colour=(255, 0, 0))
    for k in range(3):
        _png(tmp_path / "dog" / f"{k}.png", size=(9, 20), colour=(0, 255, 0))
        _png(tmp_path / "fox" / "sub" / f"{k}.png", colour=(0, 0, 255))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    return tmp_path


def test_shapes_ranges_and_labels(tree):
    data = build_dataset("image_folder", path=tree, resolution=6, test_fraction=0.2)
    assert data.kind == "images" and data.num_classes == 3
    assert len(data.train) == 8 and len(data.test) == 2
    assert data.sample_shape == (3, 6, 6) and data.train.dtype == torch.float32
    assert data.train.min() >= -1 and data.train.max() <= 1
    labels = torch.cat([data.train_labels, data.test_labels])
    assert labels.dtype == torch.int64 and sorted(labels.tolist()) == [0] * 4 + [1] * 3 + [2] * 3
    images, ids = torch.cat([data.train, data.test]), labels
    for label, channel in enumerate(range(3)):  # cat red, dog green, fox blue (sorted names)
        chosen = images[ids == label]
        assert (chosen[:, channel] == 1).all()
        assert (chosen[:, [c for c in range(3) if c != channel]] == -1).all()


def test_default_resolution_and_grey(tree):
    data = build_dataset("image_folder", path=tree, channels=1)
    assert data.sample_shape == (1, 64, 64)
    assert len(data.test) == 1  # 5% of 10 images rounds to 0; at least one is held out


def test_centre_crop_keeps_the_middle(tmp_path):
    image = np.zeros((10, 30, 3), np.uint8)
    image[:, 10:20] = 255  # white centre band, black sides
    (tmp_path / "a").mkdir()
    Image.fromarray(image).save(tmp_path / "a" / "x.png")
    Image.fromarray(image).save(tmp_path / "a" / "y.png")
    data = build_dataset("image_folder", path=tmp_path, resolution=5, test_fraction=0.0)
    assert len(data.test) == 0 and (data.train[:, :, 1:4, 1:4] > 0.9).all()


def test_flat_folder_is_unlabelled(tmp_path):
    for k in range(3):
        _png(tmp_path / f"{k}.png")
    data = build_dataset("image_folder", path=tmp_path, resolution=4, test_fraction=0.3)
    assert data.train_labels is None and data.test_labels is None and data.num_classes is None
    assert len(data.train) == 2 and len(data.test) == 1


def test_max_images_and_seed(tree):
    a = build_dataset("image_folder", path=tree, resolution=4, max_images=5, test_fraction=0.2, seed=1)
    assert len(a.train) + len(a.test) == 5
    b = build_dataset("image_folder", path=tree, resolution=4, max_images=5, test_fraction=0.2, seed=1)
    assert torch.equal(a.train_labels, b.train_labels) and torch.equal(a.test, b.test)


def test_flip(tmp_path):
    ramp = np.tile(np.arange(0, 240, 30, dtype=np.uint8), (8, 1))  # dark left, bright right
    for k in range(3):
        (tmp_path / f"c{k}").mkdir()
        Image.fromarray(ramp + 5 * k).save(tmp_path / f"c{k}" / "x.png")
    plain = build_dataset("image_folder", path=tmp_path, resolution=8, channels=1, test_fraction=0.0)
    flipped = build_dataset("image_folder", path=tmp_path, resolution=8, channels=1, test_fraction=0.0, flip=True)
    n = len(plain.train)
    assert len(flipped.train) == 2 * n and torch.equal(flipped.train[:n], plain.train)
    assert torch.equal(flipped.train[n + 1], torch.flip(plain.train[1], dims=[-1]))
    assert not torch.equal(flipped.train[n + 1], plain.train[1])
    assert torch.equal(flipped.train_labels[n:], plain.train_labels)


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: no images and no class subfolders"):
        build_dataset("image_folder", path=tmp_path)


def test_empty_class_folder(tree):
    (tree / "emu").mkdir()
    with pytest.raises(DataError, match=f"{tree / 'emu'}: class folder without images"):
        build_dataset("image_folder", path=tree)


def test_corrupt_image_is_named(tree):
    (tree / "dog" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    with pytest.raises(DataError, match=r"dog/1\.png: not a readable image"):
        build_dataset("image_folder", path=tree, resolution=4)


def test_missing_path_and_bad_channels(tree):
    with pytest.raises(DataError, match="no such folder"):
        build_dataset("image_folder", path=tree / "absent")
    with pytest.raises(DataError, match="channels=2"):
        build_dataset("image_folder", path=tree, channels=2)
    with pytest.raises(DataError, match="test_fraction=1.5"):
        build_dataset("image_folder", path=tree, test_fraction=1.5)
