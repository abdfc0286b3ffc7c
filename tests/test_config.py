"""Config validation: good configs pass with defaults filled, bad ones fail with one line naming the key."""

import copy

import pytest

from sdfm.config import dataset_settings, job_grid, validate_config
from sdfm.errors import ConfigError

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
    (("potential", "processes"), 0, "potential.processes"),
    (("datasets", "moons", "potential"), {"processes": 2, "init": "multiscale"}, "datasets.moons.potential.init"),
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


# --- the image track: image metrics, Inception weights, MeanFlow sampling, conditional generation ---

DIGITS = {"source": "digits"}

IMAGE_BAD = [
    (("evaluate", "metrics"), ["fd"], "evaluate.metrics"),  # fd on the 2-D moons
    (("datasets", "moons", "evaluate"), {"metrics": ["w2", "fid"]}, "datasets.moons.evaluate.metrics"),
    (("evaluate", "inception_weights"), "/no/such/weights.pth", "evaluate.inception_weights"),
    (("datasets", "moons", "conditional"), {"beta": 1.0}, "datasets.moons.conditional"),
    (("datasets", "moons", "conditional"), {"beta": -1.0}, "datasets.moons.conditional.beta"),
    (("evaluate", "guidance"), [-1.0], "evaluate.guidance.0"),
    (("feature_net", "epochs"), 0, "feature_net.epochs"),
]


@pytest.mark.parametrize("path,value,key", IMAGE_BAD, ids=[b[2] for b in IMAGE_BAD])
def test_bad_image_settings_name_the_key_in_one_line(path, value, key):
    with pytest.raises(ConfigError) as info:
        validate_config(_with(path, value))
    assert f"'{key}'" in str(info.value) and "\n" not in str(info.value)


def _digits(**entry):
    config = copy.deepcopy(GOOD)
    config["datasets"] = {"digits": {**DIGITS, **entry}}
    return config


def test_image_sets_default_to_fd_and_a_unet():
    merged = dataset_settings(validate_config(_digits()), "digits")
    assert merged["kind"] == "images" and merged["model"]["kind"] == "unet"
    assert merged["evaluate"]["metrics"] == ["fd"] and merged["evaluate"]["guidance"] == [1.0]
    assert merged["conditional"] is None and merged["feature_net"]["epochs"] >= 1


def test_fid_needs_a_local_inception_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="'evaluate.inception_weights' is required by metric 'fid'"):
        validate_config(_digits(evaluate={"metrics": ["fid"]}))
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"w")
    config = validate_config(_digits(evaluate={"metrics": ["fid", "kid"], "inception_weights": str(weights)}))
    assert dataset_settings(config, "digits")["evaluate"]["inception_weights"] == str(weights)


def test_kid_alone_has_no_feature_space():
    with pytest.raises(ConfigError, match="'datasets.digits.evaluate.metrics'.*'kid'"):
        validate_config(_digits(evaluate={"metrics": ["kid"]}))


def test_meanflow_models_get_the_meanflow_solver_and_others_may_not_use_it():
    merged = dataset_settings(validate_config(_digits(train={"objective": "meanflow"})), "digits")
    assert merged["evaluate"]["solvers"] == ["meanflow", "euler"]
    with pytest.raises(ConfigError, match="'datasets.digits.evaluate.solvers'.*meanflow"):
        validate_config(_digits(evaluate={"solvers": ["meanflow"]}))


def test_conditional_settings_and_the_sdfm_hook(monkeypatch):
    config = validate_config(_digits(conditional={"beta": 2.0}, evaluate={"guidance": [1.0, 2.0]}))
    assert dataset_settings(config, "digits")["conditional"] == {"beta": 2.0}
    monkeypatch.setattr("sdfm.config.conditional_sdfm_supported", lambda: False)
    with pytest.raises(ConfigError, match="'datasets.digits.conditional'.*not implemented"):
        validate_config(_digits(conditional={"beta": 2.0}))
    no_sdfm = _digits(conditional={"beta": 2.0})
    no_sdfm["methods"] = {"fm": {}, "otfm": {"epsilons": [0.0]}}
    validate_config(no_sdfm)
