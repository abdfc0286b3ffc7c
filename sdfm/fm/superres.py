"""Super-resolution as conditional generation: low-resolution conditions, pairing, sampling, baselines.

The condition of a high-resolution image ``y`` (C, H, W) is its low-resolution version

    z'(y) = avgpool_f(y),   shape (C, H/f, W/f),  flattened to Dz = C (H/f) (W/f) coordinates,

for an integer factor f >= 2 dividing H and W. Pairs are drawn with the augmented cost
``c_X + beta |z - z'|^2`` (:func:`sdfm.ot.problem.augment_with_condition`): the keys of SD-FM
are ``[y_j, sqrt(beta) z'_j]``, its queries ``[x, sqrt(beta) z]`` with ``x ~ N(0, I_D)`` and
``z = z'_i`` for a uniform training index i (the empirical distribution of the training
conditions). The velocity network sees ``z`` upsampled to H x W as extra input channels.

At evaluation the condition is the pooled held-out image, ``z = avgpool_f(y_test)``; samples are
scored against ``y_test`` by PSNR and SSIM (:mod:`sdfm.metrics.image_quality`), next to the
method-independent baselines ``upsample(z)`` (nearest and bicubic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdfm.data import DataError, Dataset
from sdfm.ot.problem import PotentialProblem, conditioned_problem

__all__ = [
    "BASELINES", "ConditionedVelocity", "PANEL_IMAGES", "baseline_scores", "check_factor",
    "low_res", "low_res_shape", "sample_superres", "save_panel", "save_reference", "superres_scores",
    "superres_problem", "upsample",
]

#: Upsampling baselines reported beside the methods (torch ``interpolate`` modes).
BASELINES = ("nearest", "bicubic")


def low_res_shape(sample_shape, factor: int) -> tuple[int, int, int]:
    """``(C, H / f, W / f)`` of a (C, H, W) image; DataError when f does not divide H and W."""
    channels, height, width = (int(s) for s in sample_shape)
    if factor < 2 or height % factor or width % factor:
        raise DataError(f"superres factor {factor} must be >= 2 and divide the image side(s) {height}x{width}")
    return channels, height // factor, width // factor


def check_factor(data: Dataset, dataset: str, factor: int) -> tuple[int, int, int]:
    """The low-resolution shape of ``data``'s images; DataError for points or a non-dividing factor."""
    if data.kind != "images":
        raise DataError(f"data set {dataset!r} holds points: remove 'superres' from its config entry")
    try:
        return low_res_shape(data.sample_shape, factor)
    except DataError as err:
        raise DataError(f"data set {dataset!r}: {err}; change datasets.{dataset}.superres.factor") from None


def low_res(images: Tensor, factor: int) -> Tensor:
    """``avgpool_f`` of (N, C, H, W) images, flattened to (N, C (H/f) (W/f))."""
    low_res_shape(images.shape[1:], factor)
    return F.avg_pool2d(images, factor).flatten(1)


def upsample(z: Tensor, low_shape, size, mode: str = "bicubic") -> Tensor:
    """Flat (N, Dz) low-resolution images back to (N, C, H, W) by ``interpolate`` (clamped to [-1, 1])."""
    grid = z.reshape(z.shape[0], *low_shape)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(grid, size=tuple(size), mode=mode, **kwargs).clamp(-1, 1)


def superres_problem(data: Dataset, dataset: str, superres: dict) -> PotentialProblem:
    """The problem of a super-resolution potential: keys ``[y_j, sqrt(beta) z'_j]``, queries ``[x, sqrt(beta) z]``.

    ``superres = {"factor": f, "beta": beta}`` as the config gives it; z' = ``avgpool_f(y)``, and the
    source draws z uniformly from the training conditions (:func:`sdfm.ot.problem.conditioned_problem`).
    """
    factor, beta = int(superres["factor"]), float(superres["beta"])
    check_factor(data, dataset, factor)
    conditions = low_res(data.train, factor)
    return conditioned_problem(data.flat_train(), conditions, beta, fields={"superres": superres},
                               tag_fields={"beta": superres["beta"], "superres_factor": superres["factor"]})


class ConditionedVelocity(nn.Module):
    """``model(x, t, cond=cond[:B])`` as a plain velocity: binds a (B, Dz) condition to a batch."""

    def __init__(self, model: nn.Module, cond: Tensor) -> None:
        super().__init__()
        self.model, self.cond = model, cond

    def forward(self, x: Tensor, t, **kwargs) -> Tensor:
        return self.model(x, t, cond=self.cond[: x.shape[0]], **kwargs)


