"""Config keys methods.otfm.ot_batch_size, train.meanflow_time / meanflow_adaptive_power, epsilon_reference."""

from __future__ import annotations

import copy

import pytest

from sdfm.config import MEANFLOW_TRAIN_DEFAULTS, dataset_settings, validate_config
from sdfm.errors import ConfigError

GOOD = {
    "datasets": {"moons": {"source": "moons", "options": {"n_train": 100}}},
    "methods": {"fm": {}, "otfm": {"epsilons": [0.0]}, "sdfm": {"epsilons": [0.0]}},
    "train": {"batch_size": 64},
}


def _config(**changes):
    config = copy.deepcopy(GOOD)
    for key, value in changes.items():
        config[key] = value
    return config


def test_defaults_leave_existing_configs_unchanged():
    config = validate_config(GOOD)
    assert config["epsilon_reference"] == "inner_product"
    assert "ot_batch_size" not in config["methods"]["otfm"]
    train = dataset_settings(config, "moons")["train"]
    assert not set(MEANFLOW_TRAIN_DEFAULTS) & set(train)  # FM models: no MeanFlow keys, same run keys as before


def test_ot_batch_size_must_be_a_multiple_of_the_training_batch():
    config = validate_config(_config(methods={"otfm": {"epsilons": [0.0], "ot_batch_size": 1024}}))
    assert config["methods"]["otfm"]["ot_batch_size"] == 1024
    with pytest.raises(ConfigError, match=r"'methods.otfm.ot_batch_size': 1000 is not a multiple of train.batch_size = 64"):
        validate_config(_config(methods={"otfm": {"ot_batch_size": 1000}}))
    with pytest.raises(ConfigError, match="ot_batch_size"):
        validate_config(_config(methods={"otfm": {"ot_batch_size": 1}}))


def test_meanflow_models_get_geng_et_al_defaults_and_partial_overrides():
    config = validate_config(_config(train={"batch_size": 64, "objective": "meanflow"}))
    train = dataset_settings(config, "moons")["train"]
    assert train["meanflow_time"] == {"distribution": "logit_normal", "mean": 0.4, "std": 1.0}
    assert train["meanflow_adaptive_power"] == 1.0
    config = validate_config(_config(train={"batch_size": 64, "objective": "meanflow", "meanflow_adaptive_power": 0,
                                            "meanflow_time": {"distribution": "logit_normal", "std": 2.0}}))
    train = dataset_settings(config, "moons")["train"]
    assert train["meanflow_time"] == {"distribution": "logit_normal", "mean": 0.4, "std": 2.0}
    assert train["meanflow_adaptive_power"] == 0
    config = validate_config(_config(train={"objective": "meanflow", "meanflow_time": {"distribution": "uniform"}}))
    assert dataset_settings(config, "moons")["train"]["meanflow_time"] == {"distribution": "uniform"}


@pytest.mark.parametrize("train, message", [
    ({"meanflow_adaptive_power": 1.0}, "'train.meanflow_adaptive_power' applies to MeanFlow models"),
    ({"objective": "meanflow", "meanflow_time": {"distribution": "uniform", "mean": 0.0}}, "mean and std belong"),
    ({"objective": "meanflow", "meanflow_time": {"distribution": "beta"}}, "not allowed"),
    ({"objective": "meanflow", "meanflow_time": {"distribution": "logit_normal", "std": 0}}, "meanflow_time.std"),
    ({"objective": "meanflow", "meanflow_adaptive_power": -1}, "meanflow_adaptive_power"),
])
def test_bad_meanflow_settings_are_one_line_errors(train, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(_config(train=train))


def test_epsilon_reference_values_and_auto():
    assert validate_config(_config(epsilon_reference="sq_euclidean"))["epsilon_reference"] == "sq_euclidean"
    with pytest.raises(ConfigError, match="'epsilon_reference'.*not allowed"):
        validate_config(_config(epsilon_reference="euclidean"))
    with pytest.raises(ConfigError, match="'epsilon_reference': SD-FM epsilon 'auto'"):
        validate_config(_config(epsilon_reference="sq_euclidean", methods={"sdfm": {"epsilons": [0.0, "auto"]}}))


def test_a_data_set_entry_picks_its_methods_and_its_ot_batch():
    from sdfm.config import job_grid

    config = _config(datasets={"moons": {"source": "moons", "options": {"n_train": 100}},
                               "moons_n1024": {"source": "moons", "options": {"n_train": 100}, "methods": ["otfm"],
                                               "ot_batch_size": 1024}})
    config = validate_config(config)
    jobs = job_grid(config)
    assert {j["method"] for j in jobs if j["dataset"] == "moons_n1024"} == {"otfm"}
    assert {j["method"] for j in jobs if j["dataset"] == "moons"} == {"fm", "otfm", "sdfm"}
    assert dataset_settings(config, "moons_n1024")["ot_batch_size"] == 1024
    assert dataset_settings(config, "moons")["ot_batch_size"] is None
    bad = copy.deepcopy(config)
    bad["datasets"]["moons_n1024"]["ot_batch_size"] = 1000
    with pytest.raises(ConfigError, match="'datasets.moons_n1024.ot_batch_size': 1000 is not a multiple"):
        validate_config(bad)
    bad["datasets"]["moons_n1024"].update(ot_batch_size=1024, methods=["otfm"])
    bad["methods"] = {"fm": {}, "sdfm": {"epsilons": [0.0]}}
    with pytest.raises(ConfigError, match="'datasets.moons_n1024.methods': 'otfm' is not in the config's methods"):
        validate_config(bad)
