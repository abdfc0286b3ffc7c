"""``sdfm sample RUN_DIR``: samples of a tiny trained run into an .npz and a picture (grid or scatter)."""

import numpy as np
import pytest
import torch
from PIL import Image

from sdfm.cli import main
from sdfm.fm.sampling import generate
from sdfm.jobs.prepare import prepare_data_job
from sdfm.jobs.train import train_job
from sdfm.models.checkpoint import load_trained
from sdfm.runtime import JobContext

TRAIN = {"steps": 6, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 3}


def _trained_run(root, dataset, source, options, model, conditional=None):
    """A run folder laid out as the DAG writes it: results/runs/<dataset>/fm/eps0/seed0/model.pt."""
    results = root / "results"
    ctx = JobContext(experiment="sample", results_dir=str(results), progress=False)
    data = results / "data" / f"{dataset}.npz"
    prepare_data_job(dataset, source, options, data, ctx)
    run = results / "runs" / dataset / "fm" / "eps0" / "seed0"
    train_job(data, dataset, "fm", 0.0, 0, model, TRAIN, run / "model.pt", run / "checkpoint.pt", ctx,
              device="cpu", conditional=conditional)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny trained runs sharing one results folder (one MLflow store): 2-D points, conditional digits."""
    root = tmp_path_factory.mktemp("sample")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        moons = _trained_run(root, "moons", "moons", {"n_train": 300, "n_test": 100},
                             {"kind": "mlp", "hidden": 32, "depth": 2})
        digits = _trained_run(root, "digits", "digits", {}, {"kind": "unet", "base_channels": 8, "channel_mults": [1],
                                                            "num_res_blocks": 1}, conditional={"beta": 1.0})
    return {"moons": moons, "digits": digits}


def test_points_give_the_seeded_samples_and_a_scatter_plot_over_the_data(runs, tmp_path, capsys):
    run = runs["moons"]
    out = tmp_path / "drawn" / "moons.npz"
    assert main(["sample", str(run), "--n", "64", "--solver", "euler", "--nfe", "4", "--out", str(out)]) == 0
    assert f"{out}: 64 samples of shape (2,) (euler, NFE 4)" in capsys.readouterr().out
    saved = np.load(out)
    assert saved["samples"].shape == (64, 2) and int(saved["nfe"]) == 4 and str(saved["solver"]) == "euler"
    assert "labels" not in saved and "arr_0" not in saved
    model, _ = load_trained(run / "model.pt")
    expected, _ = generate(model, 64, (2,), solver="euler", nfe=4, seed=0)
    np.testing.assert_array_equal(saved["samples"], expected.numpy())  # the same noise, the same solver
    other = tmp_path / "other.npz"
    assert main(["sample", str(run / "model.pt"), "--n", "64", "--nfe", "4", "--seed", "1", "--out", str(other)]) == 0
    assert not np.array_equal(np.load(other)["samples"], saved["samples"])
    picture = Image.open(out.with_suffix(".png"))
    assert picture.size[0] > 400 and picture.size[1] > 400
    colours = np.unique(np.asarray(picture.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 20 and [200, 200, 200] in colours.tolist()  # the held-out data in grey, samples, text


def test_a_conditional_image_run_gives_a_labelled_grid_and_fid_tool_arrays(runs, tmp_path):
    run = runs["digits"]
    out = tmp_path / "digits.npz"
    assert main(["sample", str(run), "--n", "20", "--nfe", "2", "--out", str(out)]) == 0
    saved = np.load(out)
    assert saved["samples"].shape == (20, 1, 8, 8) and saved["samples"].dtype == np.float32
    np.testing.assert_array_equal(saved["labels"], np.arange(20) % 10)  # the classes in turn
    assert saved["arr_0"].shape == (20, 8, 8, 3) and saved["arr_0"].dtype == np.uint8
    expected = np.round((np.clip(saved["samples"][:, 0], -1, 1) + 1) * 127.5)
    assert np.abs(saved["arr_0"][..., 0].astype(float) - expected).max() <= 1
    grid = Image.open(out.with_suffix(".png"))
    assert grid.size == (4 * (8 * 9 + 1), 4 * (3 * 9 + 1))  # 8 x 3 cells of 8 px + 1 px gaps, enlarged 4x
    assert main(["sample", str(run), "--n", "4", "--label", "3", "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out)["labels"], [3, 3, 3, 3])


def test_bad_requests_fail_in_one_line(runs, tmp_path, capsys):
    assert main(["sample", str(tmp_path), "--out", str(tmp_path / "x.npz")]) == 2
    assert "no model.pt; give a run folder" in capsys.readouterr().err
    run = runs["moons"]
    assert main(["sample", str(run), "--out", str(tmp_path / "x.png")]) == 2
    assert "give a file name ending in .npz" in capsys.readouterr().err
    assert main(["sample", str(run), "--label", "2", "--out", str(tmp_path / "x.npz")]) == 2
    err = capsys.readouterr().err
    assert "this model is not class-conditional" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.npz").exists()
