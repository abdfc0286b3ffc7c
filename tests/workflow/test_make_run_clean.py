"""`make run` leaves the checkout clean; the README's figures change only through `make readme-figures`.

A copy of the checkout (its tracked files, committed into a fresh repository) runs `make run` on a
tiny config that keeps the default data set names, so the report draws the figures the README shows
(checkerboard_*.png), which earlier runs rewrote in place under tracked reports/figures/.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow  # a tiny DAG through make: about a minute on two quiet cores

VENV = Path(sys.executable).parent.parent


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout


def _checkout_copy(target: Path) -> Path:
    """The tracked files of this checkout as they are now, committed in a new repository at ``target``."""
    for name in _git(REPO, "ls-files", "-z").split("\0"):
        if name and (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)
    _git(target, "init", "-q")
    _git(target, "add", "-A")
    _git(target, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "copy")
    return target


def _make(checkout: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
    # this venv instead of a fresh install (-o: never remake its stamp)
    cmd = ["make", "-o", f"{VENV}/.installed", f"VENV={VENV}", *args]
    return subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, env=env, timeout=1800)


def test_make_run_leaves_the_checkout_clean_and_readme_figures_is_explicit(tmp_path):
    checkout = _checkout_copy(tmp_path / "checkout")
    tiny = tmp_path / "tiny.yaml"  # outside the checkout
    tiny.write_text(yaml.safe_dump({
        "datasets": {"checkerboard": {"source": "checkerboard", "options": {"n_train": 300, "n_test": 100}}},
        "methods": {"fm": {}, "sdfm": {"epsilons": [0.0]}},
        "seeds": [0],
        "potential": {"steps": 40, "batch_size": 128, "eval_every": 20, "eval_batch": 2048},
        "train": {"steps": 20, "batch_size": 64, "checkpoint_every": 10, "log_every": 10, "warmup_steps": 5},
        "evaluate": {"nfe": [1, 4], "n_samples": 100},
    }))
    result = _make(checkout, "run", "CORES=2", f"SNAKEMAKE_ARGS=--configfile {tiny}")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (checkout / "reports" / "report.md").is_file()
    drawn = checkout / "reports" / "figures" / "checkerboard_metrics_vs_nfe.png"
    assert drawn.is_file() and (checkout / "docs" / "figures" / drawn.name).is_file()
    assert _git(checkout, "status", "--porcelain") == ""  # results/, reports/ and .snakemake/ are ignored

    # The README's figures are refreshed only on request, and only from a run that drew all of them.
    refresh = _make(checkout, "readme-figures")
    assert refresh.returncode != 0 and "is missing: run the default config first" in refresh.stdout + refresh.stderr
    assert _git(checkout, "status", "--porcelain") == ""
    for figure in (checkout / "docs" / "figures").glob("*.png"):  # as if the default run had drawn the others
        if not (checkout / "reports" / "figures" / figure.name).exists():
            shutil.copy2(figure, checkout / "reports" / "figures" / figure.name)
    refresh = _make(checkout, "readme-figures")
    assert refresh.returncode == 0, refresh.stdout + refresh.stderr
    changed = sorted(line[3:] for line in _git(checkout, "status", "--porcelain").splitlines())
    assert changed and all(name.startswith("docs/figures/checkerboard_") for name in changed)
