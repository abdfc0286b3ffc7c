"""Image sets shipped with packages: scikit-learn digits and the animal-mnist wheel."""

from __future__ import annotations

from importlib.util import find_spec

import pytest
import torch

import sdfm.data.animals as animals
from sdfm.data import DataError, build_dataset

needs_animals = pytest.mark.skipif(
    find_spec("animal_mnist") is None, reason="animal-mnist not installed (pip install --no-deps animal-mnist==0.4)"
)


def _check_images(data, shape, num_classes):
    assert data.kind == "images" and data.sample_shape == shape
    for split in (data.train, data.test):
        assert split.dtype == torch.float32
        assert split.min() >= -1 and split.max() <= 1
        grid = (split + 1) * 127.5  # exactly the uint8 grid
        assert torch.allclose(grid, grid.round(), atol=1e-4)
    for labels in (data.train_labels, data.test_labels):
        assert labels.dtype == torch.int64
        assert labels.min() >= 0 and labels.max() < num_classes
    assert len(data.train_labels) == len(data.train) and len(data.test_labels) == len(data.test)
    assert data.num_classes == num_classes


def test_digits():
    data = build_dataset("digits")
    _check_images(data, (1, 8, 8), 10)
    assert len(data.train) == 1500 and len(data.test) == 297
    assert data.train.min() == -1 and data.train.max() == 1
    assert set(data.train_labels.tolist()) == set(range(10))


def test_digits_split_is_seeded():
    a, b = build_dataset("digits", n_test=100, seed=1), build_dataset("digits", n_test=100, seed=2)
    assert len(a.test) == 100
    assert torch.equal(a.test, build_dataset("digits", n_test=100, seed=1).test)
    assert not torch.equal(a.test, b.test)


def test_digits_flip_doubles_train_only():
    plain, flipped = build_dataset("digits"), build_dataset("digits", flip=True)
    n = len(plain.train)
    assert len(flipped.train) == 2 * n and torch.equal(flipped.test, plain.test)
    assert torch.equal(flipped.train[:n], plain.train)
    assert torch.equal(flipped.train[n:], torch.flip(plain.train, dims=[-1]))
    assert torch.equal(flipped.train_labels, torch.cat([plain.train_labels, plain.train_labels]))


def test_digits_rejects_a_test_split_without_train():
    with pytest.raises(DataError, match="n_test=1797"):
        build_dataset("digits", n_test=1797)


@needs_animals
def test_animals():
    data = build_dataset("animals", flip=True)
    _check_images(data, (1, 28, 28), 10)
    assert len(data.test) == 1000 and len(data.train) == 2 * 9000
    assert torch.equal(data.train[9000 + 5], torch.flip(data.train[5], dims=[-1]))
    counts = torch.bincount(torch.cat([data.train_labels[:9000], data.test_labels]))
    assert counts.tolist() == [1000] * 10


def test_animals_missing_package(monkeypatch):
    monkeypatch.setattr(animals, "find_spec", lambda name: None)
    hint = r"animal-mnist is not installed: run `pip install --no-deps animal-mnist==0.4`"
    with pytest.raises(DataError, match=hint):
        build_dataset("animals")
