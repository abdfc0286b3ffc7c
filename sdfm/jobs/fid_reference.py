"""Job ``fid-reference``: the Inception statistics of a data set's test split, once for every evaluate job.

One pass of the Inception network over the test split gives the features' mean and covariance
(and, for kid / precision / recall, the features). The file records the prepared data's content
hash and the weights file's SHA-256 (:mod:`sdfm.metrics.reference_stats`); the evaluate jobs of
the data set read it instead of extracting the test split again for every solver, NFE and
guidance scale, and refuse it if either differs from theirs. With ``expected_sha256`` (config
``evaluate.inception_sha256``) the weights file is checked before anything is computed.
"""

from __future__ import annotations

from pathlib import Path

from sdfm.data import load_prepared
from sdfm.data.cache import prepared_hash
from sdfm.metrics.fidelity import ImageFeatures
from sdfm.metrics.image_scores import INCEPTION, REFERENCE_SPLIT
from sdfm.metrics.reference_stats import reference_statistics, save_reference_statistics, verified_sha256
from sdfm.runtime import JobContext, pick_device
from sdfm.tracking import job_run

__all__ = ["fid_reference_job"]


def fid_reference_job(data_path: str | Path, dataset: str, weights: str | Path, out: str | Path, ctx: JobContext,
                      expected_sha256: str | None = None, keep_features: bool = False, batch_size: int = 64,
                      device: str | None = None) -> dict:
    """Write the statistics file ``out``; return ``{"count", "data_sha256", "weights_sha256"}``.

    Raises:
        ValueError: the weights file's SHA-256 is not ``expected_sha256`` (one line naming both).
    """
    weights_sha256 = verified_sha256(weights, expected_sha256, "evaluate.inception_weights")
    data_sha256 = prepared_hash(data_path)
    data = load_prepared(data_path)
    if data.kind != "images":
        raise ValueError(f"data set {dataset!r} holds points: fid needs images")
    key = {"stage": "fid_reference", "dataset": dataset, "data_sha256": data_sha256,
           "weights_sha256": weights_sha256, "features": keep_features}
    tags = {"stage": "fid_reference", "dataset": dataset}
    with job_run(ctx.experiment, f"fid_reference/{dataset}", key, tags, ctx.results_dir, data_path) as run:
        print(f"{dataset}: Inception features of the {len(data.test)} {REFERENCE_SPLIT} images", flush=True)
        features = ImageFeatures(INCEPTION, inception_weights_path=weights, batch_size=batch_size,
                                 cuda=pick_device(device).type == "cuda")(data.test)
        stats = reference_statistics(features, keep_features, data_sha256=data_sha256,
                                     weights_sha256=weights_sha256, extractor=INCEPTION, split=REFERENCE_SPLIT)
        save_reference_statistics(stats, out)
        run.log_params({"n_images": stats.count, "features_kept": keep_features, "weights_sha256": weights_sha256})
        run.set_tags({"data_hash": data_sha256})
    return {"count": stats.count, "data_sha256": data_sha256, "weights_sha256": weights_sha256}
