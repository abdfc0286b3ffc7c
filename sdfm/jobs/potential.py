"""Job ``fit-potential``: fit the semidiscrete potential of one (data set, relative epsilon).

One job, two launchers. ``sdfm fit-potential`` fits in this process (:class:`OneProcess`);
``torchrun --nproc-per-node K -m sdfm.cli fit-potential ... --distributed`` (config
``potential.processes: K``) shards the points across K ranks (:class:`ShardedRanks`): every rank
loads the data set, keeps its contiguous shard (:func:`sdfm.ot.distributed.shard_bounds`) on its
device (``cuda:LOCAL_RANK`` with NCCL, or the CPU with gloo) and runs
:func:`sdfm.ot.distributed.fit_potential_sharded`. Rank 0 alone logs to MLflow, under the key of
the one-process job (it is the same job, computed otherwise), and writes the same two files,
atomically: the potential (without its data, guarded by a fingerprint) and the JSON summary.

The problem (keys, source, PCA basis, epsilon) is built by :mod:`sdfm.fm.problems` and
:mod:`sdfm.ot.problem`; the job adds the solver settings, tracking and files.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
import time
from pathlib import Path

import torch

from sdfm.data import load_prepared
from sdfm.fm.problems import potential_problem
from sdfm.io import atomic_write_json
from sdfm.ot import fit_potential
from sdfm.ot.pca import project_keys
from sdfm.ot.potential import data_fingerprint
from sdfm.ot.problem import REFERENCE_BATCH, PotentialProblem, chi2_sample_count, pca_report, with_pca
from sdfm.runtime import JobContext, pick_device
from sdfm.tracking import job_run, log_auto_epsilon, run_key

__all__ = ["OneProcess", "ShardedRanks", "checkpoint_path", "fit_potential_job"]


class OneProcess:
    """Launcher of a fit in this process: all points on one device."""

    rank, world = 0, 1

    def __init__(self, device: str | None) -> None:
        self.device = pick_device(device)

    def __enter__(self) -> OneProcess:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def rows(self, n: int) -> slice:
        """The keys this process fits."""
        return slice(None)

    def basis(self, train: torch.Tensor, pca_dim: int):
        """None: :func:`sdfm.ot.problem.with_pca` fits the basis itself."""
        return None

    def fit(self, keys: torch.Tensor, **options):
        return fit_potential(keys.to(self.device), **options)

    def collect(self, potential, y: torch.Tensor, pca) -> object:
        """The whole potential (in this process already)."""
        return potential

    def done(self, checkpoint: Path) -> None:
        checkpoint.unlink(missing_ok=True)


class ShardedRanks(OneProcess):
    """Launcher of a fit sharded over the ranks of a torch.distributed world (started by torchrun)."""

    def __init__(self, device: str | None) -> None:
        import torch.distributed as dist

        from sdfm.ot.distributed import init_distributed

        self.dist = dist
        self.device = init_distributed(device)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def __exit__(self, *exc) -> None:
        self.dist.destroy_process_group()

    def rows(self, n: int) -> slice:
        from sdfm.ot.distributed import shard_bounds

        return slice(*shard_bounds(n, self.world, self.rank))

    def basis(self, train: torch.Tensor, pca_dim: int):
        """The basis from the all-reduced moments of the shards (no rank holds the whole covariance input)."""
        from sdfm.ot.pca_distributed import fit_pca_sharded

        return fit_pca_sharded(train[self.rows(train.shape[0])].to(self.device), pca_dim)

    def fit(self, keys: torch.Tensor, **options):
        from sdfm.ot.distributed import fit_potential_sharded

        return fit_potential_sharded(keys.to(self.device), **options)

    def collect(self, potential, y: torch.Tensor, pca):
        """The potential gathered onto rank 0, on the CPU (None elsewhere); a PCA fit's projected keys are gathered."""
        full = potential.gather(y=y if self.rank == 0 and pca is None else None)
        return full.to("cpu") if full is not None else None

    def done(self, checkpoint: Path) -> None:
        from sdfm.ot.distributed import shard_checkpoint

        self.dist.barrier()  # the potential is written: the checkpoints can go
        shard_checkpoint(checkpoint, self.rank, self.world).unlink(missing_ok=True)


def _check_source_hook() -> None:
    if "source" not in inspect.signature(fit_potential).parameters:
        raise NotImplementedError(
            "conditional SD-FM needs a source-sampler hook in sdfm.ot.fit_potential (source=...), "
            "which this version lacks; drop 'conditional' or method 'sdfm' from the config"
        )


