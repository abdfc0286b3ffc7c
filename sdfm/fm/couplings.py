"""Pair samplers: how each method draws training pairs (x0 noise, x1 data).

All samplers work on flat data ``data`` (N, D) (images are flattened by the caller) with
optional integer ``labels`` (N,), and draw every random number from the ``torch.Generator``
passed to :meth:`Coupling.sample`, so a training run is reproducible from its seed.

* ``fm`` (:class:`IndependentCoupling`): ``x0 ~ N(0, I)``, ``x1 = data[j]``, ``j ~ U{0..N-1}``.
* ``otfm`` (:class:`BatchOTCoupling`): n noise and n uniform data points, paired by batch OT for
  the cost ``-<x0, x1>`` (exact at eps = 0, Sinkhorn at ``eps = epsilon_rel * std(C)``);
  :class:`PlanOTCoupling` solves OT on n pairs once and trains on B-sized blocks of that plan.
* ``sdfm`` (:class:`SemidiscreteCoupling`): ``x0 ~ N(0, I)``, ``j = argmax_j <x0, y_j> + g_j``
  (a draw from ``pi(x0)`` at eps > 0) for a potential g fitted on the whole data set.

Data parallelism: ``sample(batch_size, generator, rows=slice(a, b))`` draws the random numbers
of the whole global batch (so every rank's generator advances alike) and pairs only rows a..b-1,
so K ranks each pairing their own rows see exactly the pairs of one process (``fm``; ``sdfm`` at
eps = 0). ``otfm`` then solves OT within the rank's rows, and draws at eps > 0 consume each
rank's generator differently: later batches stay i.i.d. but no longer equal a single process's.

Class-conditional pairing uses the augmented cost ``c_X + beta c_Z`` with
``c_Z(z, z') = 1 - [z = z']`` (paper Eq. 2.3). With one-hot labels it stays an inner
product: :func:`sdfm.ot.problem.augment_with_labels` maps ``(x, z)`` to ``[x, sqrt(beta) e_z]``, and

    -<[x, sqrt(beta) e_z], [y, sqrt(beta) e_z']> = -<x, y> + beta (1 - [z = z']) - beta,

the augmented cost up to a constant. The same map builds the keys of a conditional potential,
``augment_with_labels(data, labels, K, beta)``, and its noise queries ``[x0, sqrt(beta) e_z]``,
whose labels ``z`` are drawn from the empirical label distribution of the data. The potential
must be fitted with queries of that form: a solver that draws all D + K query coordinates
from N(0, I) solves a different problem (its label coordinates would be noise).

Continuous conditions (super-resolution: ``z`` a low-resolution image) pair through the cost
``c_X + beta |z - z'|^2``. :func:`sdfm.ot.problem.augment_with_condition` maps ``(x, z)`` to ``[x, sqrt(beta) z]``, and

    -<[x, sqrt(beta) z], [y, sqrt(beta) z']> = 1/2 (|x - y|^2 + beta |z - z'|^2) - 1/2 |[x, sqrt(beta) z]|^2
                                                - 1/2 |[y, sqrt(beta) z']|^2,

i.e. half the augmented cost up to a term of the query alone and a term of the key alone (the
latter is absorbed by the potential g_j; neither changes a batch assignment). The samplers take
``conditions`` (N, Dz), one per data point; a noise query gets the condition of a uniform data
point, and each :class:`PairBatch` carries the condition the model is trained on (the query's,
or for ``fm`` its own data point's).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from sdfm.ot import SemidiscretePotential
from sdfm.ot.batch import check_epsilon_reference
from sdfm.ot.problem import augment_with_condition, augment_with_labels
from sdfm.ot.sinkhorn_blocks import BLOCKED_SINKHORN_MIN_N, relative_ot_pairing

__all__ = ["BatchOTCoupling", "Coupling", "IndependentCoupling", "PairBatch", "PlanOTCoupling", "SemidiscreteCoupling",
           "make_coupling"]


@dataclass
class PairBatch:
    """A batch of training pairs.

    Attributes:
        x0: (n, D) source (noise) samples.
        x1: (n, D) data samples paired with ``x0``.
        labels: (n,) labels of the pairs (the drawn label ``z`` for conditional couplings), or None.
        index: (n,) index into ``data`` of each ``x1``.
        pairing_seconds: wall time spent choosing the pairs (index draw, OT solve or MIPS).
        condition: (n, Dz) continuous condition of the pairs (the query's ``z`` when pairing on
            ``[x, sqrt(beta) z]``), or None.
    """

    x0: Tensor
    x1: Tensor
    labels: Tensor | None
    index: Tensor
    pairing_seconds: float = 0.0
    condition: Tensor | None = None


class Coupling(Protocol):
    """Anything with a ``name`` that draws :class:`PairBatch` es from a generator."""

    name: str

    def sample(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> PairBatch: ...


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Sampler:
    """Shared state: the data, its labels, and draws made on the generator's device."""

    name = "base"

    def __init__(self, data: Tensor, labels: Tensor | None = None, conditions: Tensor | None = None) -> None:
        if data.ndim != 2:
            raise ValueError(f"couplings take flat (N, D) data, got shape {tuple(data.shape)}")
        if labels is not None and labels.shape != (data.shape[0],):
            raise ValueError(f"labels must have shape ({data.shape[0]},), got {tuple(labels.shape)}")
        if conditions is not None and (conditions.ndim != 2 or conditions.shape[0] != data.shape[0]):
            raise ValueError(f"conditions must have shape ({data.shape[0]}, Dz), got {tuple(conditions.shape)}")
        if labels is not None and conditions is not None:
            raise ValueError("give labels (class-conditional) or conditions (continuous), not both")
        self.data = data
        self.labels = labels.to(device=data.device, dtype=torch.long) if labels is not None else None
        self.conditions = conditions.to(device=data.device, dtype=data.dtype) if conditions is not None else None

    def _noise(self, n: int, generator: torch.Generator) -> Tensor:
        shape, device = (n, self.data.shape[1]), generator.device
        return torch.randn(shape, generator=generator, device=device, dtype=self.data.dtype).to(self.data.device)

    def _indices(self, n: int, generator: torch.Generator) -> Tensor:
        index = torch.randint(self.data.shape[0], (n,), generator=generator, device=generator.device)
        return index.to(self.data.device)

    def _labels_of(self, index: Tensor) -> Tensor | None:
        return self.labels[index] if self.labels is not None else None

    def _conditions_of(self, index: Tensor) -> Tensor | None:
        return self.conditions[index] if self.conditions is not None else None

    def _augment(self, x: Tensor, labels: Tensor | None, conditions: Tensor | None) -> Tensor:
        """The MIPS vector of ``x`` with its label or continuous condition (``x`` itself when unconditional)."""
        if labels is not None:
            return augment_with_labels(x, labels, self.num_classes, self.beta)
        if conditions is not None:
            return augment_with_condition(x, conditions, self.beta)
        return x


