"""The prepare-data job on file-based sources, whose ``path`` option once collided with the cache path."""

import numpy as np
import pytest

from sdfm.data import load_prepared, prepare_dataset
from sdfm.jobs.prepare import prepare_data_job
from sdfm.runtime import JobContext
from sdfm.smoke.standins import write_image_folder, write_imagenet_batches


@pytest.fixture(autouse=True)
def _local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_an_image_folder_with_its_path_option_is_prepared(tmp_path):
    folder = write_image_folder(tmp_path / "mine", classes=("cat", "dog"), per_class=6)
    ctx = JobContext(experiment="prepare", results_dir=str(tmp_path / "results"), progress=False)
    options = {"path": str(folder), "resolution": 16, "test_fraction": 0.25}
    digest = prepare_data_job("mine", "image_folder", options, tmp_path / "mine.npz", ctx)
    data = load_prepared(tmp_path / "mine.npz")
    assert digest == str(np.load(tmp_path / "mine.npz")["sha256"])
    assert data.num_classes == 2 and data.train.shape[1:] == (3, 16, 16)
    assert len(data.train) + len(data.test) == 12  # 6 PNG / JPEG files per class, other files skipped


def test_prepare_dataset_takes_name_and_out_positionally_and_path_as_an_option(tmp_path):
    folder = write_imagenet_batches(tmp_path / "in32", 32, train_sizes=(3, 2), n_val=2)
    prepare_dataset("imagenet32", tmp_path / "in32.npz", path=str(folder))
    assert load_prepared(tmp_path / "in32.npz").train.shape == (5, 3, 32, 32)
