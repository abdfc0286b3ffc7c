"""Config values a schema lets through: each refused (or converted) before any job, in one line naming the key."""

from __future__ import annotations

import copy
import os

import pytest

from sdfm.config import validate_config
from sdfm.errors import ConfigError

GOOD = {"datasets": {"moons": {"source": "moons", "options": {"n_train": 200, "n_test": 50}}}, "seeds": [0, 1]}


def _with(*path_and_value):
    config = copy.deepcopy(GOOD)
    *path, value = path_and_value
    target = config
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return config


def _refused(config, message):
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert str(error.value) == message
    return str(error.value)


def test_integral_floats_are_converted_to_counts():
    full = validate_config(_with("train", "batch_size", 256.0))
    assert full["train"]["batch_size"] == 256 and type(full["train"]["batch_size"]) is int
    full = validate_config(_with("potential", "eval_every", 1.0e3))
    assert full["potential"]["eval_every"] == 1000 and type(full["potential"]["eval_every"]) is int
    assert validate_config(_with("seeds", [0.0, 2.0]))["seeds"] == [0, 2]


@pytest.mark.parametrize("key, value, message", [
    (("train", "steps"), 1.0e30, "config key 'train.steps': 1e+30 is out of range for a count; write an integer "
                                 "from 1 to 9007199254740992"),
    (("train", "batch_size"), 256.5, "config key 'train.batch_size': 256.5 is not an integer; write a whole number "
                                     ">= 2"),
    (("train", "steps"), float("nan"), "config key 'train.steps': .nan is not a finite number; write a finite number"),
    (("train", "lr"), float("nan"), "config key 'train.lr': .nan is not a finite number; write a finite number"),
    (("potential", "lr_scale"), float("inf"), "config key 'potential.lr_scale': .inf is not a finite number; write a "
                                              "finite number"),
    (("methods",), {"sdfm": {"epsilons": [0.0, float("-inf")]}},
     "config key 'methods.sdfm.epsilons.1': -.inf is not a finite number; write a finite number"),
    (("train", "ema_decay"), 1.0, "config key 'train.ema_decay': 1.0 is greater than or equal to the maximum of 1; "
                                  "fix its value"),
    (("seeds",), [0, 1, 0], "config key 'seeds': seed 0 is listed twice, and each seed is one run of the mean +- std; "
                            "drop the copy"),
    (("seeds",), [2**64 + 1], "config key 'seeds.0': 18446744073709551617 is greater than the maximum of 4294967295; "
                              "fix its value"),
    (("train", "lr"), "1e-4", "config key 'train.lr': '1e-4' is not of type number; PyYAML reads 1e-4 as a string "
                              "(YAML 1.1 floats need a dot and a signed exponent); write 1.0e-4"),
    (("train", "lr"), "2E5", "config key 'train.lr': '2E5' is not of type number; PyYAML reads 2E5 as a string (YAML "
                             "1.1 floats need a dot and a signed exponent); write 2.0e+5"),
    (("methods",), {"sdfm": {"epsilons": ["1e-2"]}},
     "config key 'methods.sdfm.epsilons.0': '1e-2' is not valid under any of the given schemas; PyYAML reads 1e-2 as "
     "a string (YAML 1.1 floats need a dot and a signed exponent); write 1.0e-2"),
])
def test_values_the_schema_alone_lets_through(key, value, message):
    _refused(_with(*key, value), message)


@pytest.mark.parametrize("options, message", [
    ({"n_train": "5k"}, "config key 'datasets.moons.options.n_train': option n_train='5k': give an integer >= 1"),
    ({"n_train": 1e30}, "config key 'datasets.moons.options.n_train': option n_train=1e+30: out of range; give an "
                        "integer from 1 to 9223372036854775807"),
    ({"seed": -1}, "config key 'datasets.moons.options.seed': option seed=-1: give an integer >= 0"),
    ({"n_pts": 3}, "config key 'datasets.moons.options.n_pts': unknown option 'n_pts' for data set 'moons': its "
                   "options are n_train, n_test, seed"),
])
def test_data_set_options_go_through_the_builders_checks(options, message):
    _refused(_with("datasets", "moons", "options", options), message)


def test_data_paths_are_checked_for_kind_and_readability(tmp_path):
    file = tmp_path / "batch.npz"
    file.write_bytes(b"x")
    config = {"datasets": {"im": {"source": "imagenet32", "options": {"path": str(file)}}}}
    _refused(config, f"config key 'datasets.im.options.path': {file}: a file, not a folder (option path); give the "
                     f"folder that holds it")
    config["datasets"]["im"]["options"]["path"] = str(tmp_path)
    _refused(config, f"config key 'datasets.im.options.path': {tmp_path}: no train_data_batch_<k>.npz files; download "
                     f"the downsampled ImageNet batches there")
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b")
    _refused({"datasets": {"c": {"source": "cifar10", "options": {"path": str(folder)}}}},
             f"config key 'datasets.c.options.path': {folder / 'data_batch_1'}: no such file; download CIFAR-10's "
             f"python version there; it holds the archive cifar-10-python.tar.gz, not yet extracted: extract it there "
             f"(tar -xf {folder / 'cifar-10-python.tar.gz'} -C {folder})")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_data_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    folder.chmod(0)
    try:
        _refused({"datasets": {"f": {"source": "image_folder", "options": {"path": str(folder)}}}},
                 f"config key 'datasets.f.options.path': {folder}: folder not readable (option path); allow reading "
                 f"it (chmod -R u+rX)")
    finally:
        folder.chmod(0o755)


def test_inception_weights_must_be_a_file_and_outputs_folders(tmp_path):
    config = {"datasets": {"d": {"source": "digits"}}, "evaluate": {"metrics": ["fid"],
                                                                    "inception_weights": str(tmp_path)}}
    _refused(config, f"config key 'evaluate.inception_weights': {tmp_path} is a folder, not a file; point it at a "
                     f"local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    (tmp_path / "results").write_text("")
    _refused({**GOOD, "results_dir": str(tmp_path / "results")},
             f"config key 'results_dir': {tmp_path / 'results'} is a file, and results go into a folder; give another "
             f"path or move the file")


def test_study_data_sets_are_checked_too():
    study = {"pca": {"sets": {"x": {"source": "moonz", "dims": [1]}}}}
    message = _refused({**GOOD, "studies": study}, "config key 'studies.pca.sets.x.source': unknown data set 'moonz'; "
                                                  "choose one of " + _refused_sources())
    assert "moons" in message
    study = {"pca": {"sets": {"x": {"source": "moons", "options": {"n_test": "ten"}, "dims": [1]}}}}
    _refused({**GOOD, "studies": study}, "config key 'studies.pca.sets.x.options.n_test': option n_test='ten': give "
                                         "an integer >= 0")
    _refused({**GOOD, "studies": {"pca": {"sets": {"nope": {"dims": [1]}}}}},
             "config key 'studies.pca.sets.nope' names no data set of 'datasets' and has no 'source'; add one")
    _refused({**GOOD, "studies": {"convergence": {"dataset": "moons", "seeds": [3, 3]}}},
             "config key 'studies.convergence.seeds': seed 3 is listed twice, and each seed is one run of the mean +- "
             "std; drop the copy")


def _refused_sources():
    from sdfm.data import DATASETS

    return ", ".join(sorted(DATASETS))
