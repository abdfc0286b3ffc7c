"""Job ``fit-potential``: fit the semidiscrete potential of one (data set, relative epsilon)."""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from sdfm.couplings import augment_with_labels
from sdfm.data import DataError, Dataset, load_prepared
from sdfm.io import atomic_write_json
from sdfm.jobs.common import JobContext, pick_device
from sdfm.ot import fit_potential, relative_epsilon
from sdfm.ot.potential import data_fingerprint
from sdfm.tracking import job_run, run_key

__all__ = ["fit_potential_job", "absolute_epsilon", "checkpoint_path", "conditional_targets", "label_source",
           "problem_targets"]

Source = Callable[[int, torch.Generator], torch.Tensor]


def absolute_epsilon(epsilon_rel: float, y: torch.Tensor, reference_batch: int, seed: int = 0,
                     source: Source | None = None) -> float:
    """``epsilon_rel * std(C)`` for ``C = -<x, y>`` on a seeded reference batch of source and data.

    The source is N(0, I) unless ``source(count, generator)`` is given (conditional fits).
    """
    if epsilon_rel == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    n = min(reference_batch, y.shape[0])
    rows = torch.randperm(y.shape[0], generator=gen)[:n]
    x = source(n, gen).to(y.dtype) if source is not None else torch.randn(n, y.shape[1], generator=gen, dtype=y.dtype)
    return relative_epsilon(epsilon_rel, x, y[rows].cpu())


