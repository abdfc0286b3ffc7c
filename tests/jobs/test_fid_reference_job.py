"""The fid-reference job and the evaluate jobs that read it (a random Inception network, stand-in ImageNet-32).

The test split's Inception statistics are computed once; an evaluate job reading them makes no
pass over the test split, gets the FID (and KID) it would have computed itself, and refuses
statistics of other weights or other data, and weights whose checksum is not the config's.
"""

import numpy as np
import pytest
import torch

from sdfm.cli import main
from sdfm.jobs.evaluate import evaluate_run
from sdfm.jobs.fid_reference import fid_reference_job
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.metrics import fidelity
from sdfm.metrics.reference_stats import ReferenceMismatch, file_sha256, load_reference_statistics
from sdfm.runtime import JobContext
from sdfm.smoke.inception import write_random_inception
from sdfm.smoke.standins import write_imagenet_batches

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # Inception at 299 px on a CPU: ~1 min in all

UNET = {"kind": "unet", "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
        "attention_resolutions": [], "dropout": 0.0}
TRAIN = {"steps": 2, "batch_size": 8, "lr": 1e-3, "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid_reference")
    ctx = JobContext(experiment="fid", results_dir=str(root / "results"), progress=False)
    folder = write_imagenet_batches(root / "imagenet32", 32, train_sizes=(8, 8), n_val=6)
    prepare_data_job("in32", "imagenet32", {"path": str(folder)}, root / "in32.npz", ctx)
    weights = root / "inception.pth"
    sha = write_random_inception(weights)
    train_job(root / "in32.npz", "in32", "fm", 0.0, 0, UNET, TRAIN, root / "run" / "model.pt", root / "run" / "ck.pt",
              ctx)
    return root, ctx, weights, sha


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_evaluate_reads_the_statistics_instead_of_a_pass_over_the_test_split(setup, monkeypatch):
    root, ctx, weights, sha = setup
    done = fid_reference_job(root / "in32.npz", "in32", weights, root / "stats.npz", ctx, expected_sha256=sha,
                             keep_features=True, device="cpu")
    assert done == {"count": 6, "data_sha256": str(np.load(root / "in32.npz")["sha256"]), "weights_sha256": sha}
    stats = load_reference_statistics(root / "stats.npz", need_features=True)
    assert stats.features.shape == (6, 2048) and stats.sigma.shape == (2048, 2048)
    assert torch.isfinite(stats.features).all() and float(stats.features.std(0).mean()) > 0  # not degenerate

    calls = []
    original = fidelity.ImageFeatures.__call__
    monkeypatch.setattr(fidelity.ImageFeatures, "__call__", lambda self, images: calls.append(len(images))
                        or original(self, images))
    settings = {"solvers": ["euler"], "nfe": [1, 2], "n_samples": 4, "metrics": ["fid", "kid"], "guidance": [1.0],
                "inception_weights": str(weights), "inception_sha256": sha, "save_samples": True}
    table = evaluate_run(root / "in32.npz", root / "run" / "model.pt", "in32", "fm", 0.0, 0, 8, settings,
                         root / "run" / "metrics.csv", ctx, device="cpu", fid_reference=root / "stats.npz")
    assert calls == [4, 4]  # the two sample sets; no pass over the 6 test images
    features = fidelity.ImageFeatures(inception_weights_path=weights, cuda=False)
    from sdfm.data import load_prepared

    reference = features(load_prepared(root / "in32.npz").test)
    torch.testing.assert_close(reference, stats.features)  # the job's statistics are the test split's
    for nfe in (1, 2):
        with np.load(root / "run" / "samples" / f"euler_nfe{nfe}.npz") as npz:
            samples = torch.from_numpy(npz["arr_0"]).permute(0, 3, 1, 2).float() / 127.5 - 1
        direct = fidelity.feature_distances(features(samples), reference, kid=True)
        rows = table[table.nfe == nfe].set_index("metric").value
        assert rows["fid"] == pytest.approx(direct["fd"], rel=1e-5)
        assert rows["kid"] == pytest.approx(direct["kid"], rel=1e-5, abs=1e-9)


def test_other_weights_and_wrong_checksums_are_refused_in_one_line(setup, capsys):
    root, ctx, weights, sha = setup
    other = root / "other.pth"
    state = torch.load(weights, weights_only=False)
    state["fc.bias"] = state["fc.bias"] + 1
    torch.save(state, other)
    fid_reference_job(root / "in32.npz", "in32", weights, root / "stats-own.npz", ctx, device="cpu")
    settings = {"solvers": ["euler"], "nfe": [1], "n_samples": 4, "metrics": ["fid"], "guidance": [1.0],
                "inception_weights": str(other), "inception_sha256": None}
    with pytest.raises(ReferenceMismatch, match="computed with weights_sha256"):
        evaluate_run(root / "in32.npz", root / "run" / "model.pt", "in32", "fm", 0.0, 0, 8, settings,
                     root / "run" / "other.csv", ctx, device="cpu", fid_reference=root / "stats-own.npz")
    code = main(["fid-reference", "--data", str(root / "in32.npz"), "--dataset", "in32", "--weights", str(other),
                 "--sha256", sha, "--out", str(root / "never.npz"), "--results-dir", ctx.results_dir,
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert file_sha256(other) in err and sha in err and "evaluate.inception_weights" in err
    assert not (root / "never.npz").exists()
