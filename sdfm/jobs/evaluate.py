"""Job ``evaluate``: sample a trained model at each (solver, NFE) and score it against held-out data.

Rows of the tidy table (DESIGN.md, Artifacts) name their metric by what it measures:

- ``w2``, ``energy``: on (flattened) samples vs the first ``n`` held-out points;
- ``curvature``: excess length of the Euler-32 paths (the same for every solver and NFE);
- image sets only: ``fd_<dataset>`` (Frechet distance in the data set's FeatureNet embedding,
  never called ``fid``), ``fid`` (Inception-v3 from a local weights file), and ``kid_<dataset>``
  / ``kid`` (kernel distance in the same two feature spaces), ``precision_<dataset>`` /
  ``recall_<dataset>`` and ``precision`` / ``recall`` (improved k-NN precision and recall, k = 3,
  in the same two feature spaces; higher is better).

A super-resolution model (trained with ``superres``) is sampled once per held-out image y, given
``z = avgpool_f(y)``; ``psnr`` and ``ssim`` (higher is better) score each sample against its y, and
``<run dir>/superres/`` keeps the upsampling baselines and a few samples for the report's figure.

``dopri5`` rows carry the NFE it actually used; solver ``meanflow`` (MeanFlow models) runs at NFE
1 and 2. A conditional model is sampled with labels drawn uniformly from its classes at each
classifier-free guidance scale w; rows with w != 1 get the solver name ``<solver>@g=<w>``
(e.g. ``euler@g=2.0``), so the table keeps its columns. Image sets also get a sample grid PNG
per (solver, NFE, w) under ``<run dir>/samples/``, logged as MLflow artifacts.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from sdfm.data import load_prepared
from sdfm.io import atomic_path
from sdfm.jobs.common import JobContext, pick_device
from sdfm.jobs.train import load_trained
from sdfm.metrics import energy_distance, path_curvature, wasserstein2
from sdfm.sampling import DOPRI5_TOL, generate, guided_velocity, integrate
from sdfm.tracking import job_run

__all__ = ["evaluate_run", "METRIC_COLUMNS", "MEANFLOW_NFE", "solver_label", "save_sample_grid"]

#: Columns of the tidy results table (DESIGN.md, Artifacts).
METRIC_COLUMNS = ["dataset", "method", "epsilon", "batch_size", "seed", "solver", "nfe", "metric", "value"]
#: The NFE at which a MeanFlow model is sampled with its own one- and two-step maps.
MEANFLOW_NFE = (1, 2)
#: Neighbourhood size k of the precision / recall manifolds (Kynkaanniemi et al. 2019).
PRC_K = 3


def solver_label(solver: str, guidance: float) -> str:
    """The ``solver`` column: the solver's name, with ``@g=<w>`` when the guidance scale w is not 1."""
    return solver if guidance == 1.0 else f"{solver}@g={float(guidance)}"


def _score(metric: str, samples: torch.Tensor, reference: torch.Tensor, seed: int) -> float:
    flat_s, flat_r = samples.flatten(1), reference.flatten(1)
    if metric == "w2":
        return wasserstein2(flat_s, flat_r, seed=seed)
    if metric == "energy":
        return energy_distance(flat_s, flat_r, seed=seed)
    raise ValueError(f"unknown sample metric {metric!r}")


def _grid(settings: dict):
    """Every (solver, nfe) to sample at; nfe is None for dopri5 (it picks its own)."""
    for solver in settings["solvers"]:
        if solver == "dopri5":
            yield solver, None
        elif solver == "meanflow":
            yield from ((solver, nfe) for nfe in MEANFLOW_NFE)
        else:
            yield from ((solver, nfe) for nfe in settings["nfe"])


