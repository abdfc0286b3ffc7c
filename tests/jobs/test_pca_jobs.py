"""The PCA cost through the jobs: fit-potential with potential.pca_dim (summary, MLflow, the saved basis),
train with that potential (unconditional and conditional), the config errors, and the pca-study job
with its figure and report section."""

import json

import pandas as pd
import pytest
import torch

from sdfm.cli import main
from sdfm.config import validate_config
from sdfm.data import load_prepared, prepare_dataset
from sdfm.errors import ConfigError
from sdfm.jobs.potential import fit_potential_job
from sdfm.jobs.train import train_job
from sdfm.ot.pca import ProjectedPotential, load_potential
from sdfm.runtime import JobContext
from sdfm.studies.pca import pca_study
from sdfm.studies.pca_report import write_pca_study_report
from sdfm.tracking import open_client

SETTINGS = {"steps": 60, "batch_size": 256, "eval_every": 30, "eval_batch": 2048}
UNET = {"kind": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1}
TRAIN = {"steps": 2, "batch_size": 16, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1}


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("pca") / "digits.npz"
    prepare_dataset("digits", path)
    return path


@pytest.fixture(scope="module")
def fitted(digits_npz):
    """The full-space potential and the k = 8 one compared with it (fit-potential jobs, with MLflow)."""
    root = digits_npz.parent
    ctx = JobContext(experiment="pca-jobs", results_dir=str(root / "results"), progress=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        fit_potential_job(digits_npz, "digits", 0.0, SETTINGS, root / "full.pt", root / "full.json", ctx)
        summary = fit_potential_job(digits_npz, "digits_pca8", 0.0, SETTINGS, root / "p8.pt", root / "p8.json", ctx,
                                    reference=root / "full.pt", pca_dim=8)
    return root, ctx, summary


@pytest.mark.slow
def test_pca_fit_is_summarised_against_the_full_space_and_trains(fitted, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, ctx, summary = fitted
    pca = summary["pca"]
    assert json.loads((root / "p8.json").read_text())["pca"] == pca
    assert pca["dim"] == 8 and pca["input_dim"] == 64 and 0.5 < pca["explained_variance_ratio"] < 0.9
    assert pca["cost_reference"] < pca["cost"] < pca["cost_independent"]
    assert 0 <= pca["agreement"] <= 1 and 0 < pca["gain_retained"] < 1 and pca["pairing_speedup"] > 0
    assert summary["steps_run"] == 60 and not list(root.glob(".p8.*.ckpt"))
    run = open_client(ctx.results_dir).get_run(summary["mlflow_run_id"])
    assert run.data.params["pca_dim"] == "8" and run.data.tags["pca_dim"] == "8"
    assert run.data.metrics["pca_gain_retained"] == pytest.approx(pca["gain_retained"])
    stats = train_job(root / "digits.npz", "digits_pca8", "sdfm", 0.0, 0, UNET, TRAIN, root / "m.pt", root / "c.pt",
                      ctx, potential_path=root / "p8.pt")
    assert stats["final_loss"] > 0
    assert json.loads((root / "m.json").read_text())["pca_dim"] == 8


@pytest.mark.slow
def test_the_saved_basis_is_the_one_training_pairs_with(fitted):
    root, _, _ = fitted
    y = load_prepared(root / "digits.npz").flat_train()
    potential = load_potential(root / "p8.pt", y)
    assert isinstance(potential, ProjectedPotential) and potential.pca_dim == 8 and potential.dim == 64
    x = torch.randn(4096, 64, generator=torch.Generator().manual_seed(0))
    assert potential.chi2(x) < 1.0  # the fitted marginal, measured from full-space noise
    with pytest.raises(ValueError, match="fingerprint"):
        load_potential(root / "p8.pt", y.flip(0))


@pytest.mark.slow
def test_conditional_pca_potential_projects_the_image_part_only(fitted, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root, ctx, _ = fitted
    cond = {"beta": 2.0}
    summary = fit_potential_job(root / "digits.npz", "digits_c", 0.0, SETTINGS, root / "c8.pt", root / "c8.json", ctx,
                                conditional=cond, pca_dim=8)
    assert summary["pca"]["dim"] == 8 and "agreement" not in summary["pca"]  # no reference given
    stats = train_job(root / "digits.npz", "digits_c", "sdfm", 0.0, 0, UNET, TRAIN, root / "mc.pt", root / "cc.pt",
                      ctx, potential_path=root / "c8.pt", conditional=cond)
    assert stats["final_loss"] > 0


def test_pca_dim_at_or_above_the_data_dimension_is_a_one_line_error(digits_npz, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    root = digits_npz.parent
    code = main(["fit-potential", "--data", str(digits_npz), "--dataset", "digits", "--epsilon", "0",
                 "--settings", json.dumps(SETTINGS), "--pca-dim", "64", "--results-dir", str(root / "none"),
                 "--out", str(root / "bad.pt"), "--summary", str(root / "bad.json"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "potential.pca_dim" in err and "null" in err


@pytest.mark.parametrize("entry, message", [
    ({"source": "digits", "potential": {"pca_dim": 64}},
     "datasets.d.potential.pca_dim': 64 is not below the dimension 64"),
    ({"source": "moons", "potential": {"pca_dim": 2}}, "is not below the dimension 2"),
    ({"source": "digits", "potential": {"pca_dim": 0}}, "potential.pca_dim"),
])
def test_config_errors_name_the_key(entry, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        validate_config({"datasets": {"d": entry}})


def test_config_accepts_a_pca_dim_a_null_one_and_a_sharded_one():
    config = validate_config({"datasets": {"d": {"source": "digits", "potential": {"pca_dim": 8}},
                                           "e": {"source": "digits", "potential": {"pca_dim": None}},
                                           "f": {"source": "digits", "potential": {"pca_dim": 8, "processes": 2}}},
                              "studies": {"pca": {"sets": {"d": {"dims": [4, 8]}}, "steps": 10}}})
    assert config["datasets"]["d"]["potential"]["pca_dim"] == 8
    assert config["datasets"]["f"]["potential"] == {"pca_dim": 8, "processes": 2}
    with pytest.raises(ConfigError, match="studies.pca"):
        validate_config({"datasets": {"d": {"source": "digits"}}, "studies": {"pca": {"steps": 10}}})


def test_pca_study_measures_speed_and_quality_and_writes_its_section(digits_npz, tmp_path):
    settings = {"steps": 40, "batch_size": 128, "repeats": 2, "chi2_samples": 4096, "quality_samples": 2048}
    table = pca_study(digits_npz, "digits", [4, 16], settings, tmp_path / "digits.csv")
    assert list(table.k) == [4, 16, 64]  # the full space is always measured
    full = table.iloc[-1]
    assert full.step_speedup == 1 and full.pairing_speedup == 1 and full.agreement == 1 and full.excess_cost == 0
    assert (table.explained_variance_ratio.diff().dropna() > 0).all()
    assert (table.cost_reference == full.cost).all() and (table.cost < table.cost_independent).all()
    assert (table[["step_seconds", "pairing_seconds", "fit_seconds_per_step"]] > 0).all().all()
    with pytest.raises(ConfigError, match="studies.pca.sets.digits.dims"):
        pca_study(digits_npz, "digits", [65], settings, tmp_path / "bad.csv")

    metrics = pd.DataFrame([
        {"dataset": d, "method": m, "epsilon": 0.0, "batch_size": 128, "seed": 0, "solver": "euler", "nfe": nfe,
         "metric": f"fd_{d}", "value": v + nfe}
        for d, v in (("digits", 1.0), ("digits_pca8", 2.0)) for m in ("fm", "sdfm") for nfe in (1, 16)])
    metrics.to_csv(tmp_path / "metrics.csv", index=False)
    (tmp_path / "full.json").write_text(json.dumps({"dataset": "digits", "epsilon_rel": 0.0, "final_chi2": 0.04}))
    pca = {"dim": 8, "input_dim": 64, "explained_variance_ratio": 0.67, "cost": 94.0, "cost_reference": 86.0,
           "excess_cost": 8.0, "gain_retained": 0.67, "agreement": 0.05, "pairing_speedup": 1.2}
    (tmp_path / "p8.json").write_text(json.dumps({"dataset": "digits_pca8", "epsilon_rel": 0.0, "final_chi2": 0.05,
                                                  "pca": pca}))
    reports = tmp_path / "reports"
    write_pca_study_report([tmp_path / "digits.csv"], reports / "figures" / "study_pca.png", tmp_path / "s.md",
                           reports, metrics=tmp_path / "metrics.csv",
                           summaries=[tmp_path / "full.json", tmp_path / "p8.json"])
    text = (tmp_path / "s.md").read_text()
    figures = reports / "figures"
    assert (figures / "study_pca.png").stat().st_size > 0 and (figures / "study_pca.pdf").exists()
    assert "](figures/study_pca.png)" in text and "| 64 (full) |" in text
    assert "| digits_pca8 | 8 |" in text and "| 18.00 | 18.00 |" in text and "(euler, NFE 16)" in text
