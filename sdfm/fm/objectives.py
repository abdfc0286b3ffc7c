"""Training objectives: flow matching and MeanFlow, on pairs from any coupling.

Flow matching (Lipman et al. 2023, Liu et al. 2023). For a pair (x0, x1) and t ~ U(0, 1),

    x_t = (1 - t) x0 + t x1,    loss = mean |v(x_t, t) - (x1 - x0)|^2.

MeanFlow (Geng et al. 2025), in this package's time convention (noise at t = 0, data at t = 1,
generation runs forward in time). The network predicts the average velocity over [r, t],
r <= t, of the path that passes through ``z`` at the EARLIER time r (the state a sampler knows):

    u(z_r, r, t) = 1 / (t - r) * int_r^t v(z_s, s) ds,   so that   z_t = z_r + (t - r) u(z_r, r, t),

and one-step generation is ``x1 = x0 + u(x0, 0, 1)``. (Geng et al. run time from data at 0 to
noise at 1 and condition on the state at the later time; with s -> 1 - s the two agree.)
Differentiating ``(t - r) u(z_r, r, t) = int_r^t v ds`` in r, with t fixed, gives the identity

    u(z_r, r, t) = v(z_r, r) + (t - r) d/dr u(z_r, r, t),   d/dr u = v . grad_z u + d_r u,

where the total derivative is one forward-mode JVP of the network with primals (z, r, t) and
tangents (v, 1, 0). Training regresses u(z_r, r, t), ``z_r = (1 - r) x0 + r x1``, on
``stop_grad(v + (t - r) du/dr)`` with the conditional velocity ``v = x1 - x0``. At r = t the
target is ``v``, plain flow matching; a fraction of the pairs use r = t. The model is called as
``model(z, t, r=r)`` so that ``u(z, t, t) = v(z, t)`` is the instantaneous velocity.

Times (``time``): the two times of a pair are i.i.d. draws ``s1, s2`` of a distribution on (0, 1),
``r = min``, ``t = max`` (``r = t = s1`` for the ``equal_fraction`` of rows): ``uniform``, or
``logit_normal`` with ``logit(s) ~ N(mean, std^2)``, i.e. ``s = sigmoid(mean + std n)``, n ~ N(0, 1),
of CDF ``F(s) = Phi((logit(s) - mean) / std)``; ``max(s1, s2)`` then has CDF ``F^2`` and
``min(s1, s2)`` has ``1 - (1 - F)^2``. Geng et al.'s ImageNet setting, logit-normal with mean -0.4
and std 1.0 in their time (data at 0), is mean +0.4 here: ``1 - s`` is logit-normal with mean
``-mean`` (``logit(1 - s) = -logit(s)``), and with ``s -> 1 - s`` their ``(r, t)`` maps to ours.

Adaptive weighting (Geng et al. Sec. 4.3): each sample's loss is multiplied by
``w = stop_grad(1 / (|e|^2 + c)^p)``, ``|e|^2`` the squared L2 norm of its error over all
coordinates and c = 1e-3. The loss term itself stays the per-sample mean squared error (a constant
factor 1 / D on the gradient against their sum), so p = 0 is exactly the plain mean squared error;
the weight carries no gradient: ``d loss = mean_i w_i d mse_i``.

Class-conditional models receive the labels and a label-dropout mask (the model's null class),
which trains the unconditional model used by classifier-free guidance.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "MEAN_FLOW_TIME_DISTRIBUTIONS",
    "draw_label_dropout",
    "draw_mean_flow_times",
    "draw_times",
    "draw_unit_times",
    "flow_matching_loss",
    "interpolate",
    "mean_flow_loss",
    "mean_flow_target",
    "model_kwargs",
    "objective_loss",
]


def _expand(t: Tensor, like: Tensor) -> Tensor:
    return t.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def interpolate(x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """``x_t = (1 - t) x0 + t x1`` for (B,) times."""
    t = _expand(t, x0)
    return (1 - t) * x0 + t * x1


def model_kwargs(labels: Tensor | None = None, drop: Tensor | bool = False, r: Tensor | None = None) -> dict:
    """Keyword arguments of a model call, leaving out the defaults (plain callables also work)."""
    kwargs: dict = {}
    if labels is not None:
        kwargs["labels"] = labels
    if isinstance(drop, Tensor) or drop:
        kwargs["drop_labels"] = drop
    if r is not None:
        kwargs["r"] = r
    return kwargs


def draw_times(n: int, generator: torch.Generator, device=None) -> Tensor:
    """``t ~ U(0, 1)``, (n,), drawn on the generator's device then moved to ``device``."""
    return torch.rand(n, generator=generator, device=generator.device).to(device or generator.device)


#: Time distributions of MeanFlow pairs (``time={"distribution": ..., "mean": ..., "std": ...}``).
MEAN_FLOW_TIME_DISTRIBUTIONS = ("uniform", "logit_normal")


def draw_unit_times(shape, generator: torch.Generator, time: dict | None = None) -> Tensor:
    """Times in (0, 1) of ``shape`` on the generator's device: ``U(0, 1)`` (``time`` None or uniform),
    or ``sigmoid(mean + std n)``, n ~ N(0, 1), for ``{"distribution": "logit_normal", "mean", "std"}``."""
    kind = (time or {}).get("distribution", "uniform")
    if kind == "uniform":
        return torch.rand(shape, generator=generator, device=generator.device)
    if kind == "logit_normal":
        normal = torch.randn(shape, generator=generator, device=generator.device)
        return torch.sigmoid(float(time.get("mean", 0.0)) + float(time.get("std", 1.0)) * normal)
    raise ValueError(f"MeanFlow time distribution must be one of {MEAN_FLOW_TIME_DISTRIBUTIONS}, got {kind!r}")