def _image_scores(samples, reference, metrics, dataset, feature_net_path, inception_weights, device) -> dict:
    """``{metric name: value}`` for the requested Frechet / kernel distances of image samples."""
    from sdfm.metrics import frechet_distance

    kid = "kid" in metrics
    prc = "precision" in metrics or "recall" in metrics
    extras = [m for m in ("kid", "precision", "recall") if m in metrics]  # in the same feature space
    cuda = device.type == "cuda"
    out = {}
    if "fd" in metrics:
        if feature_net_path is None:
            raise ValueError("metric 'fd' needs the data set's FeatureNet (--feature-net, from train-feature-net)")
        values = frechet_distance(samples, reference, feature_extractor="featurenet",
                                  feature_net_path=feature_net_path, kid=kid, prc=prc, prc_k=PRC_K, cuda=cuda)
        out[f"fd_{dataset}"] = values["fd"]
        out.update({f"{m}_{dataset}": values[m] for m in extras})
    if "fid" in metrics:
        values = frechet_distance(samples, reference, feature_extractor="inception-v3-compat",
                                  inception_weights_path=inception_weights, kid=kid, prc=prc, prc_k=PRC_K, cuda=cuda)
        out["fid"] = values["fd"]
        out.update({m: values[m] for m in extras})
    return out


