"""A randomly initialised Inception-v3 in torch-fidelity's weights format, so that FID runs offline.

The real weights (``weights-inception-2015-12-05-6726825d.pth``) cannot be fetched here. A smoke
run still exercises the whole FID path (weights file, checksum, reference statistics, features of
every sample set) with a network of the same architecture and state-dict keys and random
parameters. Its batch-norm statistics are calibrated on random images (a train-mode pass), so the
2048-d pool features are of order one instead of vanishing through ~90 layers. The numbers it
gives are NOT FIDs: only the code path is real.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sdfm.io import atomic_torch_save
from sdfm.metrics.reference_stats import file_sha256

__all__ = ["write_random_inception"]


def write_random_inception(path: str | Path, seed: int = 0, calibration_images: int = 8) -> str:
    """Write a random Inception-v3 state dict torch-fidelity loads to ``path``; return its SHA-256."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _RandomInception(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random initialisation
            return None

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_name(f".{path.name}.empty")
    torch.save({}, empty)  # the constructor loads a file (none: it would download); this one is ignored
    try:
        torch.manual_seed(seed)
        net = _RandomInception("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    finally:
        empty.unlink(missing_ok=True)
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:  # cumulative averages of one calibration pass
        norm.reset_running_stats()
        norm.momentum = None
    generator = torch.Generator().manual_seed(seed + 1)
    images = torch.randint(0, 256, (calibration_images, 3, 64, 64), generator=generator, dtype=torch.uint8)
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()
    for norm in norms:
        norm.momentum = 0.1
    atomic_torch_save(net.state_dict(), path)
    return file_sha256(path)