def draw_mean_flow_times(n: int, generator: torch.Generator, equal_fraction: float = 0.75, device=None,
                         time: dict | None = None):
    """``(r, t)`` with ``r <= t``: the sorted pair of two draws of ``time`` (:func:`draw_unit_times`),
    or ``r = t`` (the first draw) for a fraction of rows."""
    pair = draw_unit_times((n, 2), generator, time)
    equal = torch.rand(n, generator=generator, device=generator.device) < equal_fraction
    r = torch.where(equal, pair[:, 0], pair.min(dim=1).values)
    t = torch.where(equal, pair[:, 0], pair.max(dim=1).values)
    device = device or generator.device
    return r.to(device), t.to(device)


def draw_label_dropout(n: int, p: float, generator: torch.Generator, device=None) -> Tensor | bool:
    """A (n,) mask, true with probability ``p`` (False when p = 0, drawing nothing)."""
    if p <= 0:
        return False
    return (torch.rand(n, generator=generator, device=generator.device) < p).to(device or generator.device)


def _weighted_mean(sq_err: Tensor, adaptive_power: float, c: float = 1e-3) -> Tensor:
    """``mean_i w_i mse_i``, ``w_i = stop_grad(1 / (|e_i|^2 + c)^p)`` (|e_i|^2 summed over coordinates)."""
    if adaptive_power == 0:
        return sq_err.mean()  # the plain mean squared error, bit for bit
    flat = sq_err.reshape(sq_err.shape[0], -1)
    return (flat.mean(dim=1) / (flat.detach().sum(dim=1) + c) ** adaptive_power).mean()


def flow_matching_loss(model, x0: Tensor, x1: Tensor, t: Tensor, labels=None, drop_labels=False) -> Tensor:
    """``mean |v(x_t, t) - (x1 - x0)|^2`` for (B, ...) pairs and (B,) times."""
    prediction = model(interpolate(x0, x1, t), t, **model_kwargs(labels, drop_labels))
    return (prediction - (x1 - x0)).square().mean()


def mean_flow_target(model, z: Tensor, r: Tensor, t: Tensor, v: Tensor, labels=None, drop_labels=False):
    """Network output ``u(z, r, t)`` and the detached target ``v + (t - r) du/dr``.

    Args:
        model: called as ``model(z, t, r=r, ...)``.
        z: (B, ...) states ``z_r`` at the start time r.
        r, t: (B,) times with ``r <= t``.
        v: (B, ...) velocity at ``(z, r)`` (the conditional velocity ``x1 - x0`` in training).

    Returns:
        ``(u, target)``: u carries gradients to the parameters, target does not.
    """
    cond = model_kwargs(labels, drop_labels)

    def average_velocity(z_, r_, t_):
        return model(z_, t_, r=r_, **cond)

    u, dudr = torch.func.jvp(average_velocity, (z, r, t), (v, torch.ones_like(r), torch.zeros_like(t)))
    target = v + _expand(t - r, v) * dudr
    return u, target.detach()


def mean_flow_loss(
    model, x0: Tensor, x1: Tensor, r: Tensor, t: Tensor, labels=None, drop_labels=False, adaptive_power: float = 0.0
) -> Tensor:
    """MeanFlow regression of ``u(z_r, r, t)`` on its identity target, ``z_r = (1 - r) x0 + r x1``."""
    u, target = mean_flow_target(model, interpolate(x0, x1, r), r, t, x1 - x0, labels, drop_labels)
    return _weighted_mean((u - target).square(), adaptive_power)


def objective_loss(
    objective: str,
    model,
    x0: Tensor,
    x1: Tensor,
    generator: torch.Generator,
    *,
    labels: Tensor | None = None,
    label_dropout: float = 0.0,
    mean_flow_equal_fraction: float = 0.75,
    adaptive_power: float = 0.0,
    rows: slice | None = None,
    n_total: int | None = None,
    mean_flow_time: dict | None = None,
) -> Tensor:
    """Draw the times (and the label-dropout mask) from ``generator`` and return the loss.

    Args:
        objective: ``"fm"`` or ``"meanflow"``.
        model: the velocity (or average velocity) network.
        x0, x1: (B, ...) pairs, on the model's device.
        generator: source of t, r and the dropout mask.
        labels: (B,) labels for a class-conditional model.
        label_dropout: probability of the null class per sample.
        mean_flow_equal_fraction: fraction of MeanFlow pairs with r = t.
        adaptive_power: MeanFlow adaptive weighting exponent p.
        mean_flow_time: MeanFlow time distribution (:func:`draw_unit_times`; None: uniform).
        rows, n_total: data parallelism: the pairs are the rows ``rows`` of a global batch of
            ``n_total``; the draws are made for all ``n_total`` rows (every rank consumes the
            generator alike) and this rank keeps its rows, so K ranks see the draws of one.
    """
    n, device = (n_total or x0.shape[0]), x0.device
    keep = rows if rows is not None else slice(None)

    def mine(value):
        return value[keep] if isinstance(value, Tensor) else value

    if objective == "fm":
        t = draw_times(n, generator, device)
        drop = draw_label_dropout(n, label_dropout, generator, device) if labels is not None else False
        return flow_matching_loss(model, x0, x1, mine(t), labels, mine(drop))
    if objective == "meanflow":
        r, t = draw_mean_flow_times(n, generator, mean_flow_equal_fraction, device, mean_flow_time)
        drop = draw_label_dropout(n, label_dropout, generator, device) if labels is not None else False
        return mean_flow_loss(model, x0, x1, mine(r), mine(t), labels, mine(drop), adaptive_power)
    raise ValueError(f"unknown objective {objective!r}: expected 'fm' or 'meanflow'")
