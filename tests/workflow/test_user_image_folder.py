"""A user's own folder of images (two class subfolders, PNG and JPEG) through the whole DAG to report.md,
with ``.venv/bin/snakemake --cores 2 --configfile my.yaml`` from a shell where the venv is not activated."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO

pytestmark = pytest.mark.slow  # the DAG: 12 jobs, a couple of minutes on 2 cores

VENV_BIN = Path(sys.executable).parent
BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())


def _my_images(root: Path) -> Path:
    """What a user has: photos of two kinds, some PNG, some JPEG, of different sizes."""
    for label, colour in (("cats", (200, 120, 40)), ("dogs", (60, 90, 210))):
        (root / label).mkdir(parents=True)
        for i in range(10):
            size = (40 + 7 * i, 36 + 5 * (i % 3))
            shade = tuple(min(255, c + 9 * i) for c in colour)
            picture = Image.new("RGB", size, shade)
            picture.paste((255 - shade[0], shade[1], 255 - shade[2]), (0, 0, size[0] // 3, size[1] // 2))
            picture.save(root / label / f"img{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_my_image_folder_runs_to_its_report_without_an_activated_venv(tmp_path):
    images = _my_images(tmp_path / "my_photos")
    config = {
        "experiment_name": "my-images",
        "datasets": {"mine": {"source": "image_folder",
                              "options": {"path": str(images), "resolution": 16, "test_fraction": 0.25}}},
        "methods": {"fm": {}, "otfm": {"epsilons": [0.0]}, "sdfm": {"epsilons": [0.0]}},
        "model": {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1},
        "potential": {"steps": 50, "batch_size": 64, "eval_every": 25, "eval_batch": 1024},
        "train": {"steps": 20, "batch_size": 8, "checkpoint_every": 10, "log_every": 5, "warmup_steps": 2},
        "evaluate": {"solvers": ["euler"], "nfe": [1, 4], "n_samples": 16, "metrics": ["fd", "curvature"],
                     "save_samples": True},
        "feature_net": {"epochs": 2, "width": 8, "feature_dim": 8},
    }
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(config))
    env = {**{k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MLFLOW_TRACKING_URI")},
           "PATH": BARE_PATH}
    cmd = [str(VENV_BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "--cores", "2", "--configfile", "my.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]

    report = (tmp_path / "reports" / "report.md").read_text()
    assert "## mine" in report and "fd_mine" in report
    for link in [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]:
        assert (tmp_path / "reports" / link).is_file(), link
    table = pd.read_csv(tmp_path / "results" / "metrics.csv")
    assert set(table.method) == {"fm", "otfm", "sdfm"} and set(table.metric) == {"fd_mine", "curvature"}
    assert table.value.notna().all()
    assert (tmp_path / "results" / "runs" / "mine" / "sdfm" / "eps0" / "seed0" / "samples" / "euler_nfe4.npz").is_file()
