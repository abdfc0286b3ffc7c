"""Job ``train``: train one velocity field for (data set, method, relative epsilon, seed)."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
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
    ot_batch_size, method_key = _ot_plan_options(method, ot_batch_size, epsilon_reference,
                                                 train_settings.get("batch_size"))
    device, rank, world = _join_ranks(distributed, processes, device)
    data = load_prepared(data_path)
    tags = {"stage": "train", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
            **({"train_processes": world} if world > 1 else {})}
    cond = _conditioning(data, dataset, conditional, superres, device, tags)
    potential, epsilon_rel = _potential(method, potential_path, data, cond, device, epsilon_rel, tags)
    coupling = _coupling(method, data.flat_train().to(device), cond, potential, epsilon_rel, ot_batch_size,
                         epsilon_reference, device)
    model_extra = _model_extra(cond, train_settings)
    model = _build_model(model_settings, data.sample_shape, model_extra, seed, device)
    config = TrainConfig(seed=seed, progress=ctx.progress, **_train_config_fields(train_settings))
    tags.update(method_key)
    if method == "sdfm":  # which MIPS pairs the batches (sdfm.ot.SemidiscretePotential.assign's rule)
        tags["pairing_backend"] = coupling.pairing_backend(config.batch_size)
    key = {"stage": "train", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
           "model": model_settings, "train": train_settings, **method_key, **cond.key(),
           **({"pca_dim": tags["pca_dim"]} if "pca_dim" in tags else {})}
    name = f"train/{dataset}/{method}/eps{'auto' if tags.get('epsilon_auto') else f'{epsilon_rel:g}'}/seed{seed}"
    tracked = job_run(ctx.experiment, name, key, tags, ctx.results_dir, data_path) if rank == 0 else _silent_run()
    with tracked as run:
        run.log_params(_train_params(method, epsilon_rel, seed, tags, method_key, cond, model_settings,
                                     train_settings))
        result = train(model, coupling, config, sample_shape=data.sample_shape, checkpoint_path=checkpoint,
                       log_fn=lambda step, values: run.log_metrics(values, step=step))
        stats = _train_stats(result, coupling, ot_batch_size)
        if rank != 0:  # rank 0 writes the model and the summary
            return {k: stats[k] for k in ("pairing_seconds", "step_seconds", "final_loss")}
        run.log_metrics(stats)
        if ctx.log_model:
            run.log_torch_model(result.ema_model)
        settings = {"model_settings": model_settings, "model_extra": model_extra, "conditional": conditional,
                    "superres": superres, "objective": config.objective}
        _write_model(out, result.ema_model, settings, data, stats, run.run_id, epsilon_rel, tags)
    return stats


def _ot_plan_options(method: str, ot_batch_size: int | None, epsilon_reference: str,
                     batch_size: int | None) -> tuple[int | None, dict]:
    """``(ot_batch_size, method_key)``: OT-FM's plan size (None: plans of the training batch itself, and for
    the other methods) and its plan options in the run key, each only when not the default."""
    if method != "otfm" or ot_batch_size == batch_size:
        ot_batch_size = None  # the training batch is the OT batch: the plain per-batch coupling
    return ot_batch_size, {**({"ot_batch_size": ot_batch_size} if ot_batch_size is not None else {}),
                           **({"epsilon_reference": epsilon_reference}
                              if method == "otfm" and epsilon_reference != "inner_product" else {})}


def _join_ranks(distributed: bool, processes: int, device: str | None) -> tuple[torch.device, int, int]:
    """``(device, rank, world size)``: the torch.distributed world joined when ``distributed``, else one process.

    ``train.processes`` must match the world (the ranks torchrun started); above 1 it needs ``distributed``.
    """
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
    return pick_device(device), rank, world


@dataclass
class _Conditioning:
    """What a pair is conditioned on: a class label (``conditional``) or a low-resolution image (``superres``).

    ``beta`` weighs the condition's cost in the pairing (``c_X + beta c_Z``); ``low_shape`` is the
    shape of a low-resolution image (the UNet's extra input channels).
    """

    dataset: str
    conditional: dict | None = None
    superres: dict | None = None
    labels: torch.Tensor | None = None
    num_classes: int | None = None
    beta: float | None = None
    conditions: torch.Tensor | None = None
    low_shape: tuple | None = None

    def key(self) -> dict:
        """The conditioning's part of the run key (nothing when there is none)."""
        return {**({"conditional": self.conditional} if self.conditional else {}),
                **({"superres": self.superres} if self.superres else {})}

    def params(self) -> dict:
        """The conditioning's MLflow parameters."""
        return {**({"beta": self.beta, "num_classes": self.num_classes} if self.conditional else {}),
                **({"beta": self.beta, "superres_factor": self.superres["factor"]} if self.superres else {})}


def _conditioning(data, dataset: str, conditional: dict | None, superres: dict | None, device,
                  tags: dict) -> _Conditioning:
    """The conditioning of the pairs (checked against the data set); its settings go to ``tags``."""
    cond = _Conditioning(dataset, conditional, superres)
    if conditional:
        if data.num_classes is None:
            raise DataError(f"data set {dataset!r} has no labels: remove 'conditional' from its config entry")
        cond.labels, cond.num_classes = data.train_labels.to(device), data.num_classes
        cond.beta = tags["beta"] = float(conditional["beta"])
    if superres:
        from sdfm.fm.superres import check_factor, low_res

        if conditional:
            raise DataError(f"data set {dataset!r}: 'conditional' and 'superres' exclude each other; keep one")
        cond.low_shape = check_factor(data, dataset, int(superres["factor"]))
        cond.conditions, cond.beta = low_res(data.train, int(superres["factor"])), float(superres["beta"])
        tags.update({"beta": cond.beta, "superres_factor": int(superres["factor"])})
    return cond


def _potential(method: str, potential_path, data, cond: _Conditioning, device, epsilon_rel, tags: dict):
    """``(potential, epsilon_rel)``: SD-FM's potential file, loaded against the keys its potential job fitted.

    Its provenance (run key, MLflow run, absolute epsilon, PCA dimension) goes to ``tags``; a relative
    epsilon ``"auto"`` becomes the number that job chose (:mod:`sdfm.ot.auto_epsilon`). The other methods
    have no potential (None) and need a numeric epsilon.
    """
    if method != "sdfm":
        if epsilon_rel == "auto":
            raise ValueError(f"epsilon 'auto' is chosen by the SD-FM potential job; method {method!r} takes a number")
        return None, epsilon_rel
    if potential_path is None:
        raise ValueError("method 'sdfm' needs --potential, the file written by fit-potential")
    keys = potential_problem(data, cond.dataset, cond.conditional, cond.superres).keys  # what its potential job fitted
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
    return potential, epsilon_rel


def _coupling(method: str, flat: torch.Tensor, cond: _Conditioning, potential, epsilon_rel: float,
              ot_batch_size: int | None, epsilon_reference: str, device):
    """The method's pairing of noise with the (flattened) training points, conditioned as ``cond`` says."""
    return make_coupling(method, flat, labels=cond.labels, num_classes=cond.num_classes, epsilon_rel=epsilon_rel,
                         potential=potential, beta=cond.beta,
                         conditions=cond.conditions.to(device) if cond.conditions is not None else None,
                         **({"ot_batch_size": ot_batch_size, "epsilon_reference": epsilon_reference}
                            if method == "otfm" else {}))


def _build_model(model_settings: dict, sample_shape, model_extra: dict, seed: int, device) -> torch.nn.Module:
    """The velocity field to train, its initial weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return build_model(model_settings["kind"], sample_shape, **model_kwargs(model_settings), **model_extra).to(device)


def _model_extra(cond: _Conditioning, train_settings: dict) -> dict:
    """The model's arguments beyond its settings: the class count, the condition's shape, a MeanFlow start time."""
    model_extra = {}
    if cond.conditional:
        model_extra["num_classes"] = cond.num_classes
    if cond.superres:
        model_extra.update({"cond_channels": cond.low_shape[0], "cond_size": list(cond.low_shape[1:])})
    if train_settings.get("objective") == "meanflow":
        model_extra["mean_flow"] = True
    return model_extra


def _train_params(method: str, epsilon_rel: float, seed: int, tags: dict, method_key: dict, cond: _Conditioning,
                  model_settings: dict, train_settings: dict) -> dict:
    """The run's MLflow parameters: the method, its pairing, conditioning, model and training settings."""
    return {"method": method, "epsilon_rel": epsilon_rel, "seed": seed,
            **({"pairing_backend": tags["pairing_backend"]} if "pairing_backend" in tags else {}),
            **method_key, **cond.params(),
            **{f"model.{k}": v for k, v in model_settings.items()},
            **{f"train.{k}": v for k, v in train_settings.items()}}


def _write_model(out, ema_model, settings: dict, data, stats: dict, run_id, epsilon_rel: float, tags: dict) -> None:
    """The model file (EMA weights with what sampling needs to rebuild it) and its JSON summary beside it.

    ``settings``: model_settings, model_extra, conditional, superres and objective, stored as given.
    """
    atomic_torch_save({"model": ema_model.state_dict(), **settings, "sample_shape": list(data.sample_shape),
                       "num_classes": data.num_classes, "train_stats": stats, "mlflow_run_id": run_id,
                       "epsilon_rel": epsilon_rel, "epsilon_auto": bool(tags.get("epsilon_auto")),
                       "epsilon_abs": tags.get("epsilon_abs")}, out)
    atomic_write_json(Path(out).with_suffix(".json"), {**tags, **stats, "mlflow_run_id": run_id})


def _train_stats(result, coupling, ot_batch_size: int | None) -> dict:
    """The run's summary: pairing and step seconds, the pairing's share of them, the last loss (and OT plans)."""
    stats = {"pairing_seconds": result.pairing_seconds, "step_seconds": result.step_seconds,
             "pairing_share": result.pairing_seconds / max(result.pairing_seconds + result.step_seconds, 1e-12),
             "final_loss": result.losses[-1] if result.losses else float("nan")}
    if ot_batch_size is not None:  # the OT plans: how many, and the pairing time per training pair
        stats.update({"ot_plans": coupling.plans_solved,
                      "ot_seconds_per_pair": coupling.plan_seconds / max(coupling.plans_solved * ot_batch_size, 1)})
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
