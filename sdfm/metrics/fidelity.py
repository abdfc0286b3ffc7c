"""Frechet (and kernel) distances of image sets through torch-fidelity, offline only.

Two feature spaces:

- ``"inception-v3-compat"``: torch-fidelity's TF-compatible Inception-v3 (pool3, 2048-d), i.e.
  the standard FID. Its weights must be a local file (``inception_weights_path``); nothing is
  ever downloaded.
- ``"featurenet"``: the embedding of a :class:`~sdfm.metrics.feature_net.FeatureNet` trained on
  the dataset (``feature_net_path``), for small image sets where Inception is meaningless.

The number returned under ``"fd"`` is the same formula in either space, so the CALLER names the
metric by its feature space: ``fid`` for Inception, e.g. ``fd_digits`` / ``fd_<dataset>`` for a
FeatureNet. Never mix the two in one column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import Tensor
from torch.utils.data import Dataset
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from sdfm.metrics.feature_net import load_feature_net

__all__ = ["frechet_distance", "feature_distances", "ImageFeatures", "to_uint8_rgb", "FeatureNetExtractor",
           "FEATURENET_EXTRACTOR"]

FEATURENET_EXTRACTOR = "sdfm-featurenet"
_INCEPTION = "inception-v3-compat"
_EXTRACTORS = {"inception-v3-compat": _INCEPTION, "featurenet": FEATURENET_EXTRACTOR}


def to_uint8_rgb(images: Tensor) -> Tensor:
    """Map float images in [-1, 1], (B, 1 or 3, H, W), to uint8 (B, 3, H, W): round((x + 1) 127.5)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (B, 1 or 3, H, W), got {tuple(images.shape)}")
    u8 = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


class _Uint8Images(Dataset):
    """A Dataset over a (B, 3, H, W) uint8 tensor, the input type torch-fidelity expects."""

    def __init__(self, images: Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]


