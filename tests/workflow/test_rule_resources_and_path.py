"""Per-rule resources come from the config; jobs run the sdfm of the Python that runs Snakemake."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, snakemake, write_config

VENV_BIN = Path(sys.executable).parent
#: PATH without the virtual env: what a shell has when the venv is not activated
BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())

TINY = {
    "experiment_name": "tiny",
    "gpu": True,
    "datasets": {"moons": {"source": "moons", "options": {"n_train": 200, "n_test": 50, "seed": 0},
                           "potential": {"processes": 2}}},
    "methods": {"fm": {}, "sdfm": {"epsilons": [0.0]}},
    "resources": {"train": {"mem_mb": 12345, "runtime": 77, "gpus": 2}, "fit_potential": {"runtime": 99}},
}


def _resources(output: str) -> dict:
    """{rule: its jobs' resources line} of a dry run."""
    found, rule = {}, None
    for line in output.splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            found[rule] = dict(item.split("=", 1) for item in line.split(":", 1)[1].replace(" ", "").split(","))
    return found


def test_rules_ask_for_the_resources_of_the_config(tmp_path):
    write_config(tmp_path, TINY)
    result = snakemake(tmp_path, "-n", "--cores", "2")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    found = _resources(result.stdout + result.stderr)
    assert found["train"]["mem_mb"] == "12345" and found["train"]["runtime"] == "77" and found["train"]["gpu"] == "2"
    assert found["fit_potential"]["runtime"] == "99" and found["fit_potential"]["gpu"] == "2"  # one GPU per rank
    assert found["fit_potential"]["mem_mb"] == "4000"  # the default of the keys the config leaves out
    assert found["evaluate"]["gpu"] == "1" and found["prepare_data"]["mem_mb"] == "2000"
    write_config(tmp_path, {**TINY, "gpu": False})
    found = _resources(snakemake(tmp_path, "-n", "--cores", "2").stdout)
    assert found["train"]["gpu"] == "0" and found["fit_potential"]["gpu"] == "0"  # no GPU asked for on a CPU run


def test_a_job_runs_with_the_venv_not_on_path(tmp_path):
    """``.venv/bin/snakemake`` from a shell whose PATH lacks the venv: the job still finds ``sdfm``."""
    write_config(tmp_path, {**TINY, "gpu": False})
    env = {**{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI")},
           "PATH": BARE_PATH}
    probe = subprocess.run(["bash", "-c", "command -v sdfm || echo none"], capture_output=True, text=True, env=env)
    assert not probe.stdout.startswith(str(VENV_BIN))  # this shell would not find the venv's sdfm
    cmd = [str(VENV_BIN / "snakemake"), "results/data/moons.npz", "-s", str(REPO / "Snakefile"), "--cores", "1",
           "--configfile", "config.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert (tmp_path / "results" / "data" / "moons.npz").is_file()
