"""``sdfm smoke-config CONFIG``: the config's whole DAG at toy scale on stand-in files, to ``report.md``.

Layout of the output folder (``--out``, default ``smoke/<config name>``):

- ``standins/``: the generated data folders (one per distinct ``options.path``) and, when a data set
  is scored by FID, ``inception-random.pth`` (:mod:`sdfm.smoke.inception`);
- ``config.yaml``: the toy-scale config (:mod:`sdfm.smoke.shrink`);
- the run itself (``results_dir`` and ``reports_dir`` of the config, relative to the folder).

Snakemake runs with ``--directory`` the folder, the repository's Snakefile and the Python running
this command, so no virtual env needs to be active.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from sdfm.config import load_config_file, validate_config
from sdfm.errors import ConfigError
from sdfm.smoke.shrink import shrink_config

__all__ = ["SmokeResult", "smoke_config", "write_standins", "SNAKEFILE"]

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"


@dataclass(frozen=True)
class SmokeResult:
    """Where the smoke run of a config went, and how long it took."""

    config: Path
    workdir: Path
    report: Path
    seconds: float
    returncode: int


def _standin_for(source: str, entry: dict, folder: Path) -> Path:
    """Write the stand-in of one file-based data set into ``folder``."""
    from sdfm.smoke import standins

    if source in ("imagenet32", "imagenet64"):
        return standins.write_imagenet_batches(folder, int(source[len("imagenet"):]))
    if source == "cifar10":
        return standins.write_cifar10(folder)
    if source == "arrays":  # a file of the original's name and format, with its array / column names
        options = entry.get("options", {})
        return standins.write_arrays(folder / Path(options["path"]).name, options.get("features"),
                                     options.get("label_column"))
    if source == "image_folder":
        # super-resolution sets stand in for CelebA's flat folder of faces; the others get class folders
        flat = entry.get("superres") is not None and entry.get("conditional") is None
        return standins.write_image_folder(folder, classes=None if flat else ("cat", "dog"),
                                           per_class=24 if flat else 10)
    raise ConfigError(f"no stand-in writer for the files of source {source!r}: add one to sdfm/smoke/standins.py")


def write_standins(config: dict, root: Path, inception_weights: str | Path | None = None
                   ) -> tuple[dict[str, str], tuple[str, str] | None]:
    """Stand-in folders for every ``options.path`` (one per distinct path) and the Inception weights if used
    (``inception_weights``: a random network written before, to reuse).

    Returns:
        ``({original path: stand-in folder}, (weights file, sha256) or None)``.
    """
    paths: dict[str, str] = {}
    for name, entry in config["datasets"].items():
        path = entry.get("options", {}).get("path")
        if path is not None and str(path) not in paths:
            folder = root / f"{entry['source']}-{len(paths)}"
            paths[str(path)] = str(_standin_for(entry["source"], entry, folder).resolve())
    sections = [config.get("evaluate", {})] + [e.get("evaluate", {}) for e in config["datasets"].values()]
    inception = None
    if any(section.get("inception_weights") for section in sections) and inception_weights is not None:
        from sdfm.metrics.reference_stats import file_sha256

        inception = (str(Path(inception_weights).resolve()), file_sha256(inception_weights))
    elif any(section.get("inception_weights") for section in sections):
        from sdfm.smoke.inception import write_random_inception

        weights = (root / "inception-random.pth").resolve()
        inception = (str(weights), write_random_inception(weights))
    return paths, inception


def smoke_config(config_path: str | Path, out: str | Path | None = None, cores: int = 2,
                 extra_args: tuple[str, ...] = (), inception_weights: str | Path | None = None) -> SmokeResult:
    """Write the stand-ins and the toy config of ``config_path`` under ``out``, then run the DAG to report.md.

    ``inception_weights``: a random Inception file to reuse (default: write one, ~10 s of CPU).

    Raises:
        ConfigError: the config (or its toy copy) is invalid, or a source has no stand-in writer.
    """
    config_path = Path(config_path)
    workdir = Path(out if out is not None else Path("smoke") / config_path.stem).resolve()
    original = load_config_file(config_path)
    if not SNAKEFILE.is_file():
        raise ConfigError(f"no Snakefile at {SNAKEFILE}: smoke-config runs from a source checkout (pip install -e .)")
    print(f"smoke-config {config_path}: stand-in data and weights in {workdir / 'standins'}", flush=True)
    paths, inception = write_standins(original, workdir / "standins", inception_weights)
    toy = shrink_config(original, paths, inception)
    validated = validate_config(toy)  # one line naming the key, before any job starts
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(f"# toy-scale copy of {config_path} (sdfm smoke-config)\n"
                                         + yaml.safe_dump(toy, sort_keys=False))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", str(cores), *extra_args]
    print("smoke-config: " + " ".join(cmd), flush=True)
    began = time.perf_counter()
    returncode = subprocess.run(cmd, cwd=workdir).returncode
    seconds = time.perf_counter() - began
    report = workdir / validated["reports_dir"] / "report.md"
    return SmokeResult(config_path, workdir, report, seconds, returncode)
