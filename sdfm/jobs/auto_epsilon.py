"""Epsilon ``auto`` in the jobs: choose it on a seeded reference batch (:mod:`sdfm.ot.auto_epsilon`).

The potential job of ``eps = auto`` chooses the relative epsilon, records it (summary JSON
``epsilon_auto``, MLflow params and the entropy curve) and in the potential's ``history``
(``epsilon_rel``, ``epsilon_auto``); the train and evaluate jobs of ``auto`` read the chosen value
back from the potential and the model file, so every metrics row holds the number.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from sdfm.ot.auto_epsilon import AutoEpsilon, choose_epsilon

__all__ = ["AUTO_EPSILON_DEFAULTS", "log_auto_epsilon", "resolve_auto_epsilon"]

#: Settings of ``methods.sdfm.auto_epsilon`` (the schema holds the same defaults). target_entropy
#: 0.05 is a row perplexity of 1024^0.05 = 1.4 data points: a nearly deterministic pairing.
AUTO_EPSILON_DEFAULTS = {"target_entropy": 0.05, "reference_batch": 1024, "criterion": "semidiscrete",
                         "potential_steps": 1000}
#: Relative epsilons where the recorded entropy curve is also evaluated (semidiscrete: one softmax each).
CURVE_POINTS = tuple(round(10 ** (k / 4), 8) for k in range(-20, 5))


def resolve_auto_epsilon(y: torch.Tensor, settings: dict, seed: int = 0,
                         source: Callable[[int, torch.Generator], torch.Tensor] | None = None) -> AutoEpsilon:
    """Choose the relative epsilon of data ``y`` (N, d) by the rule of :func:`sdfm.ot.auto_epsilon.choose_epsilon`.

    The reference batch is ``min(reference_batch, N)`` points of ``y`` and as many source samples,
    drawn from a generator seeded with ``seed`` (as :func:`sdfm.jobs.potential.absolute_epsilon`
    draws its batch); the unregularised potential of the ``semidiscrete`` criterion uses ``seed + 1``.
    """
    unknown = sorted(set(settings) - set(AUTO_EPSILON_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown auto_epsilon setting {unknown[0]!r}; known: {', '.join(AUTO_EPSILON_DEFAULTS)}")
    s = {**AUTO_EPSILON_DEFAULTS, **settings}
    gen = torch.Generator().manual_seed(seed)
    n = min(int(s["reference_batch"]), y.shape[0])
    rows = torch.randperm(y.shape[0], generator=gen)[:n]
    x = source(n, gen).to(y.dtype).cpu() if source is not None else torch.randn(n, y.shape[1], generator=gen)
    return choose_epsilon(x.double(), y[rows].cpu().double(), float(s["target_entropy"]), criterion=s["criterion"],
                          potential_steps=int(s["potential_steps"]), seed=seed + 1, source=source,
                          extra_points=CURVE_POINTS if s["criterion"] == "semidiscrete" else ())


def log_auto_epsilon(run, auto: AutoEpsilon) -> None:
    """MLflow: the choice as params and metrics, and the entropy curve (step = evaluation in eps order)."""
    run.log_params({"epsilon_auto": True, "auto_target_entropy": auto.target, "auto_reference_batch": auto.n,
                    "auto_criterion": auto.criterion})
    run.log_metrics({"auto_epsilon_rel": auto.epsilon_rel, "auto_entropy": auto.entropy})
    for step, (eps, entropy) in enumerate(zip(auto.curve["epsilon_rel"], auto.curve["entropy"])):
        run.log_metrics({"auto_curve_log10_epsilon_rel": math.log10(eps), "auto_curve_entropy": entropy}, step=step)
