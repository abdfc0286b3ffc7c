"""Every shipped config (workflow/configs/*.yaml and config.yaml) smoke-run to its report.md.

``sdfm smoke-config`` writes stand-in files in each config's formats, shrinks it to toy scale and runs
its whole DAG (prepare -> potential -> train -> evaluate -> report) on 2 cores: every file-based
source, conditional / super-resolution / MeanFlow / guidance / PCA / sharded variant a shipped config
uses runs for real. FID runs on a random Inception network (real weights cannot be fetched here).
About 20 minutes for the whole set on two unloaded cores (CI: `make test-slow`).
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from sdfm.config import dataset_settings, job_grid, validate_config
from sdfm.cli import main
from sdfm.smoke.inception import write_random_inception

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

CONFIGS = sorted((REPO / "workflow" / "configs").glob("*.yaml")) + [REPO / "config.yaml"]


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "inception-random.pth"
    write_random_inception(path)
    return path


def _report_links(report: Path) -> list[Path]:
    return [report.parent / line.split("](")[1].rstrip(")") for line in report.read_text().splitlines()
            if line.startswith("![")]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_the_config_runs_to_its_report_at_toy_scale(path, tmp_path, random_inception, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workdir = tmp_path / "smoke"
    code = main(["smoke-config", str(path), "--out", str(workdir), "--cores", "2",
                 "--inception-weights", str(random_inception)])
    assert code == 0, f"see the job logs under {workdir}"
    toy = validate_config(yaml.safe_load((workdir / "config.yaml").read_text()))
    report = workdir / toy["reports_dir"] / "report.md"
    assert f"{report} written" in capsys.readouterr().out
    results = workdir / toy["results_dir"]
    table = pd.read_csv(results / "metrics.csv")
    assert table.value.notna().all()
    for link in _report_links(report):
        assert link.is_file() and link.stat().st_size > 1000, link  # every figure the report shows was drawn
    for job in job_grid(toy):  # every data set x method x epsilon has its rows
        assert ((table.dataset == job["dataset"]) & (table.method == job["method"])).any(), job
    for name in toy["datasets"]:
        _check_variant(toy, name, table[table.dataset == name], results)


def _check_variant(toy: dict, name: str, rows: pd.DataFrame, results: Path) -> None:
    """The variant's own rows and files: FID from reference statistics, guidance, MeanFlow, superres, PCA, shards."""
    merged = dataset_settings(toy, name)
    metrics = merged["evaluate"]["metrics"]
    if "fid" in metrics:
        assert (rows.metric == "fid").any() and (results / "fid_reference" / f"{name}.npz").is_file()
        for log in (results / "logs" / "evaluate" / name).glob("*.log"):  # no evaluate job re-extracts the test split
            assert "'inception-v3-compat': 0" in log.read_text(), log
    if merged["conditional"] is not None and len(merged["evaluate"].get("guidance", [1.0])) > 1:
        assert rows.solver.str.contains("@g=").any()
    if merged["train"]["objective"] == "meanflow":
        assert (rows.solver == "meanflow").any()
    if merged["superres"] is not None:
        assert {"psnr", "ssim"} & set(rows.metric)
    if merged["kind"] == "images":
        assert list((results / "runs" / name).rglob("samples/*.npz")), "no sample arrays"
    for summary in (results / "potentials" / name).glob("eps*.json"):
        content = json.loads(summary.read_text())
        if merged["potential"].get("pca_dim") is not None:
            assert content["pca"]["dim"] == merged["potential"]["pca_dim"]
        if merged["potential"].get("processes", 1) > 1:
            assert content["world_size"] == merged["potential"]["processes"]
