"""The fit-potential job: its checkpoint goes away once the potential is written, and a fit whose
chi^2 grew is reported in the log, the summary and MLflow, and again by the jobs that use it."""

import json

import pytest
import torch

from sdfm.data import load_prepared
from sdfm.jobs import potential as potential_jobs
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.runtime import JobContext
from sdfm.tracking import open_client

SETTINGS = {"steps": 60, "batch_size": 128, "eval_every": 20, "eval_batch": 1024}


@pytest.fixture
def moons(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ctx = JobContext(experiment="potential-job", results_dir=str(tmp_path / "results"), progress=False)
    prepare_data_job("moons", "moons", {"n_train": 300, "n_test": 100}, tmp_path / "moons.npz", ctx)
    return tmp_path, ctx


def test_the_checkpoint_is_removed_after_success(moons):
    root, ctx = moons
    summary = potential_jobs.fit_potential_job(root / "moons.npz", "moons", 0.0, SETTINGS, root / "p.pt",
                                               root / "p.json", ctx)
    assert summary["steps_run"] == 60 and summary["diverging"] is False
    assert (root / "p.pt").exists() and not list(root.glob(".p.*.ckpt"))


def test_a_growing_chi2_is_reported_not_silently_used(moons, monkeypatch, capsys):
    root, ctx = moons
    real_fit = potential_jobs.fit_potential

    def fit_then_grow(*args, **kwargs):  # the curve of a fit whose step size was too large
        potential = real_fit(*args, **kwargs)
        potential.history["chi2"] = [0.2, 0.1, 0.9]
        potential.history["diverging"] = True
        return potential

    monkeypatch.setattr(potential_jobs, "fit_potential", fit_then_grow)
    summary = potential_jobs.fit_potential_job(root / "moons.npz", "moons", 0.0, SETTINGS, root / "p.pt",
                                               root / "p.json", ctx)
    err = capsys.readouterr().err
    assert "WARNING: the chi^2 of potential" in err and "grew from 0.1 to 0.9" in err
    assert summary["diverging"] is True and json.loads((root / "p.json").read_text())["diverging"] is True
    client = open_client(ctx.results_dir)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["sdfm.potential_diverging"] == "true"

    model = {"kind": "mlp", "hidden": 16, "depth": 1}
    train = {"steps": 2, "batch_size": 16, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1}
    train_job(root / "moons.npz", "moons", "sdfm", 0.0, 0, model, train, root / "m.pt", root / "ckpt.pt", ctx,
              potential_path=root / "p.pt")
    assert "was diverging when its fit stopped" in capsys.readouterr().err


def test_the_recorded_absolute_epsilon_is_eps_rel_times_the_std_of_the_reference_cost(moons):
    # epsilon_abs = eps_rel * std(C) with C_ij = -<x_i, y_j> on the seeded reference batch: reference_batch
    # training points (a seeded permutation) against as many N(0, I) samples of the same generator.
    root, ctx = moons
    seed, eps_rel, reference = 2, 0.3, 128
    summary = potential_jobs.fit_potential_job(root / "moons.npz", "moons", eps_rel, SETTINGS, root / "p.pt",
                                               root / "p.json", ctx, seed=seed, reference_batch=reference)
    y = load_prepared(root / "moons.npz").flat_train()
    replay = torch.Generator().manual_seed(seed)
    rows = torch.randperm(y.shape[0], generator=replay)[:reference]
    x = torch.randn(reference, y.shape[1], generator=replay)
    cost = -(x.double() @ y[rows].double().T)
    assert summary["epsilon_abs"] == pytest.approx(eps_rel * float(cost.std()), rel=1e-5)  # float32 points
    saved = torch.load(root / "p.pt", weights_only=False)
    assert saved["epsilon"] == summary["epsilon_abs"]
    run = open_client(ctx.results_dir).get_run(summary["mlflow_run_id"])
    assert float(run.data.params["epsilon_abs"]) == pytest.approx(summary["epsilon_abs"], rel=1e-9)


def test_sq_euclidean_reference_makes_epsilon_absolute_from_the_squared_distances(moons):
    # epsilon_reference sq_euclidean: eps_abs = eps_rel * std(|x_i - y_j|^2) / 2 on the same seeded batch
    root, ctx = moons
    seed, eps_rel, reference = 2, 0.3, 128
    summary = potential_jobs.fit_potential_job(root / "moons.npz", "moons", eps_rel, SETTINGS, root / "p.pt",
                                               root / "p.json", ctx, seed=seed, reference_batch=reference,
                                               epsilon_reference="sq_euclidean")
    y = load_prepared(root / "moons.npz").flat_train()
    replay = torch.Generator().manual_seed(seed)
    rows = torch.randperm(y.shape[0], generator=replay)[:reference]
    x = torch.randn(reference, y.shape[1], generator=replay)
    sq = torch.cdist(x.double(), y[rows].double()).square()
    assert summary["epsilon_abs"] == pytest.approx(eps_rel * float(sq.std()) / 2, rel=1e-5)
    assert summary["epsilon_reference"] == "sq_euclidean"
    run = open_client(ctx.results_dir).get_run(summary["mlflow_run_id"])
    assert run.data.tags["epsilon_reference"] == "sq_euclidean"
