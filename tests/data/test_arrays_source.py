"""Source ``arrays``: a user's .npy / .npz / .csv / .parquet file of vectors, its labels and held-out split."""

import numpy as np
import pandas as pd
import pytest
import torch

from sdfm.config import ConfigError, dataset_settings, validate_config
from sdfm.data import DataError, build_dataset


def _points(n=50, d=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _rows(tensor):
    """The rows as a sorted list of tuples (to compare splits with the file regardless of order)."""
    return sorted(map(tuple, tensor.numpy().tolist()))


def test_npy_rows_are_split_into_train_and_test_without_loss(tmp_path):
    points = _points()
    np.save(tmp_path / "x.npy", points)
    data = build_dataset("arrays", path=str(tmp_path / "x.npy"), test_fraction=0.2, seed=3)
    assert data.kind == "points" and data.train.shape == (40, 3) and data.test.shape == (10, 3)
    assert data.train.dtype == torch.float32 and data.num_classes is None
    assert _rows(torch.cat([data.train, data.test])) == _rows(torch.from_numpy(points))
    again = build_dataset("arrays", path=str(tmp_path / "x.npy"), test_fraction=0.2, seed=3)
    assert torch.equal(again.test, data.test)  # the split is seeded
    other = build_dataset("arrays", path=str(tmp_path / "x.npy"), test_fraction=0.2, seed=4)
    assert not torch.equal(other.test, data.test)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npz"])
def test_labels_become_class_ids_in_sorted_order_and_stay_with_their_rows(tmp_path, suffix):
    points = _points(60, 2)
    names = np.array(["t-cell", "b-cell", "nk"])[np.arange(60) % 3]
    path = tmp_path / f"cells{suffix}"
    if suffix == ".npz":
        np.savez(path, emb=points, kind=names)
        data = build_dataset("arrays", path=str(path), features="emb", label_column="kind", test_fraction=0.25)
    else:
        table = pd.DataFrame({"pc1": points[:, 0], "pc2": points[:, 1], "kind": names, "batch": np.arange(60)})
        table.to_csv(path, index=False) if suffix == ".csv" else table.to_parquet(path)
        data = build_dataset("arrays", path=str(path), features=["pc1", "pc2"], label_column="kind",
                             test_fraction=0.25)
    assert data.num_classes == 3 and data.train.shape == (45, 2) and data.test.shape == (15, 2)
    ids = {"b-cell": 0, "nk": 1, "t-cell": 2}  # sorted distinct values
    expected = {tuple(np.round(p, 5)): ids[n] for p, n in zip(points.tolist(), names)}
    for split, labels in ((data.train, data.train_labels), (data.test, data.test_labels)):
        for row, label in zip(split.numpy().tolist(), labels.tolist()):
            assert expected[tuple(np.round(row, 5))] == label


def test_a_held_out_file_standardisation_and_a_row_cap(tmp_path):
    np.save(tmp_path / "train.npy", 3.0 + 2.0 * _points(200, 4))
    np.save(tmp_path / "test.npy", _points(30, 4, seed=1))
    data = build_dataset("arrays", path=str(tmp_path / "train.npy"), test_path=str(tmp_path / "test.npy"),
                         max_rows=100, standardize=True)
    assert data.train.shape == (100, 4) and data.test.shape == (30, 4)
    torch.testing.assert_close(data.train.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(data.train.std(0, unbiased=False), torch.ones(4), atol=1e-5, rtol=0)
    assert data.test.mean() < -1.0  # the test file, moved by the training split's mean (about 3 / 2)


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif name.endswith(".npy"):
        np.save(path, content)
    else:
        np.savez(path, **content)
    return str(path)


@pytest.mark.parametrize("name, content, options, message", [
    ("x.txt", "1,2\n", {}, "unsupported file type '.txt'"),
    ("x.npy", np.zeros((2, 3, 4)), {}, "give a 2-D (rows, coordinates) array"),
    ("x.npy", np.array([[1.0, np.nan], [0.0, 1.0]]), {}, "1 values are NaN or infinite (first at row 0, column 1)"),
    ("x.npy", np.zeros((5, 2)), {"label_column": "y"}, "a .npy file holds one array"),
    ("x.npz", {"a": np.zeros((5, 2)), "b": np.zeros((5, 2))}, {}, "name the one with the points in option features"),
    ("x.npz", {"a": np.zeros((5, 2))}, {"label_column": "y"}, "no array 'y' (option label_column)"),
    ("x.npz", {"a": np.zeros((5, 2)), "y": np.arange(4)}, {"label_column": "y"}, "4 labels for 5 rows"),
    ("x.csv", "a,b,name\n1,2,u\n3,4,v\n", {}, "column 'name' is not numeric; name it in option label_column"),
    ("x.csv", "a,b\n1,2\n3,4\n", {"features": ["a", "c"]}, "no column 'c' (option features)"),
    ("x.csv", "a,y\n1,0.5\n3,1\n5,1\n", {"label_column": "y", "test_fraction": 0.3},
     "label 0.5 is neither an integer nor a string"),
    ("x.csv", "a,y\n1,u\n3,u\n5,\n", {"label_column": "y"}, "row 2 has no 'y'"),
    ("x.npy", np.zeros((1, 2)), {}, "no held-out rows"),
    ("x.npy", np.ones((4, 2)), {"standardize": True}, "coordinate 0 is constant"),
])
def test_bad_files_and_options_fail_in_one_line_naming_the_file(tmp_path, name, content, options, message):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        build_dataset("arrays", path=path, **options)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(path)


def test_a_held_out_class_unseen_in_training_and_a_missing_file(tmp_path):
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 2)), y=np.array([0, 0, 1, 1]))
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 2)), y=np.array([1, 2]))
    with pytest.raises(DataError, match="held-out label 2 never occurs in the training split"):
        build_dataset("arrays", path=str(tmp_path / "train.npz"), features="x", label_column="y",
                      test_path=str(tmp_path / "test.npz"))
    with pytest.raises(DataError, match=r"nope\.npy: no such file \(option path\)"):
        build_dataset("arrays", path=str(tmp_path / "nope.npy"))


def test_the_config_treats_arrays_as_points_and_allows_conditional_runs_with_labels(tmp_path):
    np.save(tmp_path / "x.npy", _points())
    entry = {"source": "arrays", "options": {"path": str(tmp_path / "x.npy"), "label_column": "y"},
             "conditional": {"beta": 1.0}}
    config = validate_config({"datasets": {"mine": entry}})
    merged = dataset_settings(config, "mine")
    assert merged["kind"] == "points" and merged["model"]["kind"] == "mlp" and merged["evaluate"]["metrics"] == ["w2", "energy"]
    del entry["options"]["label_column"]
    with pytest.raises(ConfigError, match="options.label_column"):
        validate_config({"datasets": {"mine": entry}})


@pytest.mark.parametrize("value, message", [(["a.csv"], "give the path of one"), (3, "give the path of one")])
def test_a_path_that_is_not_one_string_is_refused_in_one_line(value, message):
    from sdfm.data.options import OptionError
    from sdfm.data.registry import check_options

    with pytest.raises(OptionError, match=message) as error:
        check_options("arrays", {"path": value})
    assert error.value.option == "path"


def test_a_folder_given_as_the_file_is_refused(tmp_path):
    from sdfm.data.options import OptionError
    from sdfm.data.registry import check_options

    with pytest.raises(OptionError, match="a folder, not a file"):
        check_options("arrays", {"path": str(tmp_path)})
