"""Every shipped config validates and builds its DAG (`snakemake -n`) against tiny fake local data.

The GPU configs point at local data (/data/imagenet32, ...) and a local Inception weights file;
the test writes fakes in the loaders' formats and patches the paths into a copy of the config.
"""

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import REPO, snakemake, write_config
from sdfm.config import job_grid, needs_feature_net, validate_config
from sdfm.smoke.standins import write_arrays

CONFIGS = sorted((REPO / "workflow" / "configs").glob("*.yaml"))


def _imagenet(folder: Path, resolution: int) -> Path:
    """Official downsampled-ImageNet layout: planar uint8 rows and 1-based labels, two train batches + val."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train_data_batch_1.npz", 6), ("train_data_batch_2.npz", 4), ("val_data.npz", 3)):
        data = rng.integers(0, 256, size=(n, 3 * resolution * resolution), dtype=np.uint8)
        np.savez(folder / name, data=data, labels=rng.integers(1, 1001, size=n).tolist())
    return folder


def _image_folder(folder: Path) -> Path:
    """A class-folder tree of small PNGs (two classes)."""
    for label, colour in (("cat", (200, 10, 30)), ("dog", (10, 200, 30))):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            Image.new("RGB", (12, 10), tuple(c // (i + 1) for c in colour)).save(folder / label / f"{i}.png")
    return folder


def _fake_data(source: str, root: Path, options: dict) -> Path:
    if source == "arrays":  # a file of the config's format with its column / array names
        return write_arrays(root / Path(options["path"]).name, options.get("features"), options.get("label_column"))
    if source in ("imagenet32", "imagenet64"):
        return _imagenet(root / source, int(source[len("imagenet"):]))
    if source == "image_folder":
        return _image_folder(root / "folder")
    raise AssertionError(f"no fake data writer for source {source!r}: add one")


def patched(config: dict, root: Path) -> dict:
    """The config with every local path (data, Inception weights) pointed at fakes under ``root``."""
    config = copy.deepcopy(config)
    weights = root / "weights-inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"fake")
    for entry in config["datasets"].values():
        if "path" in entry.get("options", {}):
            entry["options"]["path"] = str(_fake_data(entry["source"], root, entry["options"]))
    for section in [config, *config["datasets"].values()]:
        if section.get("evaluate", {}).get("inception_weights"):
            section["evaluate"]["inception_weights"] = str(weights)
    return config


def _job_counts(output: str) -> dict:
    """The 'Job stats' table of a dry run as {rule: count}."""
    lines = output[output.index("Job stats:"):].splitlines()[3:]
    counts = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


#: Dry-run in `make test`: the default and one GPU config; the others (~15 s each) run with `-m slow`.
FAST_DRY_RUNS = ("config.yaml", "imagenet32.yaml")


@pytest.mark.parametrize("path", CONFIGS + [REPO / "config.yaml"], ids=lambda p: p.name)
def test_every_shipped_config_validates_and_has_jobs(path, tmp_path):
    """The cheap half of the dry run, for every config: schema + registry checks and a non-empty grid."""
    full = validate_config(patched(yaml.safe_load(path.read_text()), tmp_path))
    assert job_grid(full)


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=() if p.name in FAST_DRY_RUNS else pytest.mark.slow)
     for p in CONFIGS + [REPO / "config.yaml"]],
    ids=lambda p: p.name,
)
def test_config_builds_its_dag(path, tmp_path):
    config = patched(yaml.safe_load(path.read_text()), tmp_path)
    workdir = tmp_path / "work"
    write_config(workdir, config)
    result = snakemake(workdir, "--cores", "1", "-n")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    counts = _job_counts(result.stdout + result.stderr)
    full = validate_config(config)
    assert counts["train"] == counts["evaluate"] == len(job_grid(full))
    assert counts.get("train_feature_net", 0) == sum(needs_feature_net(full, name) for name in full["datasets"])
    assert not (workdir / full["results_dir"]).exists()


def test_gpu_configs_fail_cleanly_without_their_data(tmp_path):
    """Unpatched, a GPU config stops before any job with one line naming the data path key."""
    config = yaml.safe_load((REPO / "workflow" / "configs" / "imagenet32.yaml").read_text())
    config["datasets"] = {"imagenet32": config["datasets"]["imagenet32"]}
    config["datasets"]["imagenet32"]["options"]["path"] = str(tmp_path / "missing")
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "--cores", "1", "-n")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "invalid config" in line]
    assert len(lines) == 1 and "'datasets.imagenet32.options.path'" in lines[0]


def test_sharded_potentials_are_launched_with_torchrun(tmp_path):
    """``potential.processes: 8`` (imagenet32.yaml) runs the fit as 8 torchrun ranks with --distributed."""
    config = patched(yaml.safe_load((REPO / "workflow" / "configs" / "imagenet32.yaml").read_text()), tmp_path)
    workdir = tmp_path / "work"
    write_config(workdir, config)
    result = snakemake(workdir, "--cores", "8", "-n", "-p", "--forcerun", "fit_potential")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    fits = [line for line in (result.stdout + result.stderr).splitlines() if "fit-potential" in line]
    assert fits and all("torchrun --standalone --nproc-per-node 8 -m sdfm.cli fit-potential" in l for l in fits)
    assert all("--distributed" in l and '"processes"' not in l for l in fits)


def test_data_parallel_training_is_launched_with_torchrun(tmp_path):
    """``train.processes: 2`` runs each train job as 2 torchrun ranks with --distributed."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"checkerboard": config["datasets"]["checkerboard"]}
    config["train"] = {**config["train"], "processes": 2}
    workdir = tmp_path / "work"
    write_config(workdir, config)
    result = snakemake(workdir, "--cores", "2", "-n", "-p")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    jobs = [line for line in (result.stdout + result.stderr).splitlines() if " train " in line and "--method" in line]
    assert jobs and all("torchrun --standalone --nproc-per-node 2 -m sdfm.cli train" in l for l in jobs)
    assert all("--distributed" in l and '"processes"' not in l for l in jobs)
