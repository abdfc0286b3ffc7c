"""Downsampled ImageNet from fake batches written in the official npz layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdfm.data import DataError, build_dataset
from sdfm.data.imagenet import ImageNetBuilder

R = 4  # a tiny side keeps the files small; the layout is the official one


def _batch(path, n, *, resolution=R, seed=0, labels=None, mean=True):
    """Write one npz batch: planar uint8 rows (R block, G block, B block) and 1-based labels."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3 * resolution * resolution), dtype=np.uint8)
    labels = rng.integers(1, 1001, size=n).tolist() if labels is None else labels
    extra = {"mean": data.mean(axis=0)} if mean else {}
    np.savez(path, data=data, labels=labels, **extra)
    return data, np.asarray(labels)


def _build(path, **options):
    """The imagenet32/64 loader at the tiny test resolution R."""
    return ImageNetBuilder(R)(path=path, **options)


@pytest.fixture
def folder(tmp_path):
    """Two train batches (6 + 5 images) and a validation file (3 images)."""
    batches = [_batch(tmp_path / "train_data_batch_1.npz", 6, seed=1),
               _batch(tmp_path / "train_data_batch_2.npz", 5, seed=2, labels=[1, 1000, 7, 8, 9])]
    val = _batch(tmp_path / "val_data.npz", 3, seed=3, mean=False)
    return tmp_path, batches, val


def test_shapes_layout_and_labels(folder):
    path, batches, (val_data, val_labels) = folder
    data = _build(path)
    assert data.name == f"imagenet{R}" and data.kind == "images"
    assert data.train.shape == (11, 3, R, R) and data.test.shape == (3, 3, R, R)
    assert data.train.dtype == torch.float32 and data.train.min() >= -1 and data.train.max() <= 1
    rows = np.concatenate([d for d, _ in batches])
    u8 = torch.round((data.train + 1) * 127.5).to(torch.uint8).numpy()
    # planar layout: channel c, pixel (y, x) is row[c * R * R + y * R + x]
    assert u8[7, 1, 2, 3] == rows[7, 1 * R * R + 2 * R + 3]
    assert np.array_equal(u8.reshape(11, -1), rows)
    labels = np.concatenate([lab for _, lab in batches]) - 1
    assert data.train_labels.tolist() == labels.tolist()
    assert data.train_labels.dtype == torch.int64 and data.train_labels.max() == 999
    assert data.test_labels.tolist() == (val_labels - 1).tolist()
    test_u8 = torch.round((data.test + 1) * 127.5).to(torch.uint8).numpy()
    assert np.array_equal(test_u8.reshape(3, -1), val_data)
    assert data.num_classes == 1000


def test_max_train_spans_batches(folder):
    path, batches, _ = folder
    assert len(_build(path, max_train=4).train) == 4
    capped = _build(path, max_train=8)
    assert len(capped.train) == 8 and torch.equal(capped.train[:8], _build(path).train[:8])


def test_flip_doubles_train(folder):
    path, _, _ = folder
    plain, flipped = _build(path), _build(path, flip=True)
    assert len(flipped.train) == 22 and len(flipped.test) == 3
    assert torch.equal(flipped.train[11 + 4], torch.flip(plain.train[4], dims=[-1]))
    assert torch.equal(flipped.train_labels[11:], plain.train_labels)


def test_registry_entries_use_their_resolution(tmp_path):
    _batch(tmp_path / "train_data_batch_1.npz", 2, resolution=32)
    _batch(tmp_path / "val_data.npz", 2, resolution=32)
    assert build_dataset("imagenet32", path=tmp_path).sample_shape == (3, 32, 32)
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz: rows of 3072 values, i\.e\. 32x32.*12288"):
        build_dataset("imagenet64", path=tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        _build(tmp_path / "absent")


def test_empty_folder(tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path}: no train_data_batch"):
        _build(tmp_path)


def test_gap_in_batches(folder):
    path, _, _ = folder
    (path / "train_data_batch_2.npz").rename(path / "train_data_batch_3.npz")
    with pytest.raises(DataError, match=r"train_data_batch_2\.npz: missing"):
        _build(path)


def test_missing_val(folder):
    path, _, _ = folder
    (path / "val_data.npz").unlink()
    with pytest.raises(DataError, match=r"val_data\.npz: no such file"):
        _build(path)


def test_truncated_batch(folder):
    path, _, _ = folder
    file = path / "train_data_batch_2.npz"
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(DataError, match=r"train_data_batch_2\.npz: not a readable npz"):
        _build(path)


def test_wrong_row_size(folder):
    path, _, _ = folder
    np.savez(path / "train_data_batch_2.npz", data=np.zeros((2, 50), np.uint8), labels=[1, 2])
    with pytest.raises(DataError, match=r"train_data_batch_2\.npz: rows of 50 values, expected 3\*4\*4 = 48"):
        _build(path)


def test_wrong_dtype(folder):
    path, _, _ = folder
    np.savez(path / "val_data.npz", data=np.zeros((2, 48), np.float32), labels=[1, 2])
    with pytest.raises(DataError, match=r"val_data\.npz: data is float32"):
        _build(path)


@pytest.mark.parametrize("labels", [[0, 5], [1, 1001]])
def test_labels_out_of_range(folder, labels):
    path, _, _ = folder
    _batch(path / "train_data_batch_1.npz", 2, labels=labels)
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz: labels span .* outside 1\.\.1000"):
        _build(path)


def test_missing_labels_entry(folder):
    path, _, _ = folder
    np.savez(path / "val_data.npz", data=np.zeros((2, 48), np.uint8))
    with pytest.raises(DataError, match=r"val_data\.npz: no labels array"):
        _build(path)
