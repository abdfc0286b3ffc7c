"""Job ``evaluate``: sample a trained model at each (solver, NFE) and score it against held-out data.

Rows of the tidy table (columns :data:`sdfm.artifacts.METRIC_COLUMNS`) name their metric by what it measures:

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
per (solver, NFE, w) under ``<run dir>/samples/``, logged as MLflow artifacts; with
``save_samples: true`` every generated image too, as ``<run dir>/samples/<solver>_nfe<NFE>[_g<w>].npz``
(:func:`save_sample_array`: ``arr_0`` uint8 NHWC RGB, ``arr_1`` the labels of conditional samples,
the layout the OpenAI / guided-diffusion FID evaluator and other FID tools read).

The reference side of ``fid`` (Inception features of the test split) comes from the
``fid_reference`` job's statistics file (``fid_reference``), checked against the data's hash and
the weights' SHA-256; every feature space makes at most one pass over the test split per job
(:class:`sdfm.metrics.image_scores.ImageScorer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from sdfm.artifacts import METRIC_COLUMNS, epsilon_label
from sdfm.data import load_prepared
from sdfm.fm.sampling import DOPRI5_TOL, generate, guided_velocity, integrate
from sdfm.io import atomic_path
from sdfm.metrics import energy_distance, path_curvature, wasserstein2
from sdfm.models.checkpoint import load_trained
from sdfm.runtime import JobContext, pick_device
from sdfm.progress import Progress
from sdfm.tracking import job_run

__all__ = ["evaluate_run", "MEANFLOW_NFE", "solver_label", "save_sample_array", "save_sample_grid"]

#: The NFE at which a MeanFlow model is sampled with its own one- and two-step maps.
MEANFLOW_NFE = (1, 2)
#: Noise paths (Euler, 32 steps) of the curvature metric, unless ``evaluate.curvature_samples`` says otherwise.
CURVATURE_SAMPLES = 512
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


def save_sample_array(samples: torch.Tensor, path: str | Path, labels: torch.Tensor | None = None) -> Path:
    """Write every image of ``samples`` (in [-1, 1]) as a uint8 ``.npz`` FID tools read, atomically.

    ``arr_0``: (N, H, W, 3) uint8 RGB, ``round((x + 1) 127.5)`` (grey repeated to 3 channels, the
    images our own FID scores); ``arr_1``: the (N,) int64 class labels, for conditional samples.
    """
    import numpy as np

    from sdfm.metrics.fidelity import to_uint8_rgb

    arrays = {"arr_0": to_uint8_rgb(samples).permute(0, 2, 3, 1).contiguous().numpy()}
    if labels is not None:
        arrays["arr_1"] = labels[: len(samples)].detach().cpu().to(torch.int64).numpy()
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
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
    fid_reference: str | Path | None = None,
) -> pd.DataFrame:
    """Write the tidy rows (one per solver, NFE, guidance and metric) of one trained run to ``out`` (CSV).

    Args:
        settings: the merged ``evaluate`` settings (solvers, nfe, n_samples, metrics, guidance,
            inception_weights, inception_sha256, dopri5_tol, save_samples).
        feature_net_path: the data set's FeatureNet file (needed by metric ``fd``).
        fid_reference: the fid_reference job's statistics of the test split (metric ``fid``; without
            it the job extracts them itself, once).
    """
    device = pick_device(device)
    data = load_prepared(data_path)
    model, state = load_trained(model_path, device)
    eps_label = epsilon_label(epsilon_rel)
    if epsilon_rel == "auto":  # the rows hold the number the potential job chose (sdfm.ot.auto_epsilon)
        if not state.get("epsilon_auto"):
            raise ValueError(f"{model_path} was not trained with epsilon 'auto': pass its numeric epsilon")
        epsilon_rel = float(state["epsilon_rel"])
    sets = _sample_sets(model, state, data, data_path, dataset, settings, seed, device, Path(out).parent,
                        feature_net_path, fid_reference)
    rows = []
    key = {"stage": "evaluate", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
           "settings": settings, "model": str(Path(model_path).resolve())}
    tags = {"stage": "evaluate", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed}
    if eps_label == "auto":
        tags["epsilon_auto"] = True
    if state.get("epsilon_abs") is not None:  # SD-FM: its potential's absolute epsilon
        tags["epsilon_abs"] = state["epsilon_abs"]
    name = f"evaluate/{dataset}/{method}/eps{eps_label}/seed{seed}"
    with job_run(ctx.experiment, name, key, tags, ctx.results_dir, data_path) as run:
        run.log_params(sets.params())
        settings_grid = sets.grid()
        bar = Progress(len(settings_grid), f"evaluate {method} eps={eps_label}", enabled=ctx.progress)
        for solver, nfe, scale in settings_grid:
            samples, used = sets.sample(solver, nfe, scale)
            label = solver_label(solver, scale)
            values = sets.score(samples, solver, scale, used)
            for metric in [m for m in sets.metrics if m in values] + [m for m in values if m not in sets.metrics]:
                rows.append([dataset, method, epsilon_rel, eps_label, batch_size, seed, label, used, metric,
                             values[metric]])
            _log_metrics(run, values, solver, scale, nfe, used)
            if data.kind == "images":
                stem = f"{solver}_nfe{used}" + ("" if scale == 1.0 else f"_g{scale:g}")
                _save_images(run, sets.run_dir / "samples", stem, samples, sets.labels, settings.get("save_samples"))
            bar.set_postfix(solver=label, nfe=used, **{m: f"{v:.4g}" for m, v in list(values.items())[:2]})
            bar.update()
        bar.close()
        if sets.scorer is not None:  # passes over the test split, per feature space (at most one each)
            print(f"reference passes: {sets.scorer.reference_passes}", flush=True)
            run.log_metrics({f"reference_passes_{k}": v for k, v in sets.scorer.reference_passes.items()})
        table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
        run.log_artifact(out)
    return table


def _log_metrics(run, values: dict, solver: str, scale: float, nfe: int | None, used: int) -> None:
    """One sample set's scores to MLflow: at step ``used`` (the NFE), and once per (solver, NFE) as a column."""
    mlflow_suffix = solver if scale == 1.0 else f"{solver}_g{scale:g}"
    run.log_metrics({f"{metric}_{mlflow_suffix}": value for metric, value in values.items()}, step=used)
    if nfe is not None:  # one column per (solver, NFE) too: the runs table shows a metric's last step
        run.log_metrics({f"{metric}_{mlflow_suffix}_nfe{nfe}": value for metric, value in values.items()})


