"""Sample-quality and path metrics: OT distances, Frechet distances, precision/recall, curvature.

Frechet distances live in a named feature space: ``fid`` for torch-fidelity's Inception-v3,
``fd_<dataset>`` for a :class:`FeatureNet` trained on the dataset. The caller names the metric.
"""

from sdfm.metrics.curvature import path_curvature, velocity_curvature
from sdfm.metrics.feature_net import FeatureNet, load_feature_net, save_feature_net, train_feature_net
from sdfm.metrics.frechet import frechet_distance_features
from sdfm.metrics.image_quality import psnr, ssim
from sdfm.metrics.ot_distances import energy_distance, wasserstein2
from sdfm.metrics.precision_recall import precision_recall



def __getattr__(name: str):
    # torch-fidelity imports torchvision (seconds): load it only when a Frechet distance is asked for.
    if name == "frechet_distance":
        from sdfm.metrics.fidelity import frechet_distance

        return frechet_distance
    raise AttributeError(f"module 'sdfm.metrics' has no attribute {name!r}")


__all__ = [
    "wasserstein2",
    "energy_distance",
    "path_curvature",
    "velocity_curvature",
    "FeatureNet",
    "train_feature_net",
    "save_feature_net",
    "load_feature_net",
    "frechet_distance_features",
    "frechet_distance",
    "precision_recall",
    "psnr",
    "ssim",
]