def save_sample_grid(samples: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None,
                     count: int = 64, nrow: int = 8) -> Path:
    """Write the first ``count`` images (sorted by label when given) as one PNG grid, atomically.

    Images in [-1, 1] are mapped to bytes; small images are enlarged (nearest) to at least 32 px.
    """
    from PIL import Image
    from torchvision.utils import make_grid

    images = samples[:count].detach().float().cpu()
    if labels is not None:
        images = images[torch.argsort(labels[:count].cpu(), stable=True)]
    grid = make_grid((images.clamp(-1, 1) + 1) / 2, nrow=nrow, padding=1, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    picture = Image.fromarray(array)
    scale = max(1, 32 // images.shape[-1])
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path


def evaluate_run(
    data_path: str | Path,
    model_path: str | Path,
    dataset: str,
    method: str,
    epsilon_rel: float,
    seed: int,
    batch_size: int,
    settings: dict,
    out: str | Path,
    ctx: JobContext,
    device: str | None = None,
    feature_net_path: str | Path | None = None,
) -> pd.DataFrame:
    """Write the tidy rows (one per solver, NFE, guidance and metric) of one trained run to ``out`` (CSV).

    Args:
        settings: the merged ``evaluate`` settings (solvers, nfe, n_samples, metrics, guidance,
            inception_weights, dopri5_tol).
        feature_net_path: the data set's FeatureNet file (needed by metric ``fd``).
    """
    device = pick_device(device)
    data = load_prepared(data_path)
    model, state = load_trained(model_path, device)
    eps_label = "auto" if epsilon_rel == "auto" else f"{epsilon_rel:g}"
    if epsilon_rel == "auto":  # the rows hold the number the potential job chose (sdfm.jobs.auto_epsilon)
        if not state.get("epsilon_auto"):
            raise ValueError(f"{model_path} was not trained with epsilon 'auto': pass its numeric epsilon")
        epsilon_rel = float(state["epsilon_rel"])
    images = data.kind == "images"
    reference = data.test
    # Points: n samples against the first n held-out points. Images: n samples, and the
    # Frechet distances compare them with the whole test split.
    cap = reference.shape[0] if not images else None
    n = settings["n_samples"] if cap is None else min(settings["n_samples"], cap)
    n_ref = min(n, reference.shape[0])
    num_classes = state.get("model_extra", {}).get("num_classes")
    labels = None
    if num_classes is not None:
        labels = torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(seed + 11))
    scales = [float(g) for g in settings.get("guidance", [1.0])] if labels is not None else [1.0]
    superres = state.get("superres")  # super-resolution: sample y given z = avgpool_f(test y) (sdfm.superres)
    if superres:
        from sdfm import superres as sr

        n = n_ref = min(n, reference.shape[0])
        cond, factor = sr.low_res(reference[:n], int(superres["factor"])), int(superres["factor"])
        sr.save_reference(Path(out).parent / "superres", reference[:n], factor)
    metrics = settings["metrics"]
    sample_metrics = [m for m in metrics if m in ("w2", "energy")]
    image_metrics = [m for m in metrics if m in ("fd", "fid", "kid", "precision", "recall")]
    run_dir = Path(out).parent
    rows, curvatures = [], {}
    key = {"stage": "evaluate", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
           "settings": settings, "model": str(Path(model_path).resolve())}
    tags = {"stage": "evaluate", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed}
    name = f"evaluate/{dataset}/{method}/eps{eps_label}/seed{seed}"
    with job_run(ctx.experiment, name, key, tags, ctx.results_dir) as run:
        params = {"n_samples": n, "solvers": ",".join(settings["solvers"]), "nfe": ",".join(map(str, settings["nfe"]))}
        if labels is not None:
            params["guidance"] = ",".join(map(str, scales))
        run.log_params(params)
        for solver, nfe in _grid(settings):
            for scale in (scales if solver != "meanflow" else [1.0]):  # MeanFlow maps take no guidance
                if superres:
                    samples, used = sr.sample_superres(model, cond, data.sample_shape, solver=solver, nfe=nfe,
                                                       seed=seed, device=device, tol=settings.get("dopri5_tol"))
                else:
                    samples, used = generate(model, n, data.sample_shape, solver=solver, nfe=nfe, labels=labels,
                                             guidance=scale, seed=seed, device=device,
                                             tol=settings.get("dopri5_tol", DOPRI5_TOL))
                label = solver_label(solver, scale)
                values = {}
                for metric in sample_metrics:
                    values[metric] = _score(metric, samples[:n_ref], reference[:n_ref], seed)
                if "curvature" in metrics:
                    if scale not in curvatures and superres:  # the paths of the first 512 test conditions
                        bound = sr.ConditionedVelocity(model, cond[:512].to(device))
                        curvatures[scale] = _curvature(bound, data.sample_shape, seed, device, n=len(bound.cond))
                    if scale not in curvatures:
                        curvatures[scale] = _curvature(model, data.sample_shape, seed, device, labels, scale)
                    values["curvature"] = curvatures[scale]
                if image_metrics:
                    values.update(_image_scores(samples, reference, image_metrics, dataset, feature_net_path,
                                                settings.get("inception_weights"), device))
                if superres:
                    values.update(sr.superres_scores(samples, reference[:n], metrics))
                    sr.save_panel(run_dir / "superres", f"{solver}_nfe{used}", samples)
                order = [m for m in metrics if m in values] + [m for m in values if m not in metrics]
                for metric in order:
                    rows.append([dataset, method, epsilon_rel, batch_size, seed, label, used, metric, values[metric]])
                mlflow_suffix = solver if scale == 1.0 else f"{solver}_g{scale:g}"
                run.log_metrics({f"{metric}_{mlflow_suffix}": value for metric, value in values.items()}, step=used)
                if images:
                    stem = f"{solver}_nfe{used}" + ("" if scale == 1.0 else f"_g{scale:g}")
                    grid = save_sample_grid(samples, run_dir / "samples" / f"{stem}.png", labels)
                    run.log_artifact(grid, "samples")
        table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
        run.log_artifact(out)
    return table


def _curvature(model, sample_shape, seed, device, labels=None, scale: float = 1.0, n: int = 512) -> float:
    """Path curvature of Euler-32 solves from a seeded noise batch (with the run's labels and guidance)."""
    gen = torch.Generator().manual_seed(seed + 7)
    x0 = torch.randn(n, *sample_shape, generator=gen).to(device)
    z = labels[:n].to(device) if labels is not None else None
    if z is not None and len(z) < n:
        x0 = x0[: len(z)]
    with torch.no_grad():
        result = integrate(guided_velocity(model, z, scale), x0, solver="euler", nfe=32, return_trajectory=True)
    return path_curvature(result.trajectory.cpu())
