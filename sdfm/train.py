"""The training loop: any coupling, the FM or MeanFlow objective, EMA, and exact resumption.

Each step draws a :class:`~sdfm.couplings.PairBatch` from the coupling, reshapes the flat pairs
to ``sample_shape``, and takes one Adam step on the objective of :mod:`sdfm.objectives` with a
linear learning-rate warm-up ``lr_k = lr * min(1, (k + 1) / warmup_steps)`` and global-norm
gradient clipping. An exponential moving average of the weights is kept with decay
``min(ema_decay, (1 + k) / (10 + k))`` (a warm start, so short runs are not biased to the
initialisation).

Randomness. Noise, data indices, times and label-dropout masks come from one
``torch.Generator`` on the model's device seeded with ``config.seed``; layers such as dropout
use torch's global generator, which the loop forks (the caller's state is left untouched) and
seeds with ``config.seed`` too. A checkpoint stores the weights, the EMA, the optimiser, the
step, the generator state, the global RNG state(s) and the losses, so a run killed after a
checkpoint and resumed gives bit-identical weights to an uninterrupted run on the same device.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from sdfm.couplings import Coupling
from sdfm.io import atomic_torch_save
from sdfm.objectives import objective_loss

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train"]

#: TrainConfig fields that may change between a checkpoint and its resumption.
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "progress"}


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the last checkpoint is kept."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        steps: total optimisation steps.
        batch_size: pairs per step.
        lr: peak Adam learning rate.
        warmup_steps: steps of linear warm-up (0: none).
        grad_clip: maximum global gradient norm (``None`` or 0: no clipping).
        ema_decay: decay of the weight EMA.
        objective: ``"fm"`` or ``"meanflow"``.
        label_dropout: probability of replacing a label by the null class; ``None`` uses the
            model's ``class_dropout`` attribute (0 when it has none). Only used by models built
            with ``num_classes``.
        checkpoint_every: steps between checkpoints (0: only at the end, when a path is given).
        log_every: steps between ``log_fn`` calls.
        seed: seed of all the randomness of the run.
        progress: show a tqdm progress bar.
        mean_flow_equal_fraction: fraction of MeanFlow pairs with r = t.
        adaptive_power: MeanFlow adaptive loss weighting exponent (0: plain MSE).
    """

    steps: int
    batch_size: int
    lr: float = 1e-3
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    ema_decay: float = 0.999
    objective: str = "fm"
    label_dropout: float | None = None
    checkpoint_every: int = 0
    log_every: int = 50
    seed: int = 0
    progress: bool = True
    mean_flow_equal_fraction: float = 0.75
    adaptive_power: float = 0.0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"need steps >= 0 and batch_size >= 1, got {self.steps} and {self.batch_size}")
        if self.objective not in ("fm", "meanflow"):
            raise ValueError(f"objective must be 'fm' or 'meanflow', got {self.objective!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class TrainResult:
    """Output of :func:`train`: the trained and EMA models, per-step losses, and timings (seconds)."""

    model: nn.Module
    ema_model: nn.Module
    losses: list[float] = field(default_factory=list)
    pairing_seconds: float = 0.0
    step_seconds: float = 0.0


def _lr_at(config: TrainConfig, step: int) -> float:
    if config.warmup_steps <= 0:
        return config.lr
    return config.lr * min(1.0, (step + 1) / config.warmup_steps)


@torch.no_grad()
def _update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _rng_devices(device: torch.device) -> list[int]:
    return [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []


def _comparable(config: TrainConfig) -> dict:
    return {k: v for k, v in asdict(config).items() if k not in _RESUMABLE_CHANGES}


def train(
    model: nn.Module,
    coupling: Coupling,
    config: TrainConfig,
    *,
    sample_shape: tuple[int, ...],
    checkpoint_path: str | Path | None = None,
    log_fn: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on pairs from ``coupling``; resume from ``checkpoint_path`` if it exists.

    Args:
        model: a velocity network on the device to train on.
        coupling: the pair sampler (flat pairs; reshaped to ``sample_shape`` here).
        config: the :class:`TrainConfig`.
        sample_shape: shape of one sample as the model takes it, e.g. ``(2,)`` or ``(1, 28, 28)``.
        checkpoint_path: where checkpoints are written atomically and read back on start.
        log_fn: called as ``log_fn(step, {"loss": ..., "lr": ...})`` every ``log_every`` steps.

    Raises:
        TrainingDiverged: on a NaN/inf loss or gradient norm; no checkpoint is written for it.
        ValueError: when the checkpoint was written under different settings.
    """
    device = next(model.parameters()).device
    sample_shape = tuple(sample_shape)
    conditional = getattr(model, "num_classes", None) is not None
    label_dropout = config.label_dropout if config.label_dropout is not None else getattr(model, "class_dropout", 0.0)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    step, losses, pairing_seconds, step_seconds = 0, [], 0.0, 0.0

    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(config.seed)
        if path is not None and path.exists():
            state = torch.load(path, map_location=device, weights_only=False)
            if state["config"] != _comparable(config):
                raise ValueError(f"{path} was written with other settings {state['config']}: delete it or match them")
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            if state["cuda_rng"] is not None and device.type == "cuda":
                torch.cuda.set_rng_state(state["cuda_rng"], device)
            step, losses = state["step"], list(state["losses"])
            pairing_seconds, step_seconds = state["pairing_seconds"], state["step_seconds"]

        def save() -> None:
            atomic_torch_save(
                {
                    "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(),
                    "step": step, "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "losses": losses, "pairing_seconds": pairing_seconds, "step_seconds": step_seconds,
                    "config": _comparable(config),
                },
                path,
            )

        model.train()
        bar = tqdm(total=config.steps, initial=min(step, config.steps), desc=f"train {coupling.name}",
                   disable=not config.progress, leave=False)
        saved_at = step
        while step < config.steps:
            batch = coupling.sample(config.batch_size, generator)
            pairing_seconds += batch.pairing_seconds
            start = time.perf_counter()
            x0 = batch.x0.to(device).reshape(-1, *sample_shape)
            x1 = batch.x1.to(device).reshape(-1, *sample_shape)
            labels = batch.labels.to(device) if conditional and batch.labels is not None else None
            # An image-conditioned model (super-resolution) sees the pair's condition as extra channels.
            net = model
            if getattr(model, "cond_channels", 0) and batch.condition is not None:
                net = functools.partial(model, cond=batch.condition.to(device))
            lr = _lr_at(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = objective_loss(
                config.objective, net, x0, x1, generator, labels=labels, label_dropout=label_dropout,
                mean_flow_equal_fraction=config.mean_flow_equal_fraction, adaptive_power=config.adaptive_power,
            )
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss is {value} at step {step + 1}; last checkpoint at step {saved_at} kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
                if not math.isfinite(norm):
                    raise TrainingDiverged(
                        f"gradient norm is {norm} at step {step + 1}; last checkpoint at step {saved_at} kept"
                    )
            optimizer.step()
            _update_ema(ema, model, min(config.ema_decay, (1.0 + step) / (10.0 + step)))
            step += 1
            losses.append(value)
            step_seconds += time.perf_counter() - start
            # Log before checkpointing: a job killed in between resumes after this step, so a
            # value logged only after the checkpoint would never be logged.
            if log_fn is not None and config.log_every and step % config.log_every == 0:
                log_fn(step, {"loss": value, "lr": lr})
            if path is not None and config.checkpoint_every and step % config.checkpoint_every == 0:
                save()
                saved_at = step
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        if path is not None and saved_at != step:
            save()
    return TrainResult(model, ema, losses, pairing_seconds, step_seconds)
