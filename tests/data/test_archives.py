"""Data files told apart by content (.npy under an .npz name) and a hint to extract a downloaded archive."""

from __future__ import annotations

import gzip
import io
import tarfile

import numpy as np
import pytest

from sdfm.data import DataError, build_dataset
from sdfm.data.archives import file_kind, load_npz
from sdfm.data.imagenet import read_batch


def _batch(n=3, resolution=4):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, 3 * resolution * resolution), dtype=np.uint8), np.arange(1, n + 1)


def test_file_kinds_by_their_first_bytes(tmp_path):
    data, labels = _batch()
    with open(tmp_path / "a.npz", "wb") as handle:
        np.savez(handle, data=data, labels=labels)
    with open(tmp_path / "b.npz", "wb") as handle:
        np.save(handle, data)
    (tmp_path / "c.npz").write_bytes(gzip.compress(b"x"))
    with tarfile.open(tmp_path / "d.npz", "w") as tar:
        tar.addfile(tarfile.TarInfo("x"), io.BytesIO(b""))
    (tmp_path / "e.npz").write_bytes(b"hello world")
    kinds = [file_kind(tmp_path / f"{name}.npz") for name in "abcde"]
    assert kinds == ["npz", "npy", "gzip", "tar", "unknown"]


def test_an_npy_under_an_npz_name_is_one_line_not_a_type_error(tmp_path):
    data, _ = _batch()
    with open(tmp_path / "train_data_batch_1.npz", "wb") as handle:
        np.save(handle, data)
    with pytest.raises(DataError, match=r"train_data_batch_1\.npz: holds a single \.npy array, not an \.npz "
                                        r"archive of named arrays \(data, labels\); download"):
        read_batch(tmp_path / "train_data_batch_1.npz", 4)


def test_a_real_npz_reads_whatever_its_name(tmp_path):
    data, labels = _batch()
    with open(tmp_path / "batch.bin", "wb") as handle:
        np.savez(handle, data=data, labels=labels)
    arrays = load_npz(tmp_path / "batch.bin", ("data", "labels", "mean"), "fix it")
    assert set(arrays) == {"data", "labels"}
    np.testing.assert_array_equal(arrays["data"], data)


def test_a_gzipped_npz_says_extract_it(tmp_path):
    (tmp_path / "val_data.npz").write_bytes(gzip.compress(b"PK\x03\x04"))
    with pytest.raises(DataError, match=r"val_data\.npz: is a gzip file, not an \.npz archive; extract it first"):
        read_batch(tmp_path / "val_data.npz", 4)


def _tar_gz(path):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"abcd"))


def test_cifar_folder_with_only_the_download_says_extract_it(tmp_path):
    _tar_gz(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(DataError) as error:
        build_dataset("cifar10", path=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "data_batch_1: no such file" in message
    assert f"it holds the archive cifar-10-python.tar.gz, not yet extracted: extract it there " \
           f"(tar -xf {tmp_path / 'cifar-10-python.tar.gz'} -C {tmp_path})" in message


def test_imagenet_and_image_folders_with_only_a_zip_say_extract_it(tmp_path):
    (tmp_path / "Imagenet32_train_npz.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(DataError, match=r"no train_data_batch_<k>\.npz files.*Imagenet32_train_npz\.zip.*unzip"):
        build_dataset("imagenet32", path=tmp_path)
    with pytest.raises(DataError, match=r"no images and no class subfolders.*Imagenet32_train_npz\.zip.*unzip"):
        build_dataset("image_folder", path=tmp_path)


def test_a_folder_without_archives_gets_no_hint(tmp_path):
    with pytest.raises(DataError) as error:
        build_dataset("cifar10", path=tmp_path)
    assert "not yet extracted" not in str(error.value) and "download CIFAR-10's python version there" in str(error.value)
