"""The stand-in files are read by their sources exactly as the real data: shapes, labels, mixed formats."""

import pickle

import numpy as np
import pytest
from PIL import Image

from sdfm.data import build_dataset
from sdfm.smoke.standins import smooth_images, write_cifar10, write_image_folder, write_imagenet_batches


@pytest.mark.parametrize("resolution", [32, 64])
def test_imagenet_batches_in_the_official_layout(tmp_path, resolution):
    folder = write_imagenet_batches(tmp_path, resolution, train_sizes=(5, 3), n_val=4)
    with np.load(folder / "train_data_batch_1.npz") as npz:
        assert npz["data"].dtype == np.uint8 and npz["data"].shape == (5, 3 * resolution**2)
        assert set(npz.files) == {"data", "labels", "mean"} and npz["labels"].min() >= 1
    data = build_dataset(f"imagenet{resolution}", path=str(folder), flip=True)
    assert data.train.shape == (16, 3, resolution, resolution) and data.test.shape == (4, 3, resolution, resolution)
    assert data.num_classes == 1000
    # channel-planar rows: the first R*R values are the red plane of image 0
    with np.load(folder / "val_data.npz") as npz:
        red = npz["data"][0, : resolution**2].reshape(resolution, resolution)
    np.testing.assert_array_equal(np.round((data.test[0, 0].numpy() + 1) * 127.5).astype(np.uint8), red)


def test_an_image_folder_tree_of_mixed_png_and_jpeg_files(tmp_path):
    folder = write_image_folder(tmp_path, classes=("cat", "dog"), per_class=8)
    files = [p for p in folder.rglob("*") if p.is_file()]
    suffixes = {p.suffix.lower() for p in files}
    assert {".png", ".jpg", ".jpeg"} <= suffixes
    sizes, modes = set(), set()
    for path in files:
        if path.suffix.lower() in (".png", ".jpg", ".jpeg") and not path.name.startswith("."):
            with Image.open(path) as image:
                sizes.add(image.size)
                modes.add(image.mode)
    assert len(sizes) >= 4 and {"RGB", "L", "RGBA"} <= modes
    assert (folder / "cat" / "more").is_dir()  # a nested folder inside a class
    data = build_dataset("image_folder", path=str(folder), resolution=24, test_fraction=0.25)
    assert data.num_classes == 2 and len(data.train) + len(data.test) == 16
    assert sorted(np.unique(np.concatenate([data.train_labels, data.test_labels])).tolist()) == [0, 1]


def test_a_flat_folder_stands_in_for_celeba(tmp_path):
    folder = write_image_folder(tmp_path, classes=None, per_class=5)
    with Image.open(next(folder.glob("*.jpg"))) as image:
        assert image.size == (178, 218)
    data = build_dataset("image_folder", path=str(folder), resolution=16, test_fraction=0.2)
    assert data.num_classes is None and len(data.train) == 4 and len(data.test) == 1


def test_cifar_pickles_with_bytes_keys(tmp_path):
    folder = write_cifar10(tmp_path, per_batch=3, n_test=2)
    with open(folder / "cifar-10-batches-py" / "data_batch_1", "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    assert set(batch) >= {b"data", b"labels"} and batch[b"data"].shape == (3, 3072)
    data = build_dataset("cifar10", path=str(folder))
    assert data.train.shape == (15, 3, 32, 32) and data.test.shape == (2, 3, 32, 32) and data.num_classes == 10


def test_smooth_images_differ_by_class():
    images = smooth_images(np.random.default_rng(0), 200, 8, 8, labels=np.repeat([0, 5], 100), num_classes=10)
    means = images.reshape(2, 100, -1, 3).mean(axis=(1, 2))
    assert images.dtype == np.uint8 and np.abs(means[0] - means[1]).max() > 40
