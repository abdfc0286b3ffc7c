"""The state of one semi-dual SGD fit: its ascent step, iterate average, checkpoint and chi^2 evaluation.

The state is a dict: ``step``, the iterate ``g`` and its average ``g_avg`` (``n_avg`` terms for
Polyak), the SGD ``velocity`` or Adam's ``adam_m`` / ``adam_v``, ``next_eval`` and ``history``
(the chi^2 curve, the step size, the settings, epsilon and seed). A checkpoint is that dict with
the random generator's state; :func:`check_resumable` refuses one written for another problem.
The loop that drives it is :class:`sdfm.ot.solver.SemidiscreteSolver`.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import Tensor

from sdfm.io import atomic_torch_save
from sdfm.ot.chi2 import Chi2Estimate
from sdfm.ot.kernel import augment_queries, key_column, reduce_scores
from sdfm.ot.reducer import Reducer
from sdfm.ot.solver_config import SolverConfig

__all__ = ["EVAL_CHUNK_ELEMS", "Evaluation", "ascent_step", "average", "check_resumable", "is_diverging",
           "load_checkpoint", "potential_column", "save_checkpoint"]


def ascent_step(cfg: SolverConfig, state: dict, grad: Tensor, lr: float, step: int) -> None:
    """One ascent step on g in place: plain or Nesterov SGD, or Adam."""
    g = state["g"]
    if cfg.optimizer == "adam":
        state["adam_m"].mul_(0.9).add_(grad, alpha=0.1)
        state["adam_v"].mul_(0.999).addcmul_(grad, grad, value=0.001)
        m_hat = state["adam_m"] / (1 - 0.9**step)
        v_hat = state["adam_v"] / (1 - 0.999**step)
        g += lr * m_hat / (v_hat.sqrt() + 1e-12)
    elif cfg.momentum > 0:
        state["velocity"].mul_(cfg.momentum).add_(grad)
        g += lr * (grad + cfg.momentum * state["velocity"])
    else:
        g += lr * grad


def potential_column(g: Tensor, epsilon: float, log_b: Tensor) -> Tensor:
    """The potential column of the augmented keys: ``g + eps log b`` (``g`` at eps = 0)."""
    return g + epsilon * log_b if epsilon > 0 else g


def is_diverging(curve: list[float]) -> bool:
    """True when the last chi^2 is more than twice the best one seen (and above 0.05)."""
    return bool(curve) and curve[-1] > max(2 * min(curve), 0.05)


def save_checkpoint(path, state: dict, gen: torch.Generator) -> None:
    """Write the state and the generator's state to ``path`` atomically (tensors on the CPU)."""
    atomic_torch_save({**{k: (v.cpu() if torch.is_tensor(v) else v) for k, v in state.items()},
                       "generator": gen.get_state()}, path)


def load_checkpoint(path, gen: torch.Generator, device) -> dict:
    """The state saved at ``path`` (tensors on ``device``); ``gen`` is set to the saved generator state."""
    saved = torch.load(path, map_location="cpu", weights_only=False)
    gen.set_state(saved.pop("generator"))
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in saved.items()}


#: Solver settings that may change between a checkpoint and its resumption (they do not alter the path).
_RESUMABLE_CHANGES = ("steps", "progress", "chi2_threshold")


def check_resumable(path, state: dict, cfg: SolverConfig, n: int, epsilon: float, seed: int) -> None:
    """Refuse a checkpoint written by another problem or other settings: its resumption would not
    be the run asked for."""
    saved = state["history"].get("config", {})
    wanted, defaults = asdict(cfg), asdict(SolverConfig())
    # a key missing from an older checkpoint had its (then only) default value
    changed = [k for k in wanted if k not in _RESUMABLE_CHANGES and saved.get(k, defaults[k]) != wanted[k]]
    problem = state["g"].shape[0] != n or state["history"].get("epsilon", epsilon) != epsilon
    problem = problem or state["history"].get("seed", seed) != seed
    if changed or problem:
        what = f"settings {', '.join(changed)}" if changed else "data, epsilon or seed"
        raise ValueError(f"checkpoint {path} was written with other {what}: delete it to start afresh")


def average(cfg: SolverConfig, g: Tensor, g_avg: Tensor, n_avg: int, step: int):
    """The average after ``step``: ``(g_avg, n_avg)``, EMA (warm-started), Polyak after the burn-in, or the iterate."""
    if cfg.averaging == "none":
        return g.clone(), 0
    if cfg.averaging == "ema":
        decay = min(cfg.ema_decay, (1.0 + step) / (10.0 + step))  # bias-free warm start
        return g_avg.mul_(decay).add_(g, alpha=1 - decay), 0
    if step <= cfg.burn_in * cfg.steps:
        return g.clone(), 0
    n_avg += 1
    return g_avg.add_(g - g_avg, alpha=1.0 / n_avg), n_avg


#: Source samples drawn at once by an evaluation (the rest is pooled chunk by chunk).
EVAL_CHUNK_ELEMS = 1 << 26


class Evaluation:
    """The chi^2 estimate of the averaged potential, pooled over fresh batches until the bound decides.

    One call scores ``first_batch`` fresh samples; with a threshold, while the estimate is under
    it but its upper bound is not (and halving the sd could bring the bound under it), another
    batch of as many samples as already pooled is scored with the same potential and the column
    sums are added (M doubles), up to ``eval_batch_max``. ``keys``: the fit's own ``[y, .]``
    buffer; its last column is swapped for that of the evaluated potential and restored after,
    instead of a second N x (d + 1) copy.
    """

    def __init__(self, sample, y, epsilon, b, log_b, cfg: SolverConfig, reducer: Reducer, workspace, keys,
                 first_batch: int) -> None:
        self.sample, self.y, self.epsilon, self.b, self.log_b = sample, y, epsilon, b, log_b
        self.cfg, self.reducer, self.workspace, self.keys, self.first_batch = cfg, reducer, workspace, keys, first_batch
        self.most = max(first_batch, cfg.eval_batch_max or 16 * first_batch)
        self.chunk = max(1024, EVAL_CHUNK_ELEMS // max(1, y.shape[1]))

    def _score(self, count: int, sums: list) -> None:
        for start in range(0, count, self.chunk):
            x = self.sample(min(self.chunk, count - start))
            red = reduce_scores(augment_queries(x), self.keys, self.epsilon, block_elems=self.cfg.block_elems,
                                combine=self.reducer.combine, workspace=self.workspace, need_mass_cube=True)
            for total, part in zip(sums, (red.mass, red.mass_sq, red.mass_cube)):
                total += part

    def __call__(self, g: Tensor) -> Chi2Estimate:
        cfg, keys = self.cfg, self.keys
        saved = keys[:, -1].clone()
        keys[:, -1] = key_column(g, keys.dtype, self.epsilon, self.log_b)
        sums = [torch.zeros(self.y.shape[0], dtype=torch.float64, device=self.y.device) for _ in range(3)]
        pooled, count = 0, self.first_batch
        try:
            while True:
                self._score(count, sums)
                pooled += count
                estimate = self.reducer.chi2_estimate(*sums, pooled, self.b)
                threshold = cfg.chi2_threshold
                if (threshold is None or estimate.upper(cfg.chi2_z) <= threshold or 2 * pooled > self.most
                        or estimate.value + cfg.chi2_z * estimate.sd / 2 > threshold):
                    return estimate
                count = pooled
        finally:
            keys[:, -1] = saved