def fit_potential_job(
    data_path: str | Path,
    dataset: str,
    epsilon_rel: float | str,
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
    reference_batch: int = REFERENCE_BATCH,
    pca_dim: int | None = None,
    distributed: bool = False,
    epsilon_reference: str = "inner_product",
) -> dict:
    """Fit, save the potential (without its data, guarded by a fingerprint) and a JSON summary.

    Args:
        settings: the solver's settings (:class:`sdfm.ot.SolverConfig` fields and ``fit_potential``
            options such as ``init``).
        epsilon_rel: a relative epsilon, or ``"auto"``: chosen first with the settings
            ``auto_epsilon`` (:func:`sdfm.ot.auto_epsilon.resolve_auto_epsilon`), recorded (summary
            ``epsilon_auto``, MLflow, and ``history["epsilon_rel"]`` of the potential, read by the
            train job), then fitted at. One process only.
        conditional: ``{"beta": beta}``: keys ``[y, sqrt(beta) e_z]`` from the source
            ``[x, sqrt(beta) e_z]``, z drawn from the label distribution (class-conditional cost,
            paper Eq. 2.3); needs the ``source`` hook of :func:`sdfm.ot.fit_potential`.
        superres: ``{"factor": f, "beta": beta}``: keys ``[y_j, sqrt(beta) avgpool_f(y_j)]`` and the
            source ``[x, sqrt(beta) z]``, z a uniform training low-resolution image (:mod:`sdfm.fm.superres`).
        pca_dim: k fits for the PCA cost ``|P x - P y|^2`` in the top-k principal subspace
            (:func:`sdfm.ot.problem.with_pca`); the summary's ``pca`` entry then holds k, the explained
            variance, timings and the full-space pairing quality, measured against the full-space
            potential file ``reference`` (same points and epsilon) when given.
        reference_batch: rows of the seeded batch of :func:`sdfm.ot.problem.absolute_epsilon`.
        epsilon_reference: ``inner_product`` (std of ``-<x, y>``) or ``sq_euclidean`` (std of
            ``|x - y|^2``, OTT-JAX's convention): how ``epsilon_rel`` is made absolute.
        distributed: fit on every rank of the torch.distributed world (:class:`ShardedRanks`);
            ``device`` then picks the backend (:func:`sdfm.ot.distributed.init_distributed`).

    Returns:
        The summary (on every rank of a sharded fit; ``mlflow_run_id`` None but on rank 0).
    """
    if conditional or superres:
        _check_source_hook()
    with (ShardedRanks if distributed else OneProcess)(device) as launcher:
        data = load_prepared(data_path)
        problem = potential_problem(data, dataset, conditional, superres)
        y, rows = problem.keys, launcher.rows(problem.keys.shape[0])
        if pca_dim is not None:
            began = time.perf_counter()
            problem = with_pca(problem, data.flat_train(), pca_dim, dataset,
                               basis=launcher.basis(data.flat_train(), pca_dim), rows=rows)
            problem.pca.seconds = time.perf_counter() - began  # the basis (a collective when sharded) and projection
        if distributed:  # the reference batch of epsilon: rows of the full keys, projected as the shard's are
            project = (lambda r: project_keys(problem.pca.basis, r, problem.pca.extra)) if pca_dim is not None else None
            problem = problem.with_epsilon(epsilon_rel, reference_batch, seed, auto_epsilon, reference=y, project=project,
                                           epsilon_reference=epsilon_reference)
            keys = problem.keys if pca_dim is not None else y[rows]
            fingerprint = data_fingerprint(y)
        else:
            problem = problem.with_epsilon(epsilon_rel, reference_batch, seed, auto_epsilon,
                                           epsilon_reference=epsilon_reference)
            keys, fingerprint = problem.keys, data_fingerprint(problem.keys)
        summary, checkpoint = _fit(launcher, problem, keys, y, fingerprint, dataset, data_path, settings, seed,
                                   conditional, out, summary_out, reference, ctx)
        launcher.done(checkpoint)
    return summary