def label_source(labels: torch.Tensor, num_classes: int, beta: float, dim: int) -> Source:
    """Sampler of the conditional source ``[x, sqrt(beta) e_z]``, x ~ N(0, I_dim), z ~ the labels' distribution.

    ``source(count, generator)`` draws on the generator's device, from that generator only.
    """
    copies = {torch.device("cpu"): labels.long().cpu()}  # one copy of the labels per device drawn on

    def draw(count: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        if device not in copies:
            copies[device] = copies[torch.device("cpu")].to(device)
        x = torch.randn(count, dim, generator=generator, device=device)
        z = copies[device][torch.randint(len(copies[device]), (count,), generator=generator, device=device)]
        return augment_with_labels(x, z, num_classes, beta)

    return draw


def conditional_targets(data: Dataset, dataset: str, conditional: dict) -> tuple[torch.Tensor, Source]:
    """The keys ``[y_j, sqrt(beta) e_{z_j}]`` of a conditional potential and its source sampler."""
    if data.num_classes is None:
        raise DataError(f"data set {dataset!r} has no labels: remove 'conditional' from its config entry")
    beta = float(conditional["beta"])
    y = augment_with_labels(data.flat_train(), data.train_labels, data.num_classes, beta)
    return y, label_source(data.train_labels, data.num_classes, beta, data.dim)


def _check_source_hook() -> None:
    if "source" not in inspect.signature(fit_potential).parameters:
        raise NotImplementedError(
            "conditional SD-FM needs a source-sampler hook in sdfm.ot.fit_potential (source=...), "
            "which this version lacks; drop 'conditional' or method 'sdfm' from the config"
        )


def problem_targets(data: Dataset, dataset: str, conditional: dict | None = None,
                    superres: dict | None = None) -> tuple[torch.Tensor, Source | None]:
    """The keys of a data set's potential and its source sampler (None: N(0, I) queries).

    Plain: the flat training points. ``conditional``: :func:`conditional_targets`. ``superres``:
    keys ``[y_j, sqrt(beta) z'_j]`` and queries ``[x, sqrt(beta) z]`` (:mod:`sdfm.superres`).
    """
    if conditional:
        _check_source_hook()
        return conditional_targets(data, dataset, conditional)
    if superres:
        from sdfm.superres import superres_targets

        _check_source_hook()
        return superres_targets(data, dataset, superres)
    return data.flat_train(), None


def fit_potential_job(
    data_path: str | Path,
    dataset: str,
    epsilon_rel: float,
    settings: dict,
    out: str | Path,
    summary_out: str | Path,
    ctx: JobContext,
    seed: int = 0,
    device: str | None = None,
    conditional: dict | None = None,
    reference: str | Path | None = None,
    superres: dict | None = None,
    auto_epsilon: dict | None = None,
) -> dict:
    """Fit, save the potential (without its data, guarded by a fingerprint) and a JSON summary.

    ``epsilon_rel = "auto"`` first chooses it with the settings ``auto_epsilon``
    (:mod:`sdfm.jobs.auto_epsilon`), records the choice (summary ``epsilon_auto``, MLflow, and
    ``history["epsilon_rel"]`` of the potential, read by the train job), then fits at it.

    ``settings["pca_dim"] = k`` fits for the PCA cost ``|P x - P y|^2`` in the top-k principal
    subspace (:mod:`sdfm.jobs.potential_pca`); the summary's ``pca`` entry then holds k, the
    explained variance, timings and the full-space pairing quality, measured against the
    full-space potential file ``reference`` (same points and epsilon) when given.

    With ``conditional = {"beta": beta}`` the potential is fitted on the keys
    ``augment_with_labels(y, labels, K, beta)`` from the source ``[x, sqrt(beta) e_z]``, z drawn
    from the label distribution (DESIGN.md, class-conditional); that needs the ``source`` hook
    of :func:`sdfm.ot.fit_potential` (NotImplementedError without it). With
    ``superres = {"factor": f, "beta": beta}`` the keys are ``[y_j, sqrt(beta) avgpool_f(y_j)]`` and
    the source ``[x, sqrt(beta) z]``, z a uniform training low-resolution image (:mod:`sdfm.superres`).
    """
    data = load_prepared(data_path)
    y, source = problem_targets(data, dataset, conditional, superres)
    extra = {"source": source} if source is not None else {}
    settings = dict(settings)
    reference_batch = settings.pop("reference_batch", 4096)
    pca_dim, pca = settings.pop("pca_dim", None), None
    if pca_dim is not None:  # the PCA cost: fit in the k-dim principal subspace (sdfm.ot.pca)
        from sdfm.jobs.potential_pca import pca_problem, pca_report

        pca = pca_problem(data, y, pca_dim, source, dataset)
        y, source = pca.keys, pca.source
        extra = {"source": source} if source is not None else {}
    auto, label = None, f"{epsilon_rel:g}" if epsilon_rel != "auto" else "auto"
    if epsilon_rel == "auto":  # choose it first (settings ``auto_epsilon``), then fit as at a fixed epsilon
        from sdfm.jobs.auto_epsilon import log_auto_epsilon, resolve_auto_epsilon

        auto = resolve_auto_epsilon(y, auto_epsilon or {}, seed, source)
        epsilon_rel = auto.epsilon_rel
    eps_abs = absolute_epsilon(epsilon_rel, y, reference_batch, seed, source)
    key = {"stage": "potential", "dataset": dataset, "epsilon_rel": epsilon_rel, "settings": settings, "seed": seed}
    tags = {"stage": "potential", "dataset": dataset, "epsilon_rel": epsilon_rel}
    if auto is not None:
        key["auto_epsilon"], tags["epsilon_auto"] = auto_epsilon or {}, "true"
    if conditional:
        key["conditional"] = conditional
        tags["beta"] = conditional["beta"]
    if superres:
        key["superres"] = superres
        tags["beta"], tags["superres_factor"] = superres["beta"], superres["factor"]
    if pca is not None:
        key["pca_dim"] = tags["pca_dim"] = pca_dim
    with job_run(ctx.experiment, f"potential/{dataset}/eps{label}", key, tags, ctx.results_dir) as run:
        run.log_params({"epsilon_rel": epsilon_rel, "epsilon_abs": eps_abs, "n_points": y.shape[0],
                        "dim": y.shape[1], **settings, **({"beta": conditional["beta"]} if conditional else {})})
        start = time.perf_counter()
        checkpoint = checkpoint_path(out, {**key, "data": data_fingerprint(y)})
        potential = fit_potential(
            y.to(pick_device(device)), epsilon=eps_abs, seed=seed, progress=ctx.progress, checkpoint=checkpoint,
            callback=lambda step, values: run.log_metrics({"chi2": values["chi2"]}, step=step), **settings, **extra,
        )
        seconds = time.perf_counter() - start
        diverging = potential.history["diverging"]
        if diverging:
            best = min(potential.history["chi2"])
            print(f"WARNING: the chi^2 of potential {out} grew from {best:.4g} to {potential.history['chi2'][-1]:.4g}: "
                  "lower potential.lr_scale or raise potential.steps", file=sys.stderr)
        run.set_tags({"sdfm.potential_diverging": str(diverging).lower()})
        count, gen = 400_000 if y.shape[0] <= 20_000 else 65_536, torch.Generator().manual_seed(seed + 1)
        final = potential.chi2(source(count, gen) if source is not None else torch.randn(count, y.shape[1], generator=gen))
        summary = {
            "dataset": dataset, "epsilon_rel": epsilon_rel, "epsilon_abs": eps_abs, "fit_seconds": seconds,
            "steps_run": potential.history["steps_run"], "final_chi2": final,
            "chi2_curve": {"step": potential.history["step"], "chi2": potential.history["chi2"]},
            "lr0": potential.history["lr0"], "gap_scale": potential.history["gap_scale"], "diverging": diverging,
            "mlflow_run_id": run.run_id,
        }
        run.log_metrics({"final_chi2": final, "fit_seconds": seconds})
        potential.history["epsilon_rel"] = epsilon_rel  # train / evaluate resolve epsilon "auto" with it
        if auto is not None:
            summary["epsilon_auto"] = auto.as_dict()
            potential.history["epsilon_auto"] = True
            log_auto_epsilon(run, auto)
        if pca is not None:  # the k-dim potential pairs full-space queries through the basis
            potential = pca.wrap(potential)
            summary["pca"] = pca_report(pca, potential, seconds, summary["steps_run"], reference, seed)
            run.log_params({"pca_dim": pca_dim, "pca_input_dim": summary["pca"]["input_dim"]})
            run.log_metrics({f"pca_{k}": v for k, v in summary["pca"].items() if isinstance(v, (int, float))})
        potential.history["mlflow_run_id"] = run.run_id  # the train jobs tag their runs with it
        potential.to("cpu").save(out, include_data=False)
        atomic_write_json(summary_out, summary)
        run.log_artifact(summary_out)
    checkpoint.unlink(missing_ok=True)
    return summary


def checkpoint_path(out: str | Path, key: dict) -> Path:
    """Where the fit of ``out`` checkpoints: next to it, named by the job's key, so a fit with other
    settings never resumes it. Removed once ``out`` is written."""
    out = Path(out)
    return out.parent / f".{out.stem}.{run_key(key)}.ckpt"
