"""The prepared-data cache: atomic writes, bit-exact round trips, hash and corruption checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sdfm.data import DataError, build_dataset, load_prepared, prepare_dataset
from sdfm.data.cache import content_hash


def _same(a, b):
    assert a.name == b.name and a.kind == b.kind and a.num_classes == b.num_classes
    for field in ("train", "test", "train_labels", "test_labels"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None)
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize(
    ("name", "options"),
    [("moons", {"n_train": 64, "n_test": 8}), ("digits", {"flip": True}), ("digits", {"n_test": 0})],
)
def test_round_trip_is_bit_exact(tmp_path, name, options):
    path = tmp_path / "sub" / "data.npz"
    digest = prepare_dataset(name, path, **options)
    assert len(digest) == 64 and int(digest, 16) >= 0
    _same(load_prepared(path), build_dataset(name, **options))
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.npz"]  # no temp file left


def test_file_format(tmp_path):
    path = tmp_path / "digits.npz"
    digest = prepare_dataset("digits", path, n_test=100)
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    assert entries["train"].dtype == np.uint8 and entries["train"].shape == (1697, 1, 8, 8)
    assert entries["train"].max() == 255 and entries["train"].min() == 0
    assert entries["train_labels"].dtype == np.int64
    assert str(entries["name"]) == "digits" and str(entries["kind"]) == "images"
    assert int(entries["num_classes"]) == 10 and str(entries["sha256"]) == digest
    points = tmp_path / "moons"  # any file name works: the writer does not add a suffix
    prepare_dataset("moons", points, n_train=5, n_test=2)
    with np.load(points, allow_pickle=False) as npz:
        assert npz["train"].dtype == np.float32 and "train_labels" not in npz.files
        assert int(npz["num_classes"]) == -1


def test_hash_is_deterministic_and_content_sensitive(tmp_path):
    a = prepare_dataset("moons", tmp_path / "a.npz", n_train=20, n_test=5, seed=1)
    b = prepare_dataset("moons", tmp_path / "b.npz", n_train=20, n_test=5, seed=1)
    c = prepare_dataset("moons", tmp_path / "c.npz", n_train=20, n_test=5, seed=2)
    assert a == b != c


def _rewrite(path, **changes):
    """Rewrite the cache at ``path`` with some entries replaced, keeping the stored hash."""
    with np.load(path, allow_pickle=False) as npz:
        entries = {key: npz[key] for key in npz.files}
    entries.update(changes)
    np.savez(path, **entries)
    return entries


def test_hash_mismatch(tmp_path):
    path = tmp_path / "d.npz"
    prepare_dataset("moons", path, n_train=20, n_test=5)
    train = np.load(path)["train"].copy()
    train[3, 1] += 1
    _rewrite(path, train=train)
    with pytest.raises(DataError, match=f"{path}: content hash .* does not match the stored"):
        load_prepared(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "d.npz"
    prepare_dataset("digits", path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{path}: corrupt or truncated cache"):
        load_prepared(path)


def test_flipped_byte_is_caught(tmp_path):
    path = tmp_path / "d.npz"
    prepare_dataset("moons", path, n_train=200, n_test=5)
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0xFF  # inside the train array
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"{path}: (corrupt or truncated|content hash)"):
        load_prepared(path)


def test_not_a_cache(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(DataError, match=f"{text}: corrupt or truncated cache"):
        load_prepared(text)
    other = tmp_path / "other.npz"
    np.savez(other, train=np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match=f"{other}: not a prepared data file \\(no 'test' entry\\)"):
        load_prepared(other)
    with pytest.raises(DataError, match="absent.npz: no such prepared data file"):
        load_prepared(tmp_path / "absent.npz")


def test_nan_points_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    prepare_dataset("moons", path, n_train=20, n_test=5)
    train = np.load(path)["train"].copy()
    train[0, 0] = np.nan
    entries = _rewrite(path, train=train)
    entries.pop("sha256")
    _rewrite(path, sha256=np.array(content_hash(entries)))  # a consistent hash: the NaN check must catch it
    with pytest.raises(DataError, match=f"{path}: point data holds NaN or inf"):
        load_prepared(path)