@dataclass
class _SampleSets:
    """A trained model's sample sets at each (solver, NFE, guidance) of the job, and their scores.

    ``n`` samples are drawn per set and scored against the first ``n_ref`` held-out points (points) or
    the whole test split (images); ``labels`` are the drawn classes of a conditional model (sampled at
    each guidance scale of ``scales``); ``cond`` holds the low-resolution test images a super-resolution
    model samples from. Curvatures are computed once per guidance scale.
    """

    model: torch.nn.Module
    sample_shape: tuple
    reference: torch.Tensor
    settings: dict
    seed: int
    device: torch.device
    run_dir: Path
    n: int
    n_ref: int
    labels: torch.Tensor | None
    scales: list
    superres: dict | None
    cond: torch.Tensor | None
    scorer: object | None
    curvatures: dict = field(default_factory=dict)

    @property
    def metrics(self) -> list:
        """The job's metrics, in the order of its settings."""
        return self.settings["metrics"]

    def params(self) -> dict:
        """The job's MLflow parameters: the sample count, the solvers and NFE (and the guidance scales)."""
        params = {"n_samples": self.n, "solvers": ",".join(self.settings["solvers"]),
                  "nfe": ",".join(map(str, self.settings["nfe"]))}
        if self.labels is not None:
            params["guidance"] = ",".join(map(str, self.scales))
        return params

    def grid(self) -> list[tuple]:
        """Every (solver, NFE, guidance) to sample at; MeanFlow maps take no guidance."""
        return [(solver, nfe, scale) for solver, nfe in _grid(self.settings)
                for scale in (self.scales if solver != "meanflow" else [1.0])]

    def sample(self, solver: str, nfe: int | None, scale: float) -> tuple[torch.Tensor, int]:
        """``(samples, the NFE used)`` of one set."""
        if self.superres:
            from sdfm.fm import superres as sr

            return sr.sample_superres(self.model, self.cond, self.sample_shape, solver=solver, nfe=nfe,
                                      seed=self.seed, device=self.device, tol=self.settings.get("dopri5_tol"))
        return generate(self.model, self.n, self.sample_shape, solver=solver, nfe=nfe, labels=self.labels,
                        guidance=scale, seed=self.seed, device=self.device,
                        tol=self.settings.get("dopri5_tol", DOPRI5_TOL))

    def score(self, samples: torch.Tensor, solver: str, scale: float, used: int) -> dict:
        """``{metric: value}`` of one set: sample metrics, curvature, image scores, super-resolution scores."""
        metrics, seed = self.metrics, self.seed
        values = {}
        for metric in [m for m in metrics if m in ("w2", "energy")]:
            values[metric] = _score(metric, samples[:self.n_ref], self.reference[:self.n_ref], seed)
        if "curvature" in metrics:
            values["curvature"] = self.curvature_at(scale)
        if self.scorer is not None:
            values.update(self.scorer(samples))
        if self.superres:
            from sdfm.fm import superres as sr

            values.update(sr.superres_scores(samples, self.reference[:self.n], metrics))
            sr.save_panel(self.run_dir / "superres", f"{solver}_nfe{used}", samples)
        return values

    def curvature_at(self, scale: float) -> float:
        """The path curvature at guidance ``scale`` (computed once; a super-resolution model's paths start
        from the first test conditions)."""
        paths = self.settings.get("curvature_samples", CURVATURE_SAMPLES)
        if scale not in self.curvatures and self.superres:
            from sdfm.fm import superres as sr

            bound = sr.ConditionedVelocity(self.model, self.cond[:paths].to(self.device))
            self.curvatures[scale] = _curvature(bound, self.sample_shape, self.seed, self.device, n=len(bound.cond))
        if scale not in self.curvatures:
            self.curvatures[scale] = _curvature(self.model, self.sample_shape, self.seed, self.device, self.labels,
                                                scale, n=paths)
        return self.curvatures[scale]


