"""Epsilon `auto` in the config: the wildcard label `auto` in the job grid, and one-line errors naming the key."""

import copy

import pytest

from sdfm.artifacts import epsilon_label
from sdfm.config import job_grid, validate_config
from sdfm.errors import ConfigError

BASE = {
    "datasets": {"moons": {"source": "moons"}},
    "methods": {"fm": {}, "sdfm": {"epsilons": [0.0, 0.1, "auto"], "auto_epsilon": {"target_entropy": 0.1}}},
    "seeds": [0, 1],
}


def _with(**changes):
    config = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = config
        *parents, last = path.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return config


def test_auto_is_a_wildcard_label_of_the_grid():
    config = validate_config(BASE)
    assert epsilon_label("auto") == "auto" and epsilon_label(0.1) == "0.1"
    sdfm = sorted({j["epsilon"] for j in job_grid(config) if j["method"] == "sdfm"})
    assert sdfm == ["0", "0.1", "auto"]
    assert len(job_grid(config)) == 2 * (1 + 3)


@pytest.mark.parametrize("changes,key", [
    ({"methods__otfm": {"epsilons": ["auto"]}}, "methods.otfm.epsilons.0"),
    ({"methods__sdfm__epsilons": [0.1, "automatic"]}, "methods.sdfm.epsilons.1"),
    ({"methods__sdfm__auto_epsilon": {"target_entropy": 1.5}}, "methods.sdfm.auto_epsilon.target_entropy"),
    ({"methods__sdfm__auto_epsilon": {"target_entropy": 0}}, "methods.sdfm.auto_epsilon.target_entropy"),
    ({"methods__sdfm__auto_epsilon": {"criterion": "magic"}}, "methods.sdfm.auto_epsilon.criterion"),
    ({"methods__sdfm__auto_epsilon": {"reference_batch": 4}}, "methods.sdfm.auto_epsilon.reference_batch"),
    ({"methods__sdfm__auto_epsilon": {"target": 0.1}}, "methods.sdfm.auto_epsilon.target"),
    ({"potential": {"processes": 2}}, "methods.sdfm.epsilons"),
    ({"methods__sdfm__epsilons": [0.0], "studies": {"adaptive_epsilon": {}}}, "studies.adaptive_epsilon"),
])
def test_bad_settings_give_one_line_errors_naming_the_key(changes, key):
    with pytest.raises(ConfigError) as err:
        validate_config(_with(**changes))
    message = str(err.value)
    assert "\n" not in message and f"'{key}'" in message, message


def test_the_study_validates_with_auto():
    config = validate_config(_with(studies={"adaptive_epsilon": {}}))
    assert config["studies"] == {"adaptive_epsilon": {}}
