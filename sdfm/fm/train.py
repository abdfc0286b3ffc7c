"""The training loop: any coupling, the FM or MeanFlow objective, EMA, and exact resumption.

Each step draws a :class:`~sdfm.fm.couplings.PairBatch` from the coupling, reshapes the flat pairs
to ``sample_shape``, and takes one Adam step on the objective of :mod:`sdfm.fm.objectives` with a
linear learning-rate warm-up ``lr_k = lr * min(1, (k + 1) / warmup_steps)`` and global-norm
gradient clipping. An exponential moving average of the weights is kept with decay
``min(ema_decay, (1 + k) / (10 + k))`` (a warm start, so short runs are not biased to the
initialisation).

Randomness. Noise, data indices, times and label-dropout masks come from one
``torch.Generator`` on the model's device seeded with ``config.seed``; layers such as dropout
use torch's global generator, which the loop forks (the caller's state is left untouched) and
seeds with ``config.seed`` too. A checkpoint stores the weights, the EMA, the optimiser, the
step, the generator state, the global RNG state(s), the losses and the state of a coupling that
keeps one between batches (``state_dict()``: the OT plan of :class:`~sdfm.fm.couplings.PlanOTCoupling`,
the same on every rank), so a run killed after a checkpoint and resumed gives bit-identical
weights to an uninterrupted run on the same device.

Precision (``precision``). ``"fp32"``: float32 everywhere (TF32 tensor-core matmuls and
convolutions off). ``"tf32"``: float32 weights and activations, matmuls and convolutions in TF32
on GPUs that have it (no effect on CPU). ``"bf16"``: the forward pass and the loss run under
``torch.autocast(bfloat16)`` while the weights, their gradients, Adam's moments and the EMA stay
float32 (the master copy); MeanFlow's JVP runs under the same autocast (its target agrees with
the float32 one to bfloat16 accuracy, checked by the tests).

Data parallelism. Inside a torch.distributed process group (``torchrun``, :mod:`sdfm.fm.data_parallel`)
each of K ranks draws the random numbers of the global batch, pairs and differentiates its
``batch_size / K`` rows, and the gradients are averaged over the ranks before clipping and Adam:
the run equals a one-process run of the same global batch up to float summation order (for
couplings and models whose randomness is all drawn from the generator, see
:mod:`sdfm.fm.couplings`). Rank 0 logs and writes the checkpoint, which holds every rank's generator
and RNG states, so a killed K-rank run resumes exactly on K ranks.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import contextlib

import torch
from torch import nn

from sdfm.fm import data_parallel
from sdfm.fm.couplings import Coupling
from sdfm.fm.objectives import objective_loss
from sdfm.io import atomic_torch_save
from sdfm.progress import Progress

__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "train"]

#: TrainConfig fields that may change between a checkpoint and its resumption.
_RESUMABLE_CHANGES = {"steps", "checkpoint_every", "log_every", "progress"}


class TrainingDiverged(RuntimeError):
    """The loss (or the gradient norm) became NaN or infinite; the last checkpoint is kept."""


#: TrainConfig fields added after checkpoints were first written, with the value those had.
_ADDED_FIELDS = {"precision": "fp32", "mean_flow_time": None}
PRECISIONS = ("fp32", "tf32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train`.

    Attributes:
        steps: total optimisation steps.
        batch_size: pairs per step (the global batch: split over the ranks of a distributed run).
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
        progress: show step, loss, steps/s and ETA (a tqdm bar on a terminal, else a line every N s).
        mean_flow_equal_fraction: fraction of MeanFlow pairs with r = t.
        adaptive_power: MeanFlow adaptive loss weighting exponent p (0: plain MSE; see
            :mod:`sdfm.fm.objectives`).
        mean_flow_time: MeanFlow time distribution ``{"distribution": "uniform" | "logit_normal",
            "mean", "std"}`` (:func:`sdfm.fm.objectives.draw_unit_times`); None: uniform.
        precision: ``"fp32"``, ``"tf32"`` or ``"bf16"`` (autocast with float32 master weights),
            see the module docstring.
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
    precision: str = "fp32"
    mean_flow_time: dict | None = None

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError(f"need steps >= 0 and batch_size >= 1, got {self.steps} and {self.batch_size}")
        if self.objective not in ("fm", "meanflow"):
            raise ValueError(f"objective must be 'fm' or 'meanflow', got {self.objective!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")


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


@contextlib.contextmanager
def precision_scope(precision: str, device: torch.device):
    """TF32 switches for ``precision`` while training (restored after); yields the autocast to run
    the forward pass and the loss under (bfloat16 for ``"bf16"``, disabled otherwise)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class _Run:
    """The mutable state of one training run and its checkpoint (every rank's RNG states)."""

    def __init__(self, model, ema, optimizer, generator, device, config, path, coupling=None):
        self.model, self.ema, self.optimizer, self.generator = model, ema, optimizer, generator
        # A coupling with state between batches (PlanOTCoupling's plan) saves and restores it with the run.
        self.coupling = coupling if hasattr(coupling, "state_dict") else None
        self.device, self.config, self.path = device, config, path
        self.step, self.losses, self.pairing_seconds, self.step_seconds = 0, [], 0.0, 0.0
        self.sampled_at = 0.0

    def _rng(self) -> dict:
        return {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def restore(self) -> None:
        state = torch.load(self.path, map_location=self.device, weights_only=False)
        if {**_ADDED_FIELDS, **state["config"]} != _comparable(self.config):
            raise ValueError(f"{self.path} was written with other settings {state['config']}: delete it or match them")
        rank, world = data_parallel.rank_and_world()
        ranks = state.get("ranks", [{k: state[k] for k in ("generator", "torch_rng", "cuda_rng")}])
        if len(ranks) != world:
            raise ValueError(f"{self.path} was written by {len(ranks)} processes, this run has {world}: "
                             f"resume with train.processes: {len(ranks)} or delete it")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        mine = ranks[rank]
        self.generator.set_state(mine["generator"].cpu())
        torch.set_rng_state(mine["torch_rng"].cpu())
        if mine["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"].cpu(), self.device)
        if self.coupling is not None:
            if "coupling" not in state:
                raise ValueError(f"{self.path} holds no state of the {self.coupling.name} coupling's plans: delete it")
            self.coupling.load_state_dict(state["coupling"])
        self.step, self.losses = state["step"], list(state["losses"])
        self.pairing_seconds, self.step_seconds = state["pairing_seconds"], state["step_seconds"]

    def save(self) -> None:
        ranks = data_parallel.gather({k: (v.cpu() if torch.is_tensor(v) else v) for k, v in self._rng().items()})
        if data_parallel.is_main():
            atomic_torch_save({"model": self.model.state_dict(), "ema": self.ema.state_dict(),
                               "optimizer": self.optimizer.state_dict(), "step": self.step, **ranks[0],
                               "ranks": ranks, "losses": self.losses, "pairing_seconds": self.pairing_seconds,
                               "step_seconds": self.step_seconds, "config": _comparable(self.config),
                               **({"coupling": self.coupling.state_dict()} if self.coupling is not None else {})},
                              self.path)


