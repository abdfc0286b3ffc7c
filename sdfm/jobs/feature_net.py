"""Job ``train-feature-net``: the FeatureNet classifier whose embedding defines ``fd_<dataset>``.

Inception-v3 features mean little on 8x8 digits or 28x28 silhouettes, so every labelled image
set gets its own small CNN (:class:`sdfm.metrics.FeatureNet`), trained once on the training
split; the evaluation computes Frechet distances in its embedding and records them as
``fd_<dataset>`` (never ``fid``).
"""

from __future__ import annotations

import time
from pathlib import Path

from sdfm.data import DataError, load_prepared
from sdfm.metrics import save_feature_net, train_feature_net
from sdfm.runtime import JobContext, pick_device
from sdfm.tracking import job_run

__all__ = ["train_feature_net_job"]


def train_feature_net_job(
    data_path: str | Path,
    dataset: str,
    settings: dict,
    out: str | Path,
    ctx: JobContext,
    seed: int = 0,
    device: str | None = None,
) -> dict:
    """Train the FeatureNet of ``dataset`` on its training split and save it atomically to ``out``.

    Args:
        data_path: the prepared ``.npz`` of the data set (labelled images).
        dataset: the data set's name in the config (names the metric ``fd_<dataset>``).
        settings: ``epochs``, ``batch_size``, ``lr``, ``feature_dim``, ``width``.
        out: where :func:`sdfm.metrics.save_feature_net` writes the net.
        ctx: tracking settings.
        seed: seed of the held-out split, the initialisation and the shuffling.
        device: where to train (default: CUDA when available).

    Returns:
        ``{"accuracy": held-out accuracy, "train_seconds": ...}``.

    Raises:
        DataError: the data set holds points or has no labels.
    """
    data = load_prepared(data_path)
    if data.kind != "images" or data.num_classes is None:
        what = "points" if data.kind != "images" else "unlabelled images"
        raise DataError(
            f"data set {dataset!r} holds {what}: a FeatureNet needs labelled images; "
            f"use metric 'fid' (Inception) or w2/energy instead of 'fd'"
        )
    key = {"stage": "feature_net", "dataset": dataset, "settings": settings, "seed": seed}
    tags = {"stage": "feature_net", "dataset": dataset}
    with job_run(ctx.experiment, f"feature_net/{dataset}", key, tags, ctx.results_dir, data_path) as run:
        run.log_params({"n_train": data.train.shape[0], "num_classes": data.num_classes, "seed": seed, **settings})
        start = time.perf_counter()
        net, accuracy = train_feature_net(data.train, data.train_labels, seed=seed, progress=ctx.progress,
                                          device=pick_device(device), **settings)
        seconds = time.perf_counter() - start
        test_accuracy = _accuracy(net, data.test, data.test_labels)
        stats = {"accuracy": accuracy, "test_accuracy": test_accuracy, "train_seconds": seconds}
        run.log_metrics(stats)
        save_feature_net(net, out, {"dataset": dataset, **stats, "mlflow_run_id": run.run_id})
    return stats


def _accuracy(net, images, labels, batch_size: int = 512) -> float:
    """Accuracy of ``net`` (on the CPU) on the test split."""
    import torch

    if len(images) == 0:
        return float("nan")
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = net(images[start : start + batch_size].float())
            correct += int((logits.argmax(dim=1) == labels[start : start + batch_size]).sum())
    return correct / len(images)