class IndependentCoupling(_Sampler):
    """``fm``: independent pairs, ``x0 ~ N(0, I)`` and ``x1`` uniform over the data."""

    name = "fm"

    def sample(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> PairBatch:
        keep = rows if rows is not None else slice(None)
        x0 = self._noise(batch_size, generator)[keep]
        start = time.perf_counter()
        index = self._indices(batch_size, generator)[keep]
        seconds = time.perf_counter() - start
        return PairBatch(x0, self.data[index], self._labels_of(index), index, seconds, self._conditions_of(index))


class BatchOTCoupling(_Sampler):
    """``otfm``: pair n noise with n uniform data points by OT on the batch.

    Args:
        data: (N, D) data.
        labels: (N,) labels, for class-conditional pairing with ``beta``.
        epsilon_rel: entropic regularisation relative to the batch's cost scale (0: exact assignment),
            measured as ``epsilon_reference`` says (:func:`sdfm.ot.batch.relative_epsilon`). The
            absolute value of the last batch, in units of ``-<x0, x1>``, is ``last_epsilon``.
        beta: weight of the label mismatch cost; ``None`` pairs on ``x`` alone. Each noise sample
            then gets a label ``z`` drawn from the data's label distribution, and the pairing uses
            the augmented vectors of :func:`augment_with_labels`.
        num_classes: number of labels (default ``labels.max() + 1``).
        conditions: (N, Dz) continuous conditions (instead of labels): with ``beta`` each noise
            sample gets the condition ``z`` of a uniform data point and pairs on ``[x, sqrt(beta) z]``.
    """

    name = "otfm"
    blocked_min_n = None  # the dense batch solve at every n
    shard_over_ranks = False  # each rank pairs its own rows

    def __init__(self, data, labels=None, *, epsilon_rel: float = 0.0, beta: float | None = None, num_classes=None,
                 conditions=None, epsilon_reference: str = "inner_product"):
        super().__init__(data, labels, conditions)
        if epsilon_rel < 0:
            raise ValueError(f"epsilon_rel must be >= 0, got {epsilon_rel}")
        check_epsilon_reference(epsilon_reference)
        self.epsilon_rel, self.beta, self.epsilon_reference = epsilon_rel, beta, epsilon_reference
        self.conditional = beta is not None and self.labels is not None
        self.continuous = beta is not None and self.conditions is not None
        self.num_classes = num_classes if num_classes is not None else _num_classes(self.labels)
        self.last_epsilon = 0.0

    def sample(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> PairBatch:
        keep = rows if rows is not None else slice(None)
        x0 = self._noise(batch_size, generator)[keep]
        index = self._indices(batch_size, generator)[keep]
        z0 = self._labels_of(self._indices(batch_size, generator)[keep]) if self.conditional else None
        c0 = self._conditions_of(self._indices(batch_size, generator)[keep]) if self.continuous else None
        return self._pair(x0, index, z0, c0, generator)

    def _pair(self, x0: Tensor, index: Tensor, z0, c0, generator: torch.Generator) -> PairBatch:
        """OT pairs of the noise ``x0`` (with drawn labels ``z0`` / conditions ``c0``) and ``data[index]``."""
        x1 = self.data[index]
        _sync(x0.device)
        start = time.perf_counter()
        q0, q1 = x0, x1
        if self.conditional or self.continuous:
            q0 = self._augment(x0, z0, c0)
            q1 = self._augment(x1, self._labels_of(index) if self.conditional else None,
                               self._conditions_of(index) if self.continuous else None)
        pairing, self.last_epsilon = relative_ot_pairing(q0, q1, self.epsilon_rel, self.epsilon_reference, generator,
                                                         blocked_min_n=self.blocked_min_n,
                                                         shard_over_ranks=self.shard_over_ranks)
        pairing = pairing.to(index.device)
        _sync(x0.device)
        seconds = time.perf_counter() - start
        index = index[pairing]
        labels = z0 if self.conditional else self._labels_of(index)
        condition = c0 if self.continuous else self._conditions_of(index)
        return PairBatch(x0, self.data[index], labels, index, seconds, condition)


class PlanOTCoupling(BatchOTCoupling):
    """``otfm`` with an OT batch of n pairs independent of the training batch B (``methods.otfm.ot_batch_size``).

    A *plan* pairs n fresh noise samples with n data points by batch OT (:class:`BatchOTCoupling`'s
    solve: the exact assignment at eps = 0, a Sinkhorn plan and one draw per row at eps > 0). The
    n data points are the first n of a concatenation of random permutations of ``0..N-1``: every
    data point enters a plan ``floor(n / N)`` or ``ceil(n / N)`` times (exactly once when n = N,
    at most once when n < N). Training batches are then consecutive blocks of B of the plan's n
    pairs, each pair used exactly once (the rows are in noise order, and the noise is i.i.d., so
    the blocks are exchangeable); after ``n / B`` batches the next call solves a new plan. n must
    be a multiple of B. The plan's solve time is charged to the first batch of the plan
    (``pairing_seconds``), so a run's pairing time per training pair is (solve time) / n.

    Randomness and resumption: each plan draws one seed from the training generator and takes
    all its random numbers (noise, data order, labels / conditions, Sinkhorn row draws) from a
    private generator with that seed, on the training generator's device. A checkpoint needs only
    :meth:`state_dict` (the seed, the position): resuming re-solves the plan and goes on there.

    Data parallelism (``rows=``): every rank draws the same seed (the ranks' generators advance
    alike) and keeps its rows of each global batch of the same plan: below ``blocked_min_n`` pairs
    or at eps = 0 each rank repeats the solve (the pairs of one process); above, the ranks share it
    (:func:`sdfm.ot.sinkhorn_blocks.sharded_ot_pairing`: the same plan, other Gumbel noise).
    """

    blocked_min_n = BLOCKED_SINKHORN_MIN_N  # eps > 0 plans from this n: no n x n matrix (relative_ot_pairing)
    shard_over_ranks = True  # every rank solves the same plan: share it out (relative_ot_pairing)

    def __init__(self, data, labels=None, *, ot_batch_size: int, epsilon_rel: float = 0.0, beta=None,
                 num_classes=None, conditions=None, epsilon_reference: str = "inner_product"):
        super().__init__(data, labels, epsilon_rel=epsilon_rel, beta=beta, num_classes=num_classes,
                         conditions=conditions, epsilon_reference=epsilon_reference)
        if ot_batch_size < 1:
            raise ValueError(f"ot_batch_size must be >= 1, got {ot_batch_size}")
        self.ot_batch_size = int(ot_batch_size)
        self.plans_solved, self.plan_seconds = 0, 0.0
        self._plan: PairBatch | None = None
        self._seed: int | None = None
        self._device: str | None = None
        self._cursor = 0

    def _solve_plan(self, seed: int, device: torch.device) -> PairBatch:
        """The plan of ``seed``: n noise x n data points, OT-paired, all draws from one seeded generator."""
        gen = torch.Generator(device=device).manual_seed(seed)
        n, count = self.ot_batch_size, self.data.shape[0]
        order = torch.cat([torch.randperm(count, generator=gen, device=gen.device) for _ in range(-(-n // count))])
        index = order[:n].to(self.data.device)
        x0 = self._noise(n, gen)
        z0 = self._labels_of(self._indices(n, gen)) if self.conditional else None
        c0 = self._conditions_of(self._indices(n, gen)) if self.continuous else None
        return self._pair(x0, index, z0, c0, gen)

    def sample(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> PairBatch:
        if self.ot_batch_size % batch_size:
            raise ValueError(f"ot_batch_size {self.ot_batch_size} must be a multiple of the training batch {batch_size}")
        seconds = 0.0
        if self._plan is None or self._cursor >= self.ot_batch_size:
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            self._seed, self._device, self._cursor = seed, str(generator.device), 0
            self._plan = self._solve_plan(seed, generator.device)
            seconds = self._plan.pairing_seconds
            self.plans_solved += 1
            self.plan_seconds += seconds
        block = torch.arange(self._cursor, self._cursor + batch_size, device=self._plan.index.device)
        self._cursor += batch_size
        take = block[rows if rows is not None else slice(None)]
        plan = self._plan
        pick = (lambda v: v[take] if v is not None else None)
        return PairBatch(plan.x0[take], plan.x1[take], pick(plan.labels), plan.index[take], seconds,
                         pick(plan.condition))

    def state_dict(self) -> dict:
        """What resumes the pairs: the current plan's seed and device, the position in it, the counters."""
        return {"ot_batch_size": self.ot_batch_size, "seed": self._seed, "device": self._device,
                "cursor": self._cursor, "plans_solved": self.plans_solved, "plan_seconds": self.plan_seconds}

    def load_state_dict(self, state: dict) -> None:
        """Continue after :meth:`state_dict`: re-solve the plan of its seed and go on at its position."""
        if state["ot_batch_size"] != self.ot_batch_size:
            raise ValueError(f"the checkpoint's plans have ot_batch_size {state['ot_batch_size']}, this run "
                             f"{self.ot_batch_size}: delete the checkpoint or match it")
        self._seed, self._device, self._cursor = state["seed"], state["device"], state["cursor"]
        self.plans_solved, self.plan_seconds = state["plans_solved"], state["plan_seconds"]
        self._plan = self._solve_plan(self._seed, torch.device(self._device)) if self._seed is not None else None


class SemidiscreteCoupling(_Sampler):
    """``sdfm``: fresh noise matched through a fitted semidiscrete potential.

    Args:
        data: (N, D) data; row j must be the point ``y_j`` the potential was fitted on.
        potential: a :class:`~sdfm.ot.SemidiscretePotential` over N points, of dimension D, or
            D + K for a conditional potential fitted on ``augment_with_labels(data, labels, K, beta)``.
        labels: (N,) labels.
        beta: label (or condition) weight of a conditional potential (``None``: unconditional pairing).
        num_classes: number of labels K (default ``labels.max() + 1``).
        conditions: (N, Dz) continuous conditions (instead of labels), for a potential fitted on
            ``augment_with_condition(data, conditions, beta)`` from queries ``[x, sqrt(beta) z]``.
    """

    name = "sdfm"

    def __init__(self, data, potential: SemidiscretePotential, labels=None, *, beta=None, num_classes=None,
                 conditions=None):
        super().__init__(data, labels, conditions)
        self.potential, self.beta = potential, beta
        self.conditional = beta is not None and self.labels is not None
        self.continuous = beta is not None and self.conditions is not None
        self.num_classes = num_classes if num_classes is not None else _num_classes(self.labels)
        extra = self.num_classes if self.conditional else (self.conditions.shape[1] if self.continuous else 0)
        expected = data.shape[1] + extra
        if potential.n_points != data.shape[0] or potential.dim != expected:
            raise ValueError(
                f"potential over {potential.n_points} points of dim {potential.dim} does not match "
                f"{data.shape[0]} points of dim {expected} (conditional={self.conditional or self.continuous})"
            )

    def pairing_backend(self, batch_size: int) -> str:
        """What pairs batches of ``batch_size`` (``"screened-bf16"`` on CUDA, ``"faiss-flat-ip"``
        on CPU at eps = 0 and d >= 784 from B = 256, else ``"torch-fp32"``): a run parameter."""
        if hasattr(self.potential, "pairing_backend"):
            return self.potential.pairing_backend(batch_size=batch_size)
        return "torch-fp32"

    def sample(self, batch_size: int, generator: torch.Generator, rows: slice | None = None) -> PairBatch:
        keep = rows if rows is not None else slice(None)
        x0 = self._noise(batch_size, generator)[keep]
        z0 = self._labels_of(self._indices(batch_size, generator)[keep]) if self.conditional else None
        c0 = self._conditions_of(self._indices(batch_size, generator)[keep]) if self.continuous else None
        assign_gen = generator
        if generator.device != self.potential.y.device:  # the draw at eps > 0 runs where the potential lives
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            assign_gen = torch.Generator(device=self.potential.y.device).manual_seed(seed)
        _sync(self.potential.y.device)
        start = time.perf_counter()
        query = self._augment(x0, z0, c0)
        index = self.potential.assign(query, generator=assign_gen).to(self.data.device)
        _sync(self.potential.y.device)
        seconds = time.perf_counter() - start
        labels = z0 if self.conditional else self._labels_of(index)
        condition = c0 if self.continuous else self._conditions_of(index)
        return PairBatch(x0, self.data[index], labels, index, seconds, condition)


def _num_classes(labels: Tensor | None) -> int | None:
    return int(labels.max()) + 1 if labels is not None and labels.numel() else None


def make_coupling(
    method: str,
    data: Tensor,
    *,
    labels: Tensor | None = None,
    num_classes: int | None = None,
    epsilon_rel: float = 0.0,
    potential: SemidiscretePotential | None = None,
    beta: float | None = None,
    conditions: Tensor | None = None,
    ot_batch_size: int | None = None,
    epsilon_reference: str = "inner_product",
) -> Coupling:
    """Build the coupling of ``method`` (``"fm"``, ``"otfm"`` or ``"sdfm"``) on flat ``data``.

    ``epsilon_rel`` is used by ``otfm`` only (the ``sdfm`` epsilon belongs to its potential);
    ``potential`` is required by ``sdfm``; ``beta`` enables conditional pairing, on the
    ``labels`` (class-conditional) or on the continuous ``conditions`` (N, Dz). ``ot_batch_size``
    (``otfm``): solve OT on n pairs and train on batches drawn from that plan
    (:class:`PlanOTCoupling`); None pairs each training batch on its own (:class:`BatchOTCoupling`).
    ``epsilon_reference`` (``otfm``): the cost whose spread makes ``epsilon_rel`` absolute.
    """
    if method == "fm":
        return IndependentCoupling(data, labels, conditions)
    if method == "otfm":
        common = dict(epsilon_rel=epsilon_rel, beta=beta, num_classes=num_classes, conditions=conditions,
                      epsilon_reference=epsilon_reference)
        if ot_batch_size is not None:
            return PlanOTCoupling(data, labels, ot_batch_size=ot_batch_size, **common)
        return BatchOTCoupling(data, labels, **common)
    if method == "sdfm":
        if potential is None:
            raise ValueError("method 'sdfm' needs a fitted potential (sdfm.ot.fit_potential)")
        return SemidiscreteCoupling(data, potential, labels, beta=beta, num_classes=num_classes,
                                    conditions=conditions)
    raise ValueError(f"unknown coupling method {method!r}: expected 'fm', 'otfm' or 'sdfm'")
