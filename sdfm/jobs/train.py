"""Job ``train``: train one velocity field for (data set, method, relative epsilon, seed)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from sdfm.data import DataError, load_prepared
from sdfm.fm.couplings import make_coupling
from sdfm.fm.problems import potential_problem
from sdfm.fm.train import TrainConfig, train
from sdfm.io import atomic_torch_save, atomic_write_json
from sdfm.models import build_model
from sdfm.models.checkpoint import model_kwargs
from sdfm.ot.pca import load_potential
from sdfm.runtime import JobContext, pick_device
from sdfm.tracking import job_run, run_key

__all__ = ["train_job"]


# Long (140 lines): conditioning, potential and model set-up of the three methods; the conditioning part goes
# to sdfm.fm.problems when the next conditioning mode lands. Left whole while another branch adds the OT-FM
# plan options here (ARCHITECTURE.md, "Not done yet").
def train_job(
    data_path: str | Path,
    dataset: str,
    method: str,
    epsilon_rel: float,
    seed: int,
    model_settings: dict,
    train_settings: dict,
    out: str | Path,
    checkpoint: str | Path,
    ctx: JobContext,
    potential_path: str | Path | None = None,
    device: str | None = None,
    conditional: dict | None = None,
    superres: dict | None = None,
    distributed: bool = False,
    ot_batch_size: int | None = None,
    epsilon_reference: str = "inner_product",
) -> dict:
    """Train, then save ``{"model": EMA weights, "model_settings", "sample_shape", ...}`` to ``out``.

    ``superres = {"factor": f, "beta": beta}`` trains a super-resolution model: each pair carries
    the condition ``z`` (a low-resolution image, :mod:`sdfm.fm.superres`) fed to the UNet as extra
    channels, and pairs are drawn with the cost ``c_X + beta |z - z'|^2``.

    ``conditional = {"beta": beta}`` trains a class-conditional model (``num_classes`` labels plus
    a null class for guidance) on pairs drawn with the augmented cost ``c_X + beta c_Z``; for
    ``sdfm`` the potential must then have been fitted with the same ``conditional``. A
    ``train_settings["objective"] == "meanflow"`` model also takes the start time r.

    ``distributed``: data-parallel training over the ranks of the torch.distributed world (started
    by ``torchrun --nproc-per-node K -m sdfm.cli train ... --distributed``, which the workflow runs
    for ``train.processes: K``): each rank pairs and differentiates ``batch_size / K`` pairs of the
    global batch (:mod:`sdfm.fm.data_parallel`); rank 0 alone logs to MLflow and writes the files.

    ``otfm`` only: ``ot_batch_size`` n (other than the training batch) solves OT on n pairs and
    trains on batches drawn from that plan (:class:`sdfm.fm.couplings.PlanOTCoupling`);
    ``epsilon_reference`` says how the relative epsilon is made absolute
    (:func:`sdfm.ot.batch.relative_epsilon`). Both enter the run key only when not the default.
    """
    train_settings = dict(train_settings)
    processes = int(train_settings.pop("processes", 1))
    if method != "otfm" or ot_batch_size == train_settings.get("batch_size"):
        ot_batch_size = None  # the training batch is the OT batch: the plain per-batch coupling
    method_key = {**({"ot_batch_size": ot_batch_size} if ot_batch_size is not None else {}),
                  **({"epsilon_reference": epsilon_reference}
                     if method == "otfm" and epsilon_reference != "inner_product" else {})}
    rank, world = 0, 1
    if distributed:
        from sdfm.ot.distributed import init_distributed

        device = init_distributed(device or pick_device(None))
        rank, world = dist.get_rank(), dist.get_world_size()
        if processes not in (1, world):
            raise ValueError(f"train.processes is {processes} but this job runs on {world} ranks: start "
                             f"torchrun with --nproc-per-node {processes}")
    elif processes > 1:
        raise ValueError(f"train.processes is {processes}: start the job under torchrun --nproc-per-node "
                         f"{processes} with --distributed (the workflow does)")
    device = pick_device(device)
    data = load_prepared(data_path)
    flat = data.flat_train().to(device)
    potential = None
    tags = {"stage": "train", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed}
    if world > 1:
        tags["train_processes"] = world
    labels = num_classes = beta = None
    if conditional:
        if data.num_classes is None:
            raise DataError(f"data set {dataset!r} has no labels: remove 'conditional' from its config entry")
        labels, num_classes, beta = data.train_labels.to(device), data.num_classes, float(conditional["beta"])
        tags["beta"] = beta
    conditions = low_shape = None
    if superres:
        from sdfm.fm.superres import check_factor, low_res

        if conditional:
            raise DataError(f"data set {dataset!r}: 'conditional' and 'superres' exclude each other; keep one")
        low_shape = check_factor(data, dataset, int(superres["factor"]))
        conditions, beta = low_res(data.train, int(superres["factor"])), float(superres["beta"])
        tags.update({"beta": beta, "superres_factor": int(superres["factor"])})
    if method == "sdfm":
        if potential_path is None:
            raise ValueError("method 'sdfm' needs --potential, the file written by fit-potential")
        keys = potential_problem(data, dataset, conditional, superres).keys  # the keys its potential job fitted
        potential = load_potential(potential_path, y=keys, device=device)  # full-space or PCA (sdfm.ot.pca)
        if getattr(potential, "pca_dim", None) is not None:
            tags["pca_dim"] = potential.pca_dim
        tags["potential_run_key"] = run_key({"path": str(Path(potential_path).resolve())})
        tags["potential_mlflow_run_id"] = potential.history.get("mlflow_run_id", "")
        tags["epsilon_abs"] = float(potential.epsilon)
        if epsilon_rel == "auto":  # the value its potential job chose (sdfm.ot.auto_epsilon)
            epsilon_rel = tags["epsilon_rel"] = float(potential.history["epsilon_rel"])
            tags["epsilon_auto"] = True
        if potential.history.get("diverging"):
            tags["sdfm.potential_diverging"] = "true"
            print(f"WARNING: potential {potential_path} was diverging when its fit stopped (chi^2 grew); "
                  "its pairs are not the OT pairs: refit it with a lower potential.lr_scale", file=sys.stderr)
    if epsilon_rel == "auto":
        raise ValueError(f"epsilon 'auto' is chosen by the SD-FM potential job; method {method!r} takes a number")
    coupling = make_coupling(method, flat, labels=labels, num_classes=num_classes, epsilon_rel=epsilon_rel,
                             potential=potential, beta=beta,
                             conditions=conditions.to(device) if conditions is not None else None,
                             **({"ot_batch_size": ot_batch_size, "epsilon_reference": epsilon_reference}
                                if method == "otfm" else {}))
    kwargs = model_kwargs(model_settings)
    model_extra = {}
    if conditional:
        model_extra["num_classes"] = num_classes
    if superres:
        model_extra.update({"cond_channels": low_shape[0], "cond_size": list(low_shape[1:])})
    if train_settings.get("objective") == "meanflow":
        model_extra["mean_flow"] = True
    torch.manual_seed(seed)
    model = build_model(model_settings["kind"], data.sample_shape, **kwargs, **model_extra).to(device)
    config = TrainConfig(seed=seed, progress=ctx.progress, **_train_config_fields(train_settings))
    key = {"stage": "train", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
           "model": model_settings, "train": train_settings, **method_key}
    tags.update(method_key)
    if method == "sdfm":  # which MIPS pairs the batches (sdfm.ot.SemidiscretePotential.assign's rule)
        tags["pairing_backend"] = coupling.pairing_backend(config.batch_size)
    if conditional:
        key["conditional"] = conditional
    if superres:
        key["superres"] = superres
    if "pca_dim" in tags:
        key["pca_dim"] = tags["pca_dim"]
    name = f"train/{dataset}/{method}/eps{'auto' if tags.get('epsilon_auto') else f'{epsilon_rel:g}'}/seed{seed}"
    tracked = job_run(ctx.experiment, name, key, tags, ctx.results_dir, data_path) if rank == 0 else _silent_run()
    with tracked as run:
        run.log_params({"method": method, "epsilon_rel": epsilon_rel, "seed": seed,
                        **({"pairing_backend": tags["pairing_backend"]} if "pairing_backend" in tags else {}),
                        **method_key,
                        **({"beta": beta, "num_classes": num_classes} if conditional else {}),
                        **({"beta": beta, "superres_factor": superres["factor"]} if superres else {}),
                        **{f"model.{k}": v for k, v in model_settings.items()},
                        **{f"train.{k}": v for k, v in train_settings.items()}})
        result = train(model, coupling, config, sample_shape=data.sample_shape, checkpoint_path=checkpoint,
                       log_fn=lambda step, values: run.log_metrics(values, step=step))
        if rank != 0:  # rank 0 writes the model and the summary
            return {"pairing_seconds": result.pairing_seconds, "step_seconds": result.step_seconds,
                    "final_loss": result.losses[-1] if result.losses else float("nan")}
        stats = {"pairing_seconds": result.pairing_seconds, "step_seconds": result.step_seconds,
                 "pairing_share": result.pairing_seconds / max(result.pairing_seconds + result.step_seconds, 1e-12),
                 "final_loss": result.losses[-1] if result.losses else float("nan")}
        if ot_batch_size is not None:  # the OT plans: how many, and the pairing time per training pair
            stats.update({"ot_plans": coupling.plans_solved,
                          "ot_seconds_per_pair": coupling.plan_seconds / max(coupling.plans_solved * ot_batch_size, 1)})
        run.log_metrics(stats)
        if ctx.log_model:
            run.log_torch_model(result.ema_model)
        atomic_torch_save({"model": result.ema_model.state_dict(), "model_settings": model_settings,
                           "model_extra": model_extra, "conditional": conditional, "superres": superres,
                           "objective": config.objective, "sample_shape": list(data.sample_shape),
                           "num_classes": data.num_classes, "train_stats": stats, "mlflow_run_id": run.run_id,
                           "epsilon_rel": epsilon_rel, "epsilon_auto": bool(tags.get("epsilon_auto")),
                           "epsilon_abs": tags.get("epsilon_abs")}, out)
        atomic_write_json(Path(out).with_suffix(".json"), {**tags, **stats, "mlflow_run_id": run.run_id})
    return stats


#: Config keys of ``train`` whose TrainConfig field is spelled otherwise.
_TRAIN_FIELDS = {"meanflow_time": "mean_flow_time", "meanflow_adaptive_power": "adaptive_power"}


def _train_config_fields(train_settings: dict) -> dict:
    """The ``train`` settings as :class:`TrainConfig` keyword arguments (MeanFlow keys renamed)."""
    return {_TRAIN_FIELDS.get(key, key): value for key, value in train_settings.items()}


@contextlib.contextmanager
def _silent_run():
    """What a rank other than 0 logs to: nothing."""

    class Silent:
        run_id = None

        def log_params(self, *_, **__):
            pass

        def log_metrics(self, *_, **__):
            pass

    yield Silent()
