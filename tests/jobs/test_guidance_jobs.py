"""Classifier-free guidance: guided velocity limits, precision / recall rows of the evaluate job."""

import pandas as pd
import pytest
import torch

from sdfm.fm.sampling import guided_velocity
from sdfm.jobs.evaluate import evaluate_run
from sdfm.jobs.feature_net import train_feature_net_job
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.metrics import FeatureNet, frechet_distance, save_feature_net
from sdfm.metrics.image_scores import ImageScorer
from sdfm.models import build_model
from sdfm.runtime import JobContext

UNET = {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "dropout": 0.0}
TRAIN = {"steps": 4, "batch_size": 16, "lr": 1e-3, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 2,
         "label_dropout": 0.1}


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_guidance_scale_one_is_the_conditional_model_and_zero_the_unconditional():
    torch.manual_seed(0)
    model = build_model("unet", (1, 8, 8), base_channels=8, channel_mults=[1, 2], num_res_blocks=1, num_classes=10)
    with torch.no_grad():  # random weights everywhere (some layers start at zero), so the label path matters
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    model.eval()
    x, t = torch.randn(6, 1, 8, 8), torch.tensor(0.3)
    labels = torch.tensor([0, 1, 2, 3, 8, 9])
    with torch.no_grad():
        v_cond, v_null = model(x, t, labels=labels), model(x, t, labels=labels, drop_labels=True)
        assert (v_cond - v_null).abs().max() > 1e-2  # the two limits differ
        torch.testing.assert_close(guided_velocity(model, labels, 1.0)(x, t), v_cond)
        torch.testing.assert_close(guided_velocity(model, labels, 0.0)(x, t), v_null, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(guided_velocity(model, labels, 2.0)(x, t), 2 * v_cond - v_null,
                                   rtol=1e-5, atol=1e-5)


def test_image_scores_name_precision_and_recall_by_the_feature_space_of_fd(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "fnet.pt"
    save_feature_net(FeatureNet(in_channels=1, feature_dim=8, width=4).eval(), path)
    g = torch.Generator().manual_seed(1)
    samples, reference = torch.rand(30, 1, 8, 8, generator=g) * 2 - 1, torch.rand(40, 1, 8, 8, generator=g) * 2 - 1
    cpu = torch.device("cpu")
    out = ImageScorer(reference, ["fd", "precision", "recall"], "digits", device=cpu, feature_net_path=path)(samples)
    assert list(out) == ["fd_digits", "precision_digits", "recall_digits"]
    direct = frechet_distance(samples, reference, feature_extractor="featurenet", feature_net_path=path, prc=True,
                              cuda=False)
    assert out["precision_digits"] == direct["precision"] and out["recall_digits"] == direct["recall"]
    only = ImageScorer(reference, ["fd", "kid", "precision"], "digits", device=cpu, feature_net_path=path)(samples)
    assert list(only) == ["fd_digits", "kid_digits", "precision_digits"]


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    """A 4-step class-conditional FM model on digits (40 test images) and a 1-epoch FeatureNet."""
    root = tmp_path_factory.mktemp("guidance_jobs")
    ctx = JobContext(experiment="guidance", results_dir=str(root / "results"), progress=False)
    data, run = root / "digits.npz", root / "runs" / "fm"
    prepare_data_job("digits", "digits", {"n_test": 40}, data, ctx)
    train_job(data, "digits", "fm", 0.0, 0, UNET, TRAIN, run / "model.pt", run / "ck.pt", ctx,
              conditional={"beta": 1.0})
    train_feature_net_job(data, "digits", {"epochs": 1, "width": 8, "feature_dim": 16}, root / "fnet.pt", ctx)
    return root, ctx, data, run


@pytest.mark.slow  # three jobs with their MLflow runs: about a minute on a busy 2-core machine
def test_evaluate_records_precision_and_recall_next_to_fd_at_each_guidance_scale(conditional_run):
    root, ctx, data, run = conditional_run
    settings = {"solvers": ["euler"], "nfe": [2], "n_samples": 24, "metrics": ["fd", "precision", "recall"],
                "guidance": [1.0, 2.0]}
    table = evaluate_run(data, run / "model.pt", "digits", "fm", 0.0, 0, 16, settings, run / "metrics.csv", ctx,
                         feature_net_path=root / "fnet.pt")
    assert set(table.solver) == {"euler", "euler@g=2.0"}
    for solver in ("euler", "euler@g=2.0"):
        rows = table[table.solver == solver].set_index("metric").value
        assert list(rows.index) == ["fd_digits", "precision_digits", "recall_digits"]
        assert rows["fd_digits"] > 0
        for metric in ("precision_digits", "recall_digits"):  # shares of 24 points
            assert 0 <= rows[metric] <= 1 and abs(rows[metric] * 24 - round(rows[metric] * 24)) < 1e-4
    stored = pd.read_csv(run / "metrics.csv")
    assert len(stored) == 2 * 3 and stored.value.notna().all()
