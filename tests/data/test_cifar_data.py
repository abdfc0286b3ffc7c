"""CIFAR-10 from fake python pickles in the official layout."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sdfm.data import DataError, build_dataset


def _batch(path, n, *, seed=0, labels=None, row=3072):
    """Write one batch as the CIFAR-10 python version does: a protocol-2 pickle with bytes keys."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, row), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n).tolist() if labels is None else labels
    batch = {b"batch_label": b"fake", b"labels": labels, b"data": data, b"filenames": [b"x.png"] * n}
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return data, np.asarray(labels)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    train = [_batch(root / f"data_batch_{k}", 2, seed=k) for k in range(1, 6)]
    test = _batch(root / "test_batch", 3, seed=9)
    return root, train, test


def test_shapes_layout_and_labels(folder):
    root, train, (test_data, test_labels) = folder
    data = build_dataset("cifar10", path=root)
    assert data.name == "cifar10" and data.num_classes == 10
    assert data.train.shape == (10, 3, 32, 32) and data.test.shape == (3, 3, 32, 32)
    assert data.train.dtype == torch.float32 and data.train.min() >= -1 and data.train.max() <= 1
    u8 = torch.round((data.train + 1) * 127.5).to(torch.uint8).numpy()
    rows = np.concatenate([d for d, _ in train])
    assert u8[3, 2, 5, 7] == rows[3, 2 * 1024 + 5 * 32 + 7]
    assert np.array_equal(u8.reshape(10, -1), rows)
    assert data.train_labels.tolist() == np.concatenate([lab for _, lab in train]).tolist()
    assert data.test_labels.tolist() == test_labels.tolist() and data.test_labels.dtype == torch.int64


def test_parent_folder_and_flip(folder):
    root, _, _ = folder
    data = build_dataset("cifar10", path=root.parent, flip=True)
    assert len(data.train) == 20 and len(data.test) == 3
    assert torch.equal(data.train[10:], torch.flip(data.train[:10], dims=[-1]))


def test_missing_batch(folder):
    root, _, _ = folder
    (root / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4: no such file"):
        build_dataset("cifar10", path=root)


def test_truncated_pickle(folder):
    root, _, _ = folder
    file = root / "data_batch_2"
    file.write_bytes(file.read_bytes()[:500])
    with pytest.raises(DataError, match="data_batch_2: not a readable pickle"):
        build_dataset("cifar10", path=root)


def test_wrong_row_size(folder):
    root, _, _ = folder
    _batch(root / "test_batch", 2, row=1024)
    with pytest.raises(DataError, match=r"test_batch: data is uint8 \(2, 1024\), expected uint8 \(n, 3072\)"):
        build_dataset("cifar10", path=root)


def test_labels_out_of_range(folder):
    root, _, _ = folder
    _batch(root / "data_batch_1", 2, labels=[3, 10])
    with pytest.raises(DataError, match=r"data_batch_1: labels span 3\.\.10, outside 0\.\.9"):
        build_dataset("cifar10", path=root)


def test_label_count_mismatch(folder):
    root, _, _ = folder
    _batch(root / "data_batch_1", 2, labels=[3])
    with pytest.raises(DataError, match=r"data_batch_1: \(1,\) labels for 2 images"):
        build_dataset("cifar10", path=root)


class _Payload:
    def __reduce__(self):
        return (print, ("pickle ran code",))


def test_pickle_naming_code_is_refused(folder, capsys):
    root, _, _ = folder
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": _Payload()}, protocol=2))
    with pytest.raises(DataError, match="data_batch_3: not a readable pickle .*refusing to load global .*print"):
        build_dataset("cifar10", path=root)
    assert "pickle ran code" not in capsys.readouterr().out
