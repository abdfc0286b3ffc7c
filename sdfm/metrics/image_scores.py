"""The image metrics of one evaluate job, with the reference side computed at most once per job.

An evaluate job scores many sample sets (every solver, NFE and guidance scale) against the same
test split. Each feature space (the data set's FeatureNet for ``fd``, Inception for ``fid``)
loads its extractor once; the reference features come from the fid_reference job's statistics
file (Inception: no pass over the test split at all) or from one pass per job. Every sample set
then costs one pass over the samples only.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["ImageScorer", "INCEPTION", "REFERENCE_SPLIT"]

INCEPTION = "inception-v3-compat"
#: The split the samples are compared with (the statistics files record it).
REFERENCE_SPLIT = "test"


class _Space:
    """One feature space: its extractor, and the reference's features and / or statistics."""

    def __init__(self, features, reference_features=None, mu=None, sigma=None) -> None:
        self.features, self.reference, self.mu, self.sigma = features, reference_features, mu, sigma


class ImageScorer:
    """``scorer(samples) -> {metric name: value}`` for the image metrics of one data set.

    Args:
        reference: (n, C, H, W) reference images in [-1, 1] (the test split).
        metrics: the requested metrics (``fd``, ``fid``, ``kid``, ``precision``, ``recall``).
        dataset: the data set's name (``fd_<dataset>``, ``kid_<dataset>``, ... in the FeatureNet space).
        feature_net_path: the data set's FeatureNet (metric ``fd``).
        inception_weights: the Inception weights file (metric ``fid``).
        inception_sha256: the expected SHA-256 of that file, or None (then not checked here).
        fid_reference: the statistics file of the fid_reference job, or None (then one pass here).
        data_sha256: the prepared data's content hash, which ``fid_reference`` must record.
        prc_k: neighbourhood size of precision / recall.

    Attributes:
        reference_passes: ``{space: passes over the reference images}`` made by this scorer.
    """

    def __init__(self, reference: torch.Tensor, metrics: list[str], dataset: str, *, device: torch.device,
                 feature_net_path: str | Path | None = None, inception_weights: str | Path | None = None,
                 inception_sha256: str | None = None, fid_reference: str | Path | None = None,
                 data_sha256: str | None = None, prc_k: int = 3) -> None:
        self.reference, self.metrics, self.dataset, self.prc_k = reference, metrics, dataset, prc_k
        self.cuda = device.type == "cuda"
        self.feature_net_path, self.inception_weights = feature_net_path, inception_weights
        self.inception_sha256, self.fid_reference, self.data_sha256 = inception_sha256, fid_reference, data_sha256
        self.kid = "kid" in metrics
        self.prc = "precision" in metrics or "recall" in metrics
        self.extras = [m for m in ("kid", "precision", "recall") if m in metrics]  # in the same feature space
        self.reference_passes = {"featurenet": 0, INCEPTION: 0}
        self._spaces: dict[str, _Space] = {}

    def _space(self, name: str) -> _Space:
        if name not in self._spaces:
            self._spaces[name] = self._featurenet() if name == "featurenet" else self._inception()
        return self._spaces[name]

    def _featurenet(self) -> _Space:
        from sdfm.metrics.fidelity import ImageFeatures

        if self.feature_net_path is None:
            raise ValueError("metric 'fd' needs the data set's FeatureNet (--feature-net, from train-feature-net)")
        features = ImageFeatures("featurenet", feature_net_path=self.feature_net_path, cuda=self.cuda)
        self.reference_passes["featurenet"] += 1
        return _Space(features, features(self.reference))

    def _inception(self) -> _Space:
        from sdfm.metrics.fidelity import ImageFeatures
        from sdfm.metrics.reference_stats import ReferenceMismatch, load_reference_statistics, verified_sha256

        features = ImageFeatures(INCEPTION, inception_weights_path=self.inception_weights, cuda=self.cuda)
        if self.fid_reference is None:
            self.reference_passes[INCEPTION] += 1
            return _Space(features, features(self.reference))
        expect = {"weights_sha256": verified_sha256(self.inception_weights, self.inception_sha256,
                                                    "evaluate.inception_weights"),
                  "extractor": INCEPTION, "split": REFERENCE_SPLIT}
        if self.data_sha256 is not None:
            expect["data_sha256"] = self.data_sha256
        stats = load_reference_statistics(self.fid_reference, expect, need_features=self.kid or self.prc)
        if stats.count != len(self.reference):
            raise ReferenceMismatch(f"{self.fid_reference}: statistics of {stats.count} images, the test split has "
                             f"{len(self.reference)}; delete it and rerun its fid_reference job")
        return _Space(features, stats.features, stats.mu, stats.sigma)

    def _distances(self, name: str, samples: torch.Tensor) -> dict[str, float]:
        from sdfm.metrics.fidelity import feature_distances

        space = self._space(name)
        return feature_distances(space.features(samples), space.reference, mu=space.mu, sigma=space.sigma,
                                 kid=self.kid, prc=self.prc, prc_k=self.prc_k)

    def __call__(self, samples: torch.Tensor) -> dict[str, float]:
        out = {}
        if "fd" in self.metrics:
            values = self._distances("featurenet", samples)
            out[f"fd_{self.dataset}"] = values["fd"]
            out.update({f"{m}_{self.dataset}": values[m] for m in self.extras})
        if "fid" in self.metrics:
            values = self._distances(INCEPTION, samples)
            out["fid"] = values["fd"]
            out.update({m: values[m] for m in self.extras})
        return out
