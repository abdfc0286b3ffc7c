"""The toy copy of every shipped config keeps its variants and is small."""

from pathlib import Path

import pytest
import yaml

from sdfm.config import dataset_settings, job_grid, validate_config
from sdfm.smoke.run import write_standins
from sdfm.smoke.shrink import IMAGE_SAMPLES, shrink_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "workflow" / "configs").glob("*.yaml")) + [REPO / "config.yaml"]


def _toy(path: Path, tmp_path: Path) -> tuple[dict, dict]:
    """The config and its toy copy, on stand-in files of the config's formats (the config checks read them)."""
    config = yaml.safe_load(path.read_text())
    weights = tmp_path / "inception.pth"
    weights.write_bytes(b"random")
    paths, _ = write_standins(config, tmp_path)
    return config, validate_config(shrink_config(config, paths, (str(weights), "0" * 64)))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_toy_config_keeps_every_variant(path, tmp_path):
    config, toy = _toy(path, tmp_path)
    assert list(toy["datasets"]) == list(config["datasets"])
    assert set(toy["methods"]) == set(config["methods"])
    assert toy["gpu"] is False and len(toy["seeds"]) == 1
    assert set(toy.get("studies", {})) == set(config.get("studies", {}))
    for name, entry in config["datasets"].items():
        small = dataset_settings(toy, name)
        assert small["conditional"] == entry.get("conditional") and small["superres"] == entry.get("superres")
        assert small["train"]["objective"] == entry.get("train", {}).get("objective", "fm")
        assert small["train"]["steps"] <= 4 and small["potential"]["steps"] <= 20
        assert small["potential"].get("processes", 1) == min(2, entry.get("potential", {}).get(
            "processes", config.get("potential", {}).get("processes", 1)))
        own_pca = {**config.get("potential", {}), **entry.get("potential", {})}.get("pca_dim")
        assert (small["potential"].get("pca_dim") is None) == (own_pca is None)
        evaluate = {**config.get("evaluate", {}), **entry.get("evaluate", {})}
        assert set(small["evaluate"]["solvers"]) >= set(evaluate.get("solvers", ["euler"]))
        assert small["evaluate"]["metrics"] == evaluate.get("metrics", small["evaluate"]["metrics"])
        if small["kind"] == "images":
            assert small["evaluate"]["n_samples"] <= IMAGE_SAMPLES
        if len(evaluate.get("guidance", [1.0])) > 1:
            assert len(small["evaluate"]["guidance"]) == 2
        if "fid" in small["evaluate"]["metrics"]:
            assert small["evaluate"]["inception_weights"] == str(tmp_path / "inception.pth")
        if "path" in entry.get("options", {}):
            assert small["options"]["path"].startswith(str(tmp_path))
        own_ot = entry.get("ot_batch_size", config["methods"].get("otfm", {}).get("ot_batch_size"))
        assert (small["ot_batch_size"] is None) == (own_ot is None)
        assert small["ot_batch_size"] is None or small["ot_batch_size"] == 2 * small["train"]["batch_size"]
    assert {(j["dataset"], j["method"]) for j in job_grid(toy)} == {
        (d, m) for d in config["datasets"] for m in config["methods"] if m in config["datasets"][d].get("methods", [m])}


def test_epsilons_keep_the_extremes_and_auto(tmp_path):
    _, toy = _toy(REPO / "workflow" / "configs" / "adaptive_epsilon.yaml", tmp_path)
    assert toy["methods"]["sdfm"]["epsilons"] == [0.0, 0.3, "auto"]
    assert toy["methods"]["sdfm"]["auto_epsilon"]["reference_batch"] == 64