@torch.no_grad()
def sample_superres(model: nn.Module, cond: Tensor, sample_shape, *, solver: str = "euler", nfe: int | None = None,
                    seed: int = 0, batch_size: int = 512, device=None, tol: float | None = None) -> tuple[Tensor, int]:
    """One sample per condition row: (n, *sample_shape) on the CPU, and the NFE per path.

    The noise is :func:`sdfm.fm.sampling.generate`'s (blocks of 1024 from a CPU generator seeded with
    ``seed``), so sample i has the same starting noise for every method and batch size.
    """
    from sdfm.fm.sampling import DOPRI5_TOL, _NoiseStream, integrate, mean_flow_sample

    device = torch.device(device) if device is not None else next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    noise = _NoiseStream(sample_shape, torch.Generator().manual_seed(seed), dtype)
    tol = DOPRI5_TOL if tol is None else tol
    was_training = model.training
    model.eval()
    outputs, counts = [], []
    try:
        for start in range(0, cond.shape[0], batch_size):
            c = cond[start : start + batch_size].to(device, dtype)
            x0 = noise.take(c.shape[0]).to(device)
            bound = ConditionedVelocity(model, c)
            if solver == "meanflow":
                outputs.append(mean_flow_sample(bound, x0, nfe or 1).cpu())
                counts.append(nfe or 1)
                continue
            result = integrate(lambda x, t: bound(x, t), x0, solver=solver, nfe=nfe, rtol=tol, atol=tol)
            outputs.append(result.x1.cpu())
            counts.append(result.nfe)
    finally:
        model.train(was_training)
    return torch.cat(outputs), int(round(sum(counts) / len(counts)))


def baseline_scores(truth: Tensor, factor: int) -> dict[str, dict[str, float]]:
    """PSNR / SSIM (means over images) of upsampling ``avgpool_f(truth)`` back, per mode of :data:`BASELINES`."""
    from sdfm.metrics.image_quality import psnr, ssim

    low_shape = low_res_shape(truth.shape[1:], factor)
    z = low_res(truth, factor)
    out = {}
    for mode in BASELINES:
        up = upsample(z, low_shape, truth.shape[2:], mode)
        out[mode] = {"psnr": float(psnr(up, truth).mean()), "ssim": float(ssim(up, truth).mean())}
    return out


#: Images per panel the evaluate job keeps for the report's super-resolution figure.
PANEL_IMAGES = 8


def superres_scores(samples: Tensor, truth: Tensor, metrics) -> dict[str, float]:
    """``{"psnr", "ssim"}`` (those in ``metrics``): means over images of samples vs their ground truth."""
    from sdfm.metrics.image_quality import psnr, ssim

    functions = {"psnr": psnr, "ssim": ssim}
    return {m: float(functions[m](samples, truth).mean()) for m in ("psnr", "ssim") if m in metrics}


def save_reference(folder: str | Path, truth: Tensor, factor: int, count: int = PANEL_IMAGES) -> None:
    """Write ``reference.npz`` (the first ``count`` truths, their low-resolution inputs and upsamplings)
    and ``baselines.json`` (:func:`baseline_scores` over all of ``truth``) into ``folder``."""
    from sdfm.io import atomic_path, atomic_write_json

    folder = Path(folder)
    low_shape = low_res_shape(truth.shape[1:], factor)
    head = truth[:count]
    z = low_res(head, factor)
    arrays = {"truth": head, "low_res": z.reshape(len(head), *low_shape),
              **{mode: upsample(z, low_shape, truth.shape[2:], mode) for mode in BASELINES}}
    with atomic_path(folder / "reference.npz") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{k: v.float().cpu().numpy() for k, v in arrays.items()})
    atomic_write_json(folder / "baselines.json", {"factor": factor, "n_images": len(truth),
                                                  **baseline_scores(truth, factor)})


def save_panel(folder: str | Path, stem: str, samples: Tensor, count: int = PANEL_IMAGES) -> Path:
    """Write the first ``count`` samples of one (solver, NFE) as ``<folder>/<stem>.npy``."""
    from sdfm.io import atomic_path

    path = Path(folder) / f"{stem}.npy"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, samples[:count].float().cpu().numpy())
    return path
