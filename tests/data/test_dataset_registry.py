"""The Dataset container, the registry and option checking."""

from __future__ import annotations

import pytest
import torch

import sdfm.data
from sdfm.data import DATASETS, DataError, Dataset, build_dataset
from sdfm.data.options import OptionError
from sdfm.data.registry import check_options, dataset_options


def _points(n: int = 5, d: int = 2, **overrides) -> Dataset:
    fields = dict(
        name="p", train=torch.zeros(n, d), test=torch.zeros(2, d),
        train_labels=None, test_labels=None, num_classes=None, kind="points",
    )
    return Dataset(**{**fields, **overrides})


def test_public_names():
    assert sorted(sdfm.data.__all__) == sorted(
        ["DATASETS", "DataError", "Dataset", "build_dataset", "load_prepared", "prepare_dataset"]
    )
    assert issubclass(DataError, ValueError)


def test_registry_names():
    expected = {"checkerboard", "eight_gaussians", "moons", "two_rings", "spiral", "digits", "animals",
                "imagenet32", "imagenet64", "image_folder", "cifar10"}
    assert expected <= set(DATASETS)


def test_shape_views():
    images = Dataset("x", torch.zeros(4, 1, 8, 8), torch.zeros(2, 1, 8, 8), None, None, None, "images")
    assert images.sample_shape == (1, 8, 8) and images.dim == 64
    flat = images.flat_train()
    assert flat.shape == (4, 64) and flat.dtype == torch.float32
    assert _points(d=3).sample_shape == (3,) and _points(d=3).dim == 3


def test_dataset_rejects_inconsistent_fields():
    with pytest.raises(DataError, match="kind"):
        _points(kind="audio")
    with pytest.raises(DataError, match="differ in shape"):
        _points(test=torch.zeros(2, 3))
    with pytest.raises(DataError, match="all set or all None"):
        _points(train_labels=torch.zeros(5, dtype=torch.int64))


def test_unknown_data_set():
    with pytest.raises(DataError, match="unknown data set 'nope'.*moons"):
        build_dataset("nope")


def test_unknown_option_is_named():
    with pytest.raises(DataError, match="unknown option 'n_points' for data set 'moons'.*n_train"):
        build_dataset("moons", n_points=3)


def test_missing_required_option_is_named():
    with pytest.raises(DataError, match="needs option 'path'"):
        build_dataset("imagenet32")


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_train": 0}, "n_train=0"),
        ({"n_train": "many"}, "n_train='many'"),
        ({"n_train": True}, "n_train=True"),
        ({"seed": 1.5}, "seed=1.5"),
    ],
)
def test_bad_option_values(options, match):
    with pytest.raises(DataError, match=match):
        build_dataset("moons", **options)


def test_string_options_from_a_command_line():
    data = build_dataset("moons", n_train="10", n_test="3", seed="2")
    assert data.train.shape == (10, 2) and data.test.shape == (3, 2)
    assert build_dataset("digits", flip="true").train.shape[0] == 3000
    with pytest.raises(DataError, match="flip='maybe'"):
        build_dataset("digits", flip="maybe")


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_builder_checks_its_options_without_loading(name, tmp_path):
    """check_options runs the builder's own checks (the config's, before any job) and names the bad option."""
    known = dataset_options(name)
    if "path" in known:  # file-based: the folder (or, for arrays, the file) is checked, nothing is read
        with pytest.raises(OptionError, match="no such (folder|file)") as error:
            check_options(name, {"path": str(tmp_path / "missing")})
        assert error.value.option == "path"
        return
    count = next(key for key in ("n_train", "n_test") if key in known)
    with pytest.raises(OptionError, match=f"option {count}='5k'") as error:
        check_options(name, {count: "5k"})
    assert error.value.option == count
    checked = check_options(name, {count: "12"})
    assert checked[count] == 12 and set(checked) == set(known)