def _fit(launcher, problem: PotentialProblem, keys, y, fingerprint, dataset, data_path, settings, seed, conditional,
         out, summary_out, reference, ctx) -> tuple[dict, Path]:
    """Fit ``keys`` (this process's), log (rank 0), measure the final chi^2 and write the files (rank 0)."""
    eps_rel, eps_abs = problem.epsilon_rel, problem.epsilon_abs
    key = {"stage": "potential", "dataset": dataset, "settings": settings, "seed": seed, **problem.defining_fields()}
    tags = {"stage": "potential", "dataset": dataset, **problem.tags(), "epsilon_abs": eps_abs}
    label = "auto" if problem.auto is not None else f"{eps_rel:g}"
    checkpoint = checkpoint_path(out, {**key, "data": fingerprint})
    tracked = (job_run(ctx.experiment, f"potential/{dataset}/eps{label}", key, tags, ctx.results_dir, data_path)
               if launcher.rank == 0 else contextlib.nullcontext())
    with tracked as run:
        if run is not None:
            run.log_params({"epsilon_rel": eps_rel, "epsilon_abs": eps_abs, "n_points": y.shape[0],
                            "dim": keys.shape[1], **settings,
                            **({"beta": conditional["beta"]} if conditional else {})})
            if isinstance(launcher, ShardedRanks):
                run.set_tags({"sdfm.world_size": launcher.world, "sdfm.backend": launcher.dist.get_backend()})
        callback = (lambda step, values: run.log_metrics({"chi2": values["chi2"]}, step=step)) if run else None
        extra = {"source": problem.source} if problem.source is not None else {}
        start = time.perf_counter()
        potential = launcher.fit(keys, epsilon=eps_abs, seed=seed, progress=ctx.progress and launcher.rank == 0,
                                 checkpoint=checkpoint, callback=callback, **settings, **extra)
        seconds = time.perf_counter() - start
        history = potential.history
        count, gen = chi2_sample_count(y.shape[0], problem.full_keys.shape[1]), torch.Generator().manual_seed(seed + 1)
        final = potential.chi2(problem.draw(count, gen))
        potential = launcher.collect(potential, y, problem.pca)
        summary = {
            "dataset": dataset, "epsilon_rel": eps_rel, "epsilon_abs": eps_abs,
            "epsilon_reference": problem.epsilon_reference, "fit_seconds": seconds,
            "steps_run": history["steps_run"], "final_chi2": final,
            "stopped_by_threshold": bool(history.get("stopped_by_threshold", False)),
            "chi2_curve": {"step": history["step"], "chi2": history["chi2"]},
            "lr0": history["lr0"], "gap_scale": history["gap_scale"], "diverging": history["diverging"],
            **({"world_size": launcher.world} if isinstance(launcher, ShardedRanks) else {}),
            "mlflow_run_id": run.run_id if run is not None else None,
        }
        if run is not None:
            _finish(run, potential, problem, summary, out, summary_out, reference, seed)
    return summary, checkpoint


def _finish(run, potential, problem: PotentialProblem, summary, out, summary_out, reference, seed) -> None:
    """Rank 0: warn on divergence, record epsilon and a PCA fit's pairs, log and write the potential and summary."""
    history = potential.history
    if history["diverging"]:
        print(f"WARNING: the chi^2 of potential {out} grew from {min(history['chi2']):.4g} to "
              f"{history['chi2'][-1]:.4g}: lower potential.lr_scale or raise potential.steps", file=sys.stderr)
    run.set_tags({"sdfm.potential_diverging": str(history["diverging"]).lower()})
    run.log_metrics({"final_chi2": summary["final_chi2"], "fit_seconds": summary["fit_seconds"]})
    history["epsilon_rel"] = problem.epsilon_rel  # train / evaluate resolve epsilon "auto" with it
    if problem.auto is not None:
        summary["epsilon_auto"] = problem.auto.as_dict()
        history["epsilon_auto"] = True
        log_auto_epsilon(run, problem.auto)
    if problem.pca is not None:  # the k-dim potential pairs full-space queries through the basis
        potential = problem.pca.wrap(potential)
        summary["pca"] = pca_report(problem.pca, potential, summary["fit_seconds"], summary["steps_run"], reference,
                                    seed)
        run.log_params({"pca_dim": problem.pca.basis.k, "pca_input_dim": summary["pca"]["input_dim"]})
        run.log_metrics({f"pca_{k}": v for k, v in summary["pca"].items() if isinstance(v, (int, float))})
    potential.history["mlflow_run_id"] = run.run_id  # the train jobs tag their runs with it
    potential.to("cpu").save(out, include_data=False)
    atomic_write_json(summary_out, summary)
    run.log_artifact(summary_out)


def checkpoint_path(out: str | Path, key: dict) -> Path:
    """Where the fit of ``out`` checkpoints: next to it, named by the job's key, so a fit with other
    settings never resumes it. Removed once ``out`` is written."""
    out = Path(out)
    return out.parent / f".{out.stem}.{run_key(key)}.ckpt"