def _loss(run: _Run, coupling: Coupling, sample_shape, rows, conditional: bool, label_dropout: float, autocast):
    """Draw this rank's pairs and return their loss (under the precision's autocast)."""
    config, device = run.config, run.device
    batch = (coupling.sample(config.batch_size, run.generator, rows=rows) if rows is not None
             else coupling.sample(config.batch_size, run.generator))
    run.pairing_seconds += batch.pairing_seconds
    run.sampled_at = time.perf_counter()  # the update's time (step_seconds) starts once the pairs are drawn
    x0 = batch.x0.to(device).reshape(-1, *sample_shape)
    x1 = batch.x1.to(device).reshape(-1, *sample_shape)
    labels = batch.labels.to(device) if conditional and batch.labels is not None else None
    # An image-conditioned model (super-resolution) sees the pair's condition as extra channels.
    net = run.model
    if getattr(run.model, "cond_channels", 0) and batch.condition is not None:
        net = functools.partial(run.model, cond=batch.condition.to(device))
    with autocast():
        return objective_loss(
            config.objective, net, x0, x1, run.generator, labels=labels, label_dropout=label_dropout,
            mean_flow_equal_fraction=config.mean_flow_equal_fraction, adaptive_power=config.adaptive_power,
            mean_flow_time=config.mean_flow_time,
            **({"rows": rows, "n_total": config.batch_size} if rows is not None else {}),
        ).float()