def _sample_sets(model, state: dict, data, data_path, dataset: str, settings: dict, seed: int, device, run_dir: Path,
                 feature_net_path, fid_reference) -> _SampleSets:
    """The job's :class:`_SampleSets`: sample counts, drawn labels, super-resolution conditions, image scorer.

    Points: n samples against the first n held-out points. Images: n samples, and the Frechet
    distances compare them with the whole test split. Super-resolution: one sample per test image
    (up to n), given ``z = avgpool_f(y)``; its upsampling baselines are saved under ``run_dir/superres``.
    """
    reference = data.test
    cap = reference.shape[0] if data.kind != "images" else None
    n = settings["n_samples"] if cap is None else min(settings["n_samples"], cap)
    n_ref = min(n, reference.shape[0])
    num_classes = state.get("model_extra", {}).get("num_classes")
    labels = None
    if num_classes is not None:
        labels = torch.randint(num_classes, (n,), generator=torch.Generator().manual_seed(seed + 11))
    scales = [float(g) for g in settings.get("guidance", [1.0])] if labels is not None else [1.0]
    superres, cond = state.get("superres"), None  # super-resolution: sample y given z = avgpool_f(test y)
    if superres:
        from sdfm.fm import superres as sr

        n = n_ref = min(n, reference.shape[0])
        cond, factor = sr.low_res(reference[:n], int(superres["factor"])), int(superres["factor"])
        sr.save_reference(run_dir / "superres", reference[:n], factor)
    image_metrics = [m for m in settings["metrics"] if m in ("fd", "fid", "kid", "precision", "recall")]
    scorer = _image_scorer(data_path, reference, image_metrics, dataset, settings, device, feature_net_path,
                           fid_reference) if image_metrics else None
    return _SampleSets(model, data.sample_shape, reference, settings, seed, device, run_dir, n, n_ref, labels, scales,
                       superres, cond, scorer)


def _image_scorer(data_path, reference, image_metrics, dataset, settings, device, feature_net_path, fid_reference):
    """The job's image metrics, reference features extracted (or read from ``fid_reference``) at most once."""
    from sdfm.data.cache import prepared_hash
    from sdfm.metrics.image_scores import ImageScorer

    return ImageScorer(reference, image_metrics, dataset, device=device, feature_net_path=feature_net_path,
                       inception_weights=settings.get("inception_weights"),
                       inception_sha256=settings.get("inception_sha256"), fid_reference=fid_reference,
                       data_sha256=prepared_hash(data_path))


def _save_images(run, folder: Path, stem: str, samples, labels, arrays: bool) -> None:
    """The sample grid PNG (an MLflow artifact) and, with ``save_samples``, every image as ``<stem>.npz``."""
    grid = save_sample_grid(samples, folder / f"{stem}.png", labels)
    run.log_artifact(grid, "samples")
    if arrays:
        save_sample_array(samples, folder / f"{stem}.npz", labels)


def _curvature(model, sample_shape, seed, device, labels=None, scale: float = 1.0,
               n: int = CURVATURE_SAMPLES) -> float:
    """Path curvature of Euler-32 solves from a seeded noise batch (with the run's labels and guidance)."""
    gen = torch.Generator().manual_seed(seed + 7)
    x0 = torch.randn(n, *sample_shape, generator=gen).to(device)
    z = labels[:n].to(device) if labels is not None else None
    if z is not None and len(z) < n:
        x0 = x0[: len(z)]
    with torch.no_grad():
        result = integrate(guided_velocity(model, z, scale), x0, solver="euler", nfe=32, return_trajectory=True)
    return path_curvature(result.trajectory.cpu())
