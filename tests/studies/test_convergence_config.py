"""Config validation of ``studies.convergence``: every mistake stops with one line naming the key."""

import pytest

from sdfm.config import validate_config
from sdfm.errors import ConfigError


def _config(**study):
    return {"datasets": {"checkerboard": {"source": "checkerboard", "options": {"n_train": 4000}}},
            "methods": {"fm": {}}, "studies": {"convergence": {"dataset": "checkerboard", **study}}}


def test_a_good_study_validates():
    study = {"n_points": [1000, 4000], "batch_sizes": [64, 256], "epsilons": [0, 0.001],
             "centre": {"n_points": 4000, "batch_size": 256}, "steps": 512, "seeds": [0, 1],
             "solvers": {"theory": {"momentum": 0.0, "averaging": "polyak", "lr_scale": 0.5}, "default": {}}}
    assert validate_config(_config(**study))["studies"]["convergence"]["steps"] == 512


@pytest.mark.parametrize("study, key", [
    ({"dataset": "moons"}, "'studies.convergence.dataset'"),
    ({"n_points": [1000, 8000]}, "'studies.convergence.n_points'"),
    ({"n_points": []}, "'studies.convergence.n_points'"),
    ({"batch_sizes": [1]}, "'studies.convergence.batch_sizes.0'"),
    ({"epsilons": [-0.1]}, "'studies.convergence.epsilons.0'"),
    ({"steps": 100, "fit_from": 200}, "'studies.convergence.fit_from'"),
    ({"steps": 100, "first_eval": 200, "fit_from": 50}, "'studies.convergence.first_eval'"),
    ({"n_points": [1000], "centre": {"n_points": 2000, "batch_size": 256}}, "'studies.convergence.centre.n_points'"),
    ({"batch_sizes": [64], "centre": {"n_points": 1000, "batch_size": 256}}, "'studies.convergence.centre.batch_size'"),
    ({"solvers": {"theory": {"burn_in": 0.5}}}, "'studies.convergence.solvers.theory.burn_in'"),
    ({"solvers": {"theory": {"averaging": "mean"}}}, "'studies.convergence.solvers.theory.averaging'"),
    ({"eval_pts": 3}, "'studies.convergence.eval_pts'"),
])
def test_a_bad_study_names_its_key_in_one_line(study, key):
    with pytest.raises(ConfigError) as err:
        validate_config(_config(**study))
    message = str(err.value)
    assert key in message and "\n" not in message


def test_the_study_needs_its_dataset_key():
    config = _config()
    del config["studies"]["convergence"]["dataset"]
    with pytest.raises(ConfigError, match="'studies.convergence' misses a required entry"):
        validate_config(config)
