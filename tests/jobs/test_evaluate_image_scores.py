"""Image metrics of an evaluate job: one pass over the test split per feature space, and the sample arrays.

The job scores every (solver, NFE) sample set against the same test split; its FeatureNet reference
features are extracted once per job (before: once per sample set), and with ``save_samples`` the
generated images are kept as uint8 ``.npz`` files other FID tools read.
"""

import numpy as np
import pytest
import torch

from sdfm.jobs.evaluate import evaluate_run, save_sample_array
from sdfm.jobs.feature_net import train_feature_net_job
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.metrics import fidelity
from sdfm.metrics.fidelity import to_uint8_rgb
from sdfm.runtime import JobContext

UNET = {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "dropout": 0.0}
TRAIN = {"steps": 4, "batch_size": 16, "lr": 1e-3, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 2}
N_TEST = 60


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def digits_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("image_scores")
    ctx = JobContext(experiment="scores", results_dir=str(root / "results"), progress=False)
    prepare_data_job("digits", "digits", {"n_test": N_TEST}, root / "digits.npz", ctx)
    train_feature_net_job(root / "digits.npz", "digits", {"epochs": 1, "width": 8, "feature_dim": 8}, root / "f.pt",
                          ctx)
    train_job(root / "digits.npz", "digits", "fm", 0.0, 0, UNET, TRAIN, root / "run" / "model.pt",
              root / "run" / "ck.pt", ctx)
    return root, ctx


def test_one_reference_pass_per_job_and_the_saved_samples_give_the_table_values(digits_model, monkeypatch):
    root, ctx = digits_model
    calls = []
    original = fidelity.ImageFeatures.__call__
    monkeypatch.setattr(fidelity.ImageFeatures, "__call__", lambda self, images: calls.append(len(images))
                        or original(self, images))
    settings = {"solvers": ["euler", "midpoint"], "nfe": [2, 4], "n_samples": 24, "metrics": ["fd", "kid", "recall"],
                "guidance": [1.0], "save_samples": True}
    table = evaluate_run(root / "digits.npz", root / "run" / "model.pt", "digits", "fm", 0.0, 0, 16, settings,
                         root / "run" / "metrics.csv", ctx, feature_net_path=root / "f.pt")
    # 4 sample sets, each one pass; the test split once (before this job extracted it 4 times)
    assert sorted(calls) == [24] * 4 + [N_TEST]
    from sdfm.data import load_prepared

    reference = load_prepared(root / "digits.npz").test
    for (solver, nfe), rows in table.groupby(["solver", "nfe"]):
        with np.load(root / "run" / "samples" / f"{solver}_nfe{nfe}.npz") as npz:
            images = npz["arr_0"]
            assert set(npz.files) == {"arr_0"}  # unconditional: no labels
        assert images.dtype == np.uint8 and images.shape == (24, 8, 8, 3)  # NHWC, grey repeated to RGB
        samples = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        direct = fidelity.frechet_distance(samples, reference, feature_extractor="featurenet",
                                           feature_net_path=root / "f.pt", kid=True, prc=True, cuda=False)
        values = dict(zip(rows.metric, rows.value))
        assert values["fd_digits"] == pytest.approx(direct["fd"], rel=1e-6)
        assert values["recall_digits"] == pytest.approx(direct["recall"], abs=1e-9)
        assert values["kid_digits"] == pytest.approx(direct["kid"], rel=1e-6, abs=1e-9)


def test_sample_arrays_are_nhwc_uint8_with_labels(tmp_path):
    samples = torch.rand(5, 3, 4, 6) * 2 - 1
    labels = torch.tensor([3, 1, 4, 1, 5, 9])
    path = save_sample_array(samples, tmp_path / "s.npz", labels)
    with np.load(path) as npz:
        assert npz["arr_0"].shape == (5, 4, 6, 3) and npz["arr_0"].dtype == np.uint8
        np.testing.assert_array_equal(npz["arr_0"], to_uint8_rgb(samples).permute(0, 2, 3, 1).numpy())
        np.testing.assert_array_equal(npz["arr_1"], [3, 1, 4, 1, 5])
