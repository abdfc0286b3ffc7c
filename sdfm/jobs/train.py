"""Job ``train``: train one velocity field for (data set, method, relative epsilon, seed)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sdfm.couplings import make_coupling
from sdfm.data import DataError, load_prepared
from sdfm.io import atomic_torch_save, atomic_write_json
from sdfm.jobs.common import JobContext, pick_device
from sdfm.jobs.potential import problem_targets
from sdfm.models import build_model
from sdfm.ot.pca import load_potential
from sdfm.tracking import job_run, run_key
from sdfm.train import TrainConfig, train

__all__ = ["train_job", "load_trained"]


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
) -> dict:
    """Train, then save ``{"model": EMA weights, "model_settings", "sample_shape", ...}`` to ``out``.

    ``superres = {"factor": f, "beta": beta}`` trains a super-resolution model: each pair carries
    the condition ``z`` (a low-resolution image, :mod:`sdfm.superres`) fed to the UNet as extra
    channels, and pairs are drawn with the cost ``c_X + beta |z - z'|^2``.

    ``conditional = {"beta": beta}`` trains a class-conditional model (``num_classes`` labels plus
    a null class for guidance) on pairs drawn with the augmented cost ``c_X + beta c_Z``; for
    ``sdfm`` the potential must then have been fitted with the same ``conditional``. A
    ``train_settings["objective"] == "meanflow"`` model also takes the start time r.
    """
    device = pick_device(device)
    data = load_prepared(data_path)
    flat = data.flat_train().to(device)
    potential = None
    tags = {"stage": "train", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed}
    labels = num_classes = beta = None
    if conditional:
        if data.num_classes is None:
            raise DataError(f"data set {dataset!r} has no labels: remove 'conditional' from its config entry")
        labels, num_classes, beta = data.train_labels.to(device), data.num_classes, float(conditional["beta"])
        tags["beta"] = beta
    conditions = low_shape = None
    if superres:
        from sdfm.superres import check_factor, low_res

        if conditional:
            raise DataError(f"data set {dataset!r}: 'conditional' and 'superres' exclude each other; keep one")
        low_shape = check_factor(data, dataset, int(superres["factor"]))
        conditions, beta = low_res(data.train, int(superres["factor"])), float(superres["beta"])
        tags.update({"beta": beta, "superres_factor": int(superres["factor"])})
    if method == "sdfm":
        if potential_path is None:
            raise ValueError("method 'sdfm' needs --potential, the file written by fit-potential")
        keys, _ = problem_targets(data, dataset, conditional, superres)  # the keys its potential job fitted
        potential = load_potential(potential_path, y=keys, device=device)  # full-space or PCA (sdfm.ot.pca)
        if getattr(potential, "pca_dim", None) is not None:
            tags["pca_dim"] = potential.pca_dim
        tags["potential_run_key"] = run_key({"path": str(Path(potential_path).resolve())})
        tags["potential_mlflow_run_id"] = potential.history.get("mlflow_run_id", "")
        if epsilon_rel == "auto":  # the value its potential job chose (sdfm.jobs.auto_epsilon)
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
                             conditions=conditions.to(device) if conditions is not None else None)
    model_kwargs = _model_kwargs(model_settings)
    model_extra = {}
    if conditional:
        model_extra["num_classes"] = num_classes
    if superres:
        model_extra.update({"cond_channels": low_shape[0], "cond_size": list(low_shape[1:])})
    if train_settings.get("objective") == "meanflow":
        model_extra["mean_flow"] = True
    torch.manual_seed(seed)
    model = build_model(model_settings["kind"], data.sample_shape, **model_kwargs, **model_extra).to(device)
    config = TrainConfig(seed=seed, progress=ctx.progress, **train_settings)
    key = {"stage": "train", "dataset": dataset, "method": method, "epsilon_rel": epsilon_rel, "seed": seed,
           "model": model_settings, "train": train_settings}
    if conditional:
        key["conditional"] = conditional
    if superres:
        key["superres"] = superres
    if "pca_dim" in tags:
        key["pca_dim"] = tags["pca_dim"]
    name = f"train/{dataset}/{method}/eps{'auto' if tags.get('epsilon_auto') else f'{epsilon_rel:g}'}/seed{seed}"
    with job_run(ctx.experiment, name, key, tags, ctx.results_dir) as run:
        run.log_params({"method": method, "epsilon_rel": epsilon_rel, "seed": seed,
                        **({"beta": beta, "num_classes": num_classes} if conditional else {}),
                        **({"beta": beta, "superres_factor": superres["factor"]} if superres else {}),
                        **{f"model.{k}": v for k, v in model_settings.items()},
                        **{f"train.{k}": v for k, v in train_settings.items()}})
        result = train(model, coupling, config, sample_shape=data.sample_shape, checkpoint_path=checkpoint,
                       log_fn=lambda step, values: run.log_metrics(values, step=step))
        stats = {"pairing_seconds": result.pairing_seconds, "step_seconds": result.step_seconds,
                 "pairing_share": result.pairing_seconds / max(result.pairing_seconds + result.step_seconds, 1e-12),
                 "final_loss": result.losses[-1] if result.losses else float("nan")}
        run.log_metrics(stats)
        atomic_torch_save({"model": result.ema_model.state_dict(), "model_settings": model_settings,
                           "model_extra": model_extra, "conditional": conditional, "superres": superres,
                           "objective": config.objective, "sample_shape": list(data.sample_shape),
                           "num_classes": data.num_classes, "train_stats": stats, "mlflow_run_id": run.run_id,
                           "epsilon_rel": epsilon_rel, "epsilon_auto": bool(tags.get("epsilon_auto"))}, out)
        atomic_write_json(Path(out).with_suffix(".json"), {**tags, **stats, "mlflow_run_id": run.run_id})
    return stats


def _model_kwargs(settings: dict) -> dict:
    """Constructor arguments of ``build_model`` from the config's model settings (lists -> tuples)."""
    kwargs = {k: v for k, v in settings.items() if k != "kind"}
    for key in ("channel_mults", "attention_resolutions"):
        if key in kwargs:
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def load_trained(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the (EMA) velocity field saved by :func:`train_job`; return ``(model, saved_state)``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    settings = state["model_settings"]
    kwargs = _model_kwargs(settings)
    model = build_model(settings["kind"], tuple(state["sample_shape"]), **kwargs, **state.get("model_extra", {}))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
