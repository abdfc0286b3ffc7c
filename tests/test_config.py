"""Config validation: good configs pass with defaults filled, bad ones fail with one line naming the key."""

import copy

import pytest

from sdfm.config import ConfigError, dataset_settings, job_grid, validate_config

GOOD = {
    "datasets": {"moons": {"source": "moons", "options": {"n_train": 100}}},
    "methods": {"fm": {}, "otfm": {"epsilons": [0, 0.1]}, "sdfm": {"epsilons": [0.0, 0.1]}},
    "seeds": [0, 1],
}


def test_good_config_gets_defaults_and_the_job_grid():
    config = validate_config(GOOD)
    assert config["experiment_name"] == "sdfm" and config["results_dir"] == "results"
    merged = dataset_settings(config, "moons")
    assert merged["kind"] == "points" and merged["model"]["kind"] == "mlp"
    assert merged["evaluate"]["nfe"] == [1, 2, 4, 8, 16]
    jobs = job_grid(config)
    assert len(jobs) == 2 * (1 + 2 + 2)
    assert {j["epsilon"] for j in jobs if j["method"] == "otfm"} == {"0", "0.1"}


def test_dataset_entry_overrides_the_top_level():
    config = copy.deepcopy(GOOD)
    config["train"] = {"steps": 10, "lr": 0.01}
    config["datasets"]["moons"]["train"] = {"steps": 20}
    merged = dataset_settings(validate_config(config), "moons")
    assert merged["train"]["steps"] == 20 and merged["train"]["lr"] == 0.01


def _with(path, value):
    config = copy.deepcopy(GOOD)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


_DELETE = object()

BAD = [
    (("datasets", "moons", "source"), "mnist_typo", "datasets.moons.source"),
    (("methods", "sdfm", "epsilons"), [-0.1], "methods.sdfm.epsilons.0"),
    (("methods", "otfm", "epsilons"), ["big"], "methods.otfm.epsilons.0"),
    (("methods", "rectified"), {}, "methods.rectified"),
    (("evaluate", "nfe"), [0, 4], "evaluate.nfe.0"),
    (("evaluate", "solvers"), ["rk5"], "evaluate.solvers.0"),
    (("evaluate", "metrics"), ["fid_typo"], "evaluate.metrics.0"),
    (("seeds",), [-1], "seeds.0"),
    (("seeds",), "zero", "seeds"),
    (("train", "steps"), 0, "train.steps"),
    (("train", "lr"), "fast", "train.lr"),
    (("train", "objective"), "ddpm", "train.objective"),
    (("potential", "batch_size"), 1, "potential.batch_size"),
    (("potential", "averaging"), "swa", "potential.averaging"),
    (("datasets", "moons", "options", "n_points"), 5, "datasets.moons.options.n_points"),
    (("datasets", "moons", "trian"), {}, "datasets.moons.trian"),
    (("datasets",), {}, "datasets"),
    (("datasets", "img"), {"source": "imagenet32"}, "datasets.img.options.path"),
    (("datasets", "img"), {"source": "imagenet32", "options": {"path": "/no/such/dir"}}, "datasets.img.options.path"),
    (("datasets", "moons", "model"), {"kind": "mlp", "base_channels": 8}, "datasets.moons.model.base_channels"),
    (("datasets", "moons", "evaluate"), {"solvers": ["rk4"], "nfe": [2]}, "datasets.moons.evaluate.nfe"),
    (("gpu",), "yes", "gpu"),
    (("unknown_key",), 1, "unknown_key"),
]


@pytest.mark.parametrize("path,value,key", BAD, ids=[b[2] for b in BAD])
def test_bad_config_names_the_key_in_one_line(path, value, key):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(path, value))
    message = str(info.value)
    assert f"'{key}'" in message
    assert "\n" not in message