def _gradient_step(run: _Run, loss: torch.Tensor, saved_at: int) -> None:
    """Backward, the ranks' gradient average, clipping (a non-finite norm raises), the Adam step and the EMA."""
    model, config = run.model, run.config
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    data_parallel.average_gradients(model)
    if config.grad_clip:
        norm = float(nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
        if not math.isfinite(norm):
            raise TrainingDiverged(f"gradient norm is {norm} at step {run.step + 1}; last checkpoint at step {saved_at} kept")
    run.optimizer.step()
    _update_ema(run.ema, model, min(config.ema_decay, (1.0 + run.step) / (10.0 + run.step)))


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

    Inside a torch.distributed process group every rank calls this with the same arguments
    (its own copy of the model, the same seed); see the module docstring.

    Args:
        model: a velocity network on the device to train on.
        coupling: the pair sampler (flat pairs; reshaped to ``sample_shape`` here).
        config: the :class:`TrainConfig`.
        sample_shape: shape of one sample as the model takes it, e.g. ``(2,)`` or ``(1, 28, 28)``.
        checkpoint_path: where checkpoints are written atomically and read back on start.
        log_fn: called as ``log_fn(step, {"loss": ..., "lr": ...})`` every ``log_every`` steps (rank 0).

    Raises:
        TrainingDiverged: on a NaN/inf loss or gradient norm; no checkpoint is written for it.
        ValueError: when the checkpoint was written under different settings.
    """
    device = next(model.parameters()).device
    sample_shape = tuple(sample_shape)
    conditional = getattr(model, "num_classes", None) is not None
    label_dropout = config.label_dropout if config.label_dropout is not None else getattr(model, "class_dropout", 0.0)
    rank, world = data_parallel.rank_and_world()
    rows = data_parallel.batch_rows(config.batch_size, rank, world)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    run = _Run(model, ema, torch.optim.Adam(model.parameters(), lr=config.lr), generator, device, config, path,
               coupling)

    with torch.random.fork_rng(devices=_rng_devices(device)), precision_scope(config.precision, device) as autocast:
        torch.manual_seed(config.seed)
        if path is not None and path.exists():
            run.restore()
        model.train()
        bar = Progress(config.steps, f"train {coupling.name}", initial=min(run.step, config.steps),
                       enabled=config.progress and rank == 0)
        saved_at = run.step
        while run.step < config.steps:
            lr = _lr_at(config, run.step)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            loss = _loss(run, coupling, sample_shape, rows, conditional, label_dropout, autocast)
            value = data_parallel.mean_value(loss)  # the global batch's loss, the same on every rank
            if not math.isfinite(value):
                raise TrainingDiverged(f"loss is {value} at step {run.step + 1}; last checkpoint at step {saved_at} kept")
            _gradient_step(run, loss, saved_at)
            run.step += 1
            run.losses.append(value)
            run.step_seconds += time.perf_counter() - run.sampled_at
            # Log before checkpointing: a job killed in between resumes after this step, so a
            # value logged only after the checkpoint would never be logged.
            if log_fn is not None and rank == 0 and config.log_every and run.step % config.log_every == 0:
                log_fn(run.step, {"loss": value, "lr": lr})
            if path is not None and config.checkpoint_every and run.step % config.checkpoint_every == 0:
                run.save()
                saved_at = run.step
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
        bar.close()
        if path is not None and saved_at != run.step:
            run.save()
    return TrainResult(model, ema, run.losses, run.pairing_seconds, run.step_seconds)