class FeatureNetExtractor(FeatureExtractorBase):
    """torch-fidelity extractor wrapping a saved FeatureNet.

    torch-fidelity passes every ``calculate_metrics`` kwarg to the constructor; the FeatureNet
    file travels in ``feature_extractor_weights_path``. Input: uint8 (B, 3, H, W); it is mapped
    back to [-1, 1] (x / 127.5 - 1) and, for a one-channel net, averaged over the (repeated)
    channels. Features: ``"embedding"`` (``net.features``, used for FID/KID/PRC) and ``"logits"``.
    """

    def __init__(self, name: str, features_list, feature_extractor_weights_path: str | None = None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError(f"feature extractor {name!r} needs feature_extractor_weights_path (a FeatureNet file)")
        self.net = load_feature_net(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return "embedding", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logits", "fid": "embedding", "kid": "embedding", "prc": "embedding"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 28, 28, dtype=torch.uint8)

    def forward(self, x: Tensor):
        if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W), got {x.dtype} {tuple(x.shape)}")
        x = x.float() / 127.5 - 1.0
        if self.net.config.in_channels == 1:
            x = x.mean(dim=1, keepdim=True)
        embedding = self.net.features(x)
        out = {"embedding": embedding, "logits": self.net.head(F.silu(embedding))}
        return tuple(out[name].float() for name in self.features_list)


if FEATURENET_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(FEATURENET_EXTRACTOR, FeatureNetExtractor)


def _weights_file(path: str | Path | None, what: str, argument: str) -> str:
    if path is None:
        raise ValueError(f"frechet_distance with {what} needs {argument} (a local file); nothing is downloaded")
    if not Path(path).is_file():
        raise ValueError(f"{argument} for {what} does not exist: {path}")
    return str(path)


class ImageFeatures:
    """One feature space of image sets: the extractor is loaded once, then applied to any number of sets.

    Args:
        feature_extractor: ``"inception-v3-compat"`` (FID: pool3, 2048-d) or ``"featurenet"``
            (the FeatureNet embedding).
        feature_net_path: FeatureNet file from ``save_feature_net`` (for ``"featurenet"``).
        inception_weights_path: local copy of torch-fidelity's
            ``weights-inception-2015-12-05-6726825d.pth`` (for Inception; required).
        batch_size: images per feature-extraction batch.
        cuda: run the extractor on CUDA (default: when available).

    Raises:
        ValueError: unknown extractor, or a missing weights file (named in the message).
    """

    def __init__(self, feature_extractor: str = "inception-v3-compat", *, feature_net_path: str | Path | None = None,
                 inception_weights_path: str | Path | None = None, batch_size: int = 64,
                 cuda: bool | None = None) -> None:
        if feature_extractor not in _EXTRACTORS:
            raise ValueError(f"feature_extractor must be one of {sorted(_EXTRACTORS)}, got {feature_extractor!r}")
        if feature_extractor == "featurenet":
            weights = _weights_file(feature_net_path, "feature_extractor='featurenet'", "feature_net_path")
        else:
            weights = _weights_file(inception_weights_path, f"feature_extractor={_INCEPTION!r}",
                                    "inception_weights_path")
        self.name, self.weights = _EXTRACTORS[feature_extractor], weights
        self.cuda = torch.cuda.is_available() if cuda is None else cuda
        self.batch_size = batch_size
        self.layer = FEATURE_EXTRACTORS_REGISTRY[self.name].get_default_feature_layer_for_metric("fid")
        self._extractor = None

    def __call__(self, images: Tensor) -> Tensor:
        """(n, F) float32 features (on the CPU) of (n, 1 or 3, H, W) images in [-1, 1]: one pass of the extractor.

        The images are quantised to uint8 RGB first (:func:`to_uint8_rgb`), the input of every
        torch-fidelity extractor.
        """
        from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

        if self._extractor is None:
            self._extractor = create_feature_extractor(self.name, [self.layer], cuda=self.cuda, verbose=False,
                                                       feature_extractor_weights_path=self.weights)
        features = get_featuresdict_from_dataset(_Uint8Images(to_uint8_rgb(images)), self._extractor,
                                                 self.batch_size, self.cuda, save_cpu_ram=True, verbose=False)
        return features[self.layer]


def feature_distances(generated: Tensor, reference: Tensor | None = None, *, mu: np.ndarray | None = None,
                      sigma: np.ndarray | None = None, kid: bool = False, prc: bool = False,
                      prc_k: int = 3) -> dict[str, float]:
    """Frechet distance (and optionally KID, precision and recall) between two feature sets.

    FD is ``|mu_g - mu_r|^2 + tr(S_g) + tr(S_r) - 2 tr((S_g S_r)^(1/2))``
    (:func:`sdfm.metrics.frechet.frechet_distance_to_gaussian`), with the reference's ``mu`` and
    ``sigma`` when given (precomputed statistics), else those of ``reference``. KID is the
    unbiased squared MMD with the cubic polynomial kernel, averaged over 100 subsets of
    ``min(1000, n_generated, n_reference)`` features (torch-fidelity's). Precision and recall are
    the improved k-NN ones of Kynkaanniemi et al. (2019) (torch-fidelity's PRC, the definition of
    :func:`sdfm.metrics.precision_recall`): with ``r_k(phi)`` the distance from ``phi`` to its k-th
    nearest neighbour in its own set, precision is the share of generated features within ``r_k``
    of some real one, recall the share of real features within ``r_k`` of some generated one. The
    k-NN radii depend on the set sizes, so they use the first ``m = min(n_generated, n_reference)``
    features of each set.

    Args:
        generated: (n, F) features of the generated images.
        reference: (n', F) features of the reference images (needed by KID and PRC, and by FD
            without ``mu`` / ``sigma``).
        mu, sigma: the reference's feature mean (F,) and covariance (F, F).

    Returns:
        ``{"fd": ...}`` plus ``"kid"`` and ``"precision"``, ``"recall"`` when asked for.
    """
    from torch_fidelity.metric_kid import kid_features_to_metric
    from torch_fidelity.metric_prc import prc_features_to_metric

    from sdfm.metrics.frechet import frechet_distance_to_gaussian, gaussian_statistics

    if reference is None and (kid or prc or mu is None or sigma is None):
        raise ValueError("reference features are needed for kid, precision / recall, or without mu and sigma")
    n_ref = len(reference) if reference is not None else None
    if len(generated) < 2 or (n_ref is not None and n_ref < 2):
        raise ValueError("both image sets need at least 2 images")
    m = min(len(generated), n_ref) if n_ref is not None else len(generated)
    if prc and m <= prc_k:
        raise ValueError(f"precision/recall with k={prc_k} need more than {prc_k} images in each set, got {m}")
    if mu is None or sigma is None:
        mu, sigma = gaussian_statistics(reference)
    out = {"fd": frechet_distance_to_gaussian(generated, mu, sigma)}
    if kid:
        values = kid_features_to_metric(generated, reference, kid_subset_size=min(1000, len(generated), n_ref),
                                        verbose=False)
        out["kid"] = float(values[torch_fidelity.KEY_METRIC_KID_MEAN])
    if prc:
        values = prc_features_to_metric(generated[:m], reference[:m], prc_neighborhood=prc_k, save_cpu_ram=True,
                                        verbose=False)
        out["precision"] = float(values[torch_fidelity.KEY_METRIC_PRECISION])
        out["recall"] = float(values[torch_fidelity.KEY_METRIC_RECALL])
    return out


def frechet_distance(
    generated: Tensor,
    reference: Tensor,
    *,
    feature_extractor: str = "inception-v3-compat",
    feature_net_path: str | Path | None = None,
    inception_weights_path: str | Path | None = None,
    batch_size: int = 64,
    kid: bool = False,
    prc: bool = False,
    prc_k: int = 3,
    cuda: bool | None = None,
) -> dict[str, float]:
    """Frechet distance (and optionally KID, precision and recall) between two image sets via torch-fidelity.

    Images are quantised to uint8 RGB (grey repeated to 3 channels) and passed once each through
    the extractor (:class:`ImageFeatures`); the distances are :func:`feature_distances` of the
    two feature sets. To score many sample sets against one reference, extract the reference's
    features (or statistics) once and call :func:`feature_distances` instead.

    Args:
        generated: (B, 1 or 3, H, W) float images in [-1, 1].
        reference: (B', 1 or 3, H, W) float images in [-1, 1].
        feature_extractor, feature_net_path, inception_weights_path, batch_size, cuda: as in
            :class:`ImageFeatures`.
        kid: also compute KID.
        prc: also compute precision and recall.
        prc_k: neighbourhood size k of their manifold estimate (3, as in the paper).

    Returns:
        ``{"fd": ...}`` plus ``"kid"`` when ``kid=True`` and ``"precision"``, ``"recall"`` when
        ``prc=True``. The caller names the metric by feature space (``fid`` for Inception,
        ``fd_<dataset>`` for a FeatureNet).

    Raises:
        ValueError: unknown extractor, or a missing weights file (named in the message).
    """
    features = ImageFeatures(feature_extractor, feature_net_path=feature_net_path,
                             inception_weights_path=inception_weights_path, batch_size=batch_size, cuda=cuda)
    if len(generated) < 2 or len(reference) < 2:
        raise ValueError("both image sets need at least 2 images")
    m = min(len(generated), len(reference))
    if prc and m <= prc_k:
        raise ValueError(f"precision/recall with k={prc_k} need more than {prc_k} images in each set, got {m}")
    return feature_distances(features(generated), features(reference), kid=kid, prc=prc, prc_k=prc_k)
