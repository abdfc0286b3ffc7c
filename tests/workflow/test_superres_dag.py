"""Super-resolution end to end on a tiny digits config: psnr / ssim rows, the superres figure and its table."""

import math

import pandas as pd
import pytest

from conftest import snakemake, write_config

TINY_SUPERRES = {
    "experiment_name": "tiny-superres",
    "datasets": {
        "digits_sr2": {
            "source": "digits",
            "superres": {"factor": 2, "beta": 4.0},
            "model": {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2]},
        }
    },
    "methods": {"fm": {}, "otfm": {"epsilons": [0.0]}, "sdfm": {"epsilons": [0.0]}},
    "seeds": [0],
    "potential": {"steps": 50, "batch_size": 256, "eval_every": 25, "eval_batch": 4096},
    "train": {"steps": 10, "batch_size": 32, "checkpoint_every": 0, "log_every": 5, "warmup_steps": 2},
    "evaluate": {"solvers": ["euler"], "nfe": [1, 4], "n_samples": 32, "metrics": ["psnr", "ssim"]},
}


@pytest.mark.slow
def test_superres_dag_writes_psnr_ssim_and_its_figure(tmp_path):
    workdir = tmp_path / "superres_dag"
    write_config(workdir, TINY_SUPERRES)
    result = snakemake(workdir, "--cores", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(workdir / "results" / "metrics.csv")
    assert set(table.metric) == {"psnr", "ssim"}
    assert len(table) == 3 * 2 * 2  # methods x NFE x metrics
    assert all(math.isfinite(v) for v in table.value)
    assert (workdir / "reports" / "figures" / "digits_sr2_superres.png").is_file()
    report = (workdir / "reports" / "report.md").read_text()
    assert "### Super-resolution" in report and "| bicubic upsampling |" in report
    assert not (workdir / "results" / "feature_nets").exists()  # psnr / ssim need no FeatureNet
