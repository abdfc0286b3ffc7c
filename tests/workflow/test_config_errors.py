"""Config mistakes through Snakemake and `make run`: one line naming the file, line, column and key; no job runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

BASE = "datasets:\n  moons: {source: moons, options: {n_train: 200, n_test: 50}}\n"


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--cores", "1", "-n", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _invalid_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Building DAG" not in result.stdout + result.stderr
    return [line for line in result.stderr.splitlines() if "invalid config" in line]


def test_default_config_yaml_with_a_tab_names_its_line(tmp_path):
    """Without --configfile the Snakefile reads config.yaml itself, so a syntax error names line and column."""
    (tmp_path / "config.yaml").write_text("datasets:\n\tmoons: {source: moons}\n")
    lines = _invalid_lines(_snakemake(tmp_path))
    assert lines == ["sdfm: invalid config: config.yaml:2:1: a tab character in the indentation; YAML indents with "
                     "spaces only: replace the tab with spaces"]


@pytest.mark.slow
def test_configfile_errors_name_file_line_and_key(tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text(BASE + "  moons: {source: spiral}\n")
    assert _invalid_lines(_snakemake(tmp_path, "--configfile", str(config))) == [
        f"sdfm: invalid config: {config}:3:3: config key 'datasets.moons' is given twice (first at 2:3); YAML would "
        f"keep only the last one: merge them or rename one"]
    config.write_text(BASE + "train:\n  steps: 100\n  lr: 1e-4\n")
    assert _invalid_lines(_snakemake(tmp_path, "--configfile", str(config))) == [
        f"sdfm: invalid config: {config}:5:3: config key 'train.lr': '1e-4' is not of type number; PyYAML reads 1e-4 "
        f"as a string (YAML 1.1 floats need a dot and a signed exponent); write 1.0e-4"]


def test_make_run_validates_before_snakemake(tmp_path):
    """`make run CONFIG=...` stops at `sdfm validate-config`: Snakemake's generic YAML message never shows."""
    config = tmp_path / "bad.yaml"
    config.write_text(BASE + "seeds:[0, 1]\n")
    result = subprocess.run(["make", "--no-print-directory", "-o", ".venv/.installed", "run", f"CONFIG={config}",
                             f"BIN={Path(sys.executable).parent}"], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode != 0 and "not valid JSON or YAML" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("sdfm validate-config: error:")]
    assert errors == [f"sdfm validate-config: error: {config}:3:7: 'seeds:[0, 1]' needs a space after the ':' to be "
                      f"a key and a value; write 'seeds: [0, 1]'"]
    assert "snakemake" not in result.stdout.split("validate-config")[-1]
