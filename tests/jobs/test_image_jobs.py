"""Image-track jobs in process: conditional SD-FM with guidance, MeanFlow sampling, the FeatureNet job."""

import pandas as pd
import pytest
import torch

from sdfm.data import DataError
from sdfm.jobs import potential as potential_jobs
from sdfm.jobs.evaluate import evaluate_run, solver_label
from sdfm.jobs.feature_net import train_feature_net_job
from sdfm.jobs.potential import fit_potential_job
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.metrics import load_feature_net
from sdfm.models.checkpoint import load_trained
from sdfm.ot.problem import label_source
from sdfm.runtime import JobContext

UNET = {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "dropout": 0.0}
TRAIN = {"steps": 4, "batch_size": 16, "lr": 1e-3, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 2}
POTENTIAL = {"steps": 40, "batch_size": 128, "eval_every": 20, "eval_batch": 1024}
EVALUATE = {"solvers": ["euler"], "nfe": [1, 2], "n_samples": 16, "metrics": ["w2", "curvature"]}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_jobs")
    ctx = JobContext(experiment="jobs", results_dir=str(root / "results"), progress=False)
    prepare_data_job("digits", "digits", {"n_test": 100}, root / "digits.npz", ctx)
    return root, ctx


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_solver_label_encodes_guidance_only_when_not_one():
    assert solver_label("euler", 1.0) == "euler"
    assert solver_label("euler", 2) == "euler@g=2.0"


def test_label_source_draws_noise_and_scaled_one_hot_labels():
    labels = torch.tensor([0, 0, 0, 2])
    draw = label_source(labels, 3, 4.0, dim=5)
    x = draw(1000, torch.Generator().manual_seed(0))
    assert x.shape == (1000, 8)
    onehot = x[:, 5:]
    assert set(onehot.unique().tolist()) == {0.0, 2.0} and (onehot.sum(dim=1) == 2.0).all()
    assert abs(float((onehot[:, 0] > 0).float().mean()) - 0.75) < 0.05  # the labels' distribution


def test_conditional_sdfm_trains_and_evaluates_with_guidance(digits):
    root, ctx = digits
    data, run = root / "digits.npz", root / "runs" / "cond"
    summary = fit_potential_job(data, "digits", 0.0, POTENTIAL, root / "pot.pt", root / "pot.json", ctx,
                                reference_batch=256,
                                conditional={"beta": 2.0})
    assert summary["final_chi2"] >= 0
    train_job(data, "digits", "sdfm", 0.0, 0, UNET, TRAIN, run / "model.pt", run / "ck.pt", ctx,
              potential_path=root / "pot.pt", conditional={"beta": 2.0})
    model, state = load_trained(run / "model.pt")
    assert model.num_classes == 10 and state["conditional"] == {"beta": 2.0}
    table = evaluate_run(data, run / "model.pt", "digits", "sdfm", 0.0, 0, 16, {**EVALUATE, "guidance": [1.0, 2.0]},
                         run / "metrics.csv", ctx)
    assert set(table.solver) == {"euler", "euler@g=2.0"}
    assert len(table) == 2 * 2 * 2  # guidance x NFE x metrics
    assert (run / "samples" / "euler_nfe2_g2.png").exists() and (run / "samples" / "euler_nfe1.png").exists()
    assert pd.read_csv(run / "metrics.csv").value.notna().all()


def test_meanflow_models_are_sampled_with_their_one_and_two_step_maps(digits):
    root, ctx = digits
    data, run = root / "digits.npz", root / "runs" / "meanflow"
    train_job(data, "digits", "fm", 0.0, 0, UNET, {**TRAIN, "objective": "meanflow"}, run / "model.pt",
              run / "ck.pt", ctx)
    model, _ = load_trained(run / "model.pt")
    assert model.mean_flow
    settings = {**EVALUATE, "solvers": ["meanflow", "euler"], "nfe": [4]}
    table = evaluate_run(data, run / "model.pt", "digits", "fm", 0.0, 0, 16, settings, run / "metrics.csv", ctx)
    assert sorted(table[table.solver == "meanflow"].nfe.unique()) == [1, 2]
    assert sorted(table[table.solver == "euler"].nfe.unique()) == [4]


def test_conditional_sdfm_without_the_solver_hook_is_refused(digits, monkeypatch):
    root, ctx = digits

    def old_fit_potential(y, *, epsilon=0.0, steps=1, seed=0, callback=None, **options):  # no `source`
        raise AssertionError("must not be called")

    monkeypatch.setattr(potential_jobs, "fit_potential", old_fit_potential)
    with pytest.raises(NotImplementedError, match="source-sampler hook"):
        fit_potential_job(root / "digits.npz", "digits", 0.0, POTENTIAL, root / "p.pt", root / "p.json", ctx,
                          reference_batch=256,
                          conditional={"beta": 1.0})


def test_feature_net_job_saves_a_loadable_net_and_refuses_points(digits):
    root, ctx = digits
    stats = train_feature_net_job(root / "digits.npz", "digits", {"epochs": 1, "width": 8, "feature_dim": 16},
                                  root / "fnet.pt", ctx)
    assert 0 <= stats["accuracy"] <= 1 and 0 <= stats["test_accuracy"] <= 1
    assert load_feature_net(root / "fnet.pt").config.feature_dim == 16
    prepare_data_job("moons", "moons", {"n_train": 50, "n_test": 10}, root / "moons.npz", ctx)
    with pytest.raises(DataError, match="labelled images"):
        train_feature_net_job(root / "moons.npz", "moons", {"epochs": 1}, root / "m.pt", ctx)
