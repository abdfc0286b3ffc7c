"""The problem a semidiscrete potential is fitted on, apart from the solver (OTT-JAX's problem / solver split).

A problem is the discrete target ``sum_j b_j delta_{y_j}`` (the keys y; uniform weights b), the
source the queries x are drawn from (None: N(0, I_d)), the regularisation epsilon (absolute, in
units of the cost ``-<x, y>``, and how it was derived from the relative one), and optionally the PCA
basis that maps both to k dimensions. :class:`PotentialProblem` holds them together with its
*defining fields*: the plain dict from which the application derives the run's key and tags.

Constructors:

* :func:`plain_problem`: keys y, source N(0, I).
* :func:`class_conditional_problem`: the cost ``c_X + beta c_Z`` with ``c_Z(z, z') = 1 - [z = z']``
  (paper Eq. 2.3) as an inner product: keys ``[y_j, sqrt(beta) e_{z_j}]``, queries
  ``[x, sqrt(beta) e_z]`` with z drawn from the labels' empirical distribution
  (:func:`augment_with_labels`, :func:`label_source`).
* :func:`conditioned_problem`: a continuous condition z (super-resolution: a low-resolution image,
  :mod:`sdfm.fm.superres`) with the cost ``c_X + beta |z - z'|^2``: keys ``[y_j, sqrt(beta) z'_j]``,
  queries ``[x, sqrt(beta) z]``, z a uniform row of the conditions (:func:`augment_with_condition`).
* :func:`with_pca`: any of them in the top-k principal subspace (the PCA cost ``|P x - P y|^2``):
  it fits N(0, I_k) -> ``sum_j b_j delta_{P y_j}`` (see :mod:`sdfm.ot.pca`); condition coordinates
  pass through. :func:`pca_report` measures its pairs in the full space: the chi^2 of the marginal
  (the k-dimensional one), the mean full-space cost ``E|x - y_T(x)|^2`` against independent pairs
  and, given the full-space potential of the same data, against the SD-FM pairs (excess cost, share
  of the OT gain kept, share of queries paired identically), and the pairing time per 1,024
  queries of both.

Epsilon (:meth:`PotentialProblem.with_epsilon`): the config gives it relative, ``epsilon_rel``;
the absolute one is ``epsilon_rel * std(C)`` for ``C = -<x, y>`` on a seeded reference batch of
source samples and keys (:func:`absolute_epsilon`), or ``auto`` chooses ``epsilon_rel`` first
(:func:`sdfm.ot.auto_epsilon.resolve_auto_epsilon`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from sdfm.errors import ConfigError
from sdfm.ot import SemidiscretePotential
from sdfm.ot.auto_epsilon import AutoEpsilon, resolve_auto_epsilon
from sdfm.ot.batch import relative_epsilon
from sdfm.ot.pca import PCABasis, ProjectedPotential, fit_pca, pairing_quality, project_keys
from sdfm.ot.potential import data_fingerprint

__all__ = [
    "PCAProblem", "PotentialProblem", "REFERENCE_BATCH", "Source", "absolute_epsilon", "augment_with_condition",
    "augment_with_labels",
    "chi2_sample_count", "class_conditional_problem", "condition_source", "conditioned_problem", "label_source",
    "pca_problem", "pca_report", "plain_problem", "with_pca",
]

#: A source sampler: ``source(count, generator)`` draws ``count`` queries from the generator only.
Source = Callable[[int, torch.Generator], torch.Tensor]

#: Full-space source samples of the quality measurement.
QUALITY_SAMPLES = 32_768


def augment_with_labels(x: torch.Tensor, labels: torch.Tensor, num_classes: int, beta: float) -> torch.Tensor:
    """Return ``[x, sqrt(beta) e_z]`` (n, D + K): inner products then carry ``beta [z = z']``."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    onehot = F.one_hot(labels.to(device=x.device, dtype=torch.long), num_classes).to(x.dtype)
    return torch.cat([x, math.sqrt(beta) * onehot], dim=1)


def augment_with_condition(x: torch.Tensor, z: torch.Tensor, beta: float) -> torch.Tensor:
    """Return ``[x, sqrt(beta) z]`` (n, D + Dz): inner products then carry ``beta <z, z'>``."""
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if z.ndim != 2 or z.shape[0] != x.shape[0]:
        raise ValueError(f"conditions must be ({x.shape[0]}, Dz), got {tuple(z.shape)}")
    return torch.cat([x, math.sqrt(beta) * z.to(device=x.device, dtype=x.dtype)], dim=1)


def _row_source(rows: torch.Tensor, dim: int, augment: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Source:
    """Sampler of ``augment(x, z)``: x ~ N(0, I_dim), z a uniform row of ``rows``, drawn on the generator's device."""
    copies = {torch.device("cpu"): rows.cpu()}  # one copy of the rows per device drawn on

    def draw(count: int, generator: torch.Generator) -> torch.Tensor:
        device = generator.device
        if device not in copies:
            copies[device] = copies[torch.device("cpu")].to(device)
        x = torch.randn(count, dim, generator=generator, device=device)
        z = copies[device][torch.randint(len(copies[device]), (count,), generator=generator, device=device)]
        return augment(x, z)

    return draw


def label_source(labels: torch.Tensor, num_classes: int, beta: float, dim: int) -> Source:
    """Sampler of the conditional source ``[x, sqrt(beta) e_z]``, x ~ N(0, I_dim), z ~ the labels' distribution.

    ``source(count, generator)`` draws on the generator's device, from that generator only.
    """
    return _row_source(labels.long(), dim, lambda x, z: augment_with_labels(x, z, num_classes, beta))


def condition_source(conditions: torch.Tensor, beta: float, dim: int) -> Source:
    """Sampler of the source ``[x, sqrt(beta) z]``: x ~ N(0, I_dim), z a uniform row of ``conditions``.

    ``source(count, generator)`` draws on the generator's device, from that generator only.
    """
    return _row_source(conditions.float(), dim, lambda x, z: augment_with_condition(x, z, beta))


#: Rows of the seeded reference batch that turns a relative epsilon into an absolute one (the workflow's
#: ``potential.reference_batch`` and the convergence study's ``reference_batch`` default to it).
REFERENCE_BATCH = 4096


def absolute_epsilon(epsilon_rel: float, y: torch.Tensor, reference_batch: int = REFERENCE_BATCH, seed: int = 0,
                     source: Source | None = None,
                     project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     epsilon_reference: str = "inner_product") -> float:
    """``epsilon_rel * std(C)`` for ``C = -<x, y>`` on a seeded reference batch of source and data.

    ``epsilon_reference="sq_euclidean"``: ``epsilon_rel * std(|x - y|^2) / 2`` instead, the same
    coupling as the cost ``|x - y|^2`` at ``epsilon_rel * std(|x - y|^2)``
    (:func:`sdfm.ot.batch.relative_epsilon`); the result is in units of ``-<x, y>`` either way.

    The source is N(0, I) unless ``source(count, generator)`` is given (conditional fits).
    ``project`` maps the batch's rows of ``y`` to the keys fitted (a sharded PCA fit, which projects
    only its own shard of y: the batch's projected rows are those of the projected keys).
    """
    if epsilon_rel == 0:
        return 0.0
    gen = torch.Generator().manual_seed(seed)
    n = min(reference_batch, y.shape[0])
    rows = torch.randperm(y.shape[0], generator=gen)[:n]
    keys = (y[rows] if project is None else project(y[rows])).cpu()
    x = source(n, gen).to(keys.dtype) if source is not None else torch.randn(n, keys.shape[1], generator=gen,
                                                                              dtype=keys.dtype)
    return relative_epsilon(epsilon_rel, x, keys, epsilon_reference)


def chi2_sample_count(n_points: int, dim: int) -> int:
    """Source samples of the final chi^2 estimate: 400k for up to 20k points of dimension up to 1024, else
    65,536 (a small set of large images would otherwise draw 400k x D values: 6.5 GB at D = 4072)."""
    return 400_000 if n_points <= 20_000 and dim <= 1024 else 65_536


@dataclass
class PotentialProblem:
    """What a potential is fitted on: keys, source, epsilon, PCA basis, and its defining fields.

    Attributes:
        keys: (n, d) the keys fitted (projected ones for a PCA problem; a sharded fit's shard).
        source: the queries' sampler, or None for N(0, I_d).
        fields: defining fields of the conditioning and PCA (``conditional``, ``superres``,
            ``pca_dim``), as the config gave them.
        tag_fields: what the application shows of them as tags (``beta``, ``superres_factor``, ...).
        pca: the PCA problem (basis, full-space keys and source), or None.
        epsilon_rel, epsilon_abs: the regularisation, relative and absolute (after :meth:`with_epsilon`).
        auto, auto_settings: the choice of epsilon ``auto`` and its settings, or None.
    """

    keys: torch.Tensor
    source: Source | None = None
    fields: dict = field(default_factory=dict)
    tag_fields: dict = field(default_factory=dict)
    pca: PCAProblem | None = None
    epsilon_rel: float | None = None
    epsilon_abs: float | None = None
    auto: AutoEpsilon | None = None
    auto_settings: dict | None = None
    epsilon_reference: str = "inner_product"

    @property
    def full_keys(self) -> torch.Tensor:
        """The keys before a PCA projection."""
        return self.pca.full_keys if self.pca is not None else self.keys

    def draw(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``count`` queries of the fitted space from ``generator``."""
        if self.source is not None:
            return self.source(count, generator)
        return torch.randn(count, self.keys.shape[1], generator=generator)

    def with_epsilon(self, epsilon_rel: float | str, reference_batch: int, seed: int = 0, auto: dict | None = None,
                     reference: torch.Tensor | None = None,
                     project: Callable[[torch.Tensor], torch.Tensor] | None = None,
                     epsilon_reference: str = "inner_product") -> PotentialProblem:
        """This problem at a relative epsilon (``"auto"``: chosen by the settings ``auto``), made absolute.

        ``epsilon_reference``: the cost whose spread makes it absolute (:func:`absolute_epsilon`);
        ``auto`` is chosen (and recorded) in the ``inner_product`` convention only.

        ``reference``: the keys the reference batch comes from (default: :attr:`keys`), mapped by
        ``project`` to the fitted space (a sharded PCA fit, see :func:`absolute_epsilon`).
        """
        chosen = None
        if epsilon_rel == "auto" and epsilon_reference != "inner_product":
            raise ValueError("epsilon 'auto' is chosen in the inner_product convention; use epsilon_reference "
                             "inner_product or a number")
        if epsilon_rel == "auto":
            chosen = resolve_auto_epsilon(self.keys, auto or {}, seed, self.source)
            epsilon_rel = chosen.epsilon_rel
        y = self.keys if reference is None else reference
        eps_abs = absolute_epsilon(epsilon_rel, y, reference_batch, seed, self.source, project, epsilon_reference)
        return replace(self, epsilon_rel=epsilon_rel, epsilon_abs=eps_abs, auto=chosen,
                       epsilon_reference=epsilon_reference, auto_settings=(auto or {}) if chosen is not None else None)

    def defining_fields(self) -> dict:
        """The fields that define the problem: epsilon, the conditioning, PCA and the settings of ``auto``."""
        out = {"epsilon_rel": self.epsilon_rel, **self.fields}
        if self.auto is not None:
            out["auto_epsilon"] = self.auto_settings
        if self.epsilon_reference != "inner_product":  # the default leaves the run keys of earlier fits unchanged
            out["epsilon_reference"] = self.epsilon_reference
        return out

    def tags(self) -> dict:
        """Short labels of the defining fields: epsilon, ``epsilon_auto``, the conditioning's, ``pca_dim``."""
        out = {"epsilon_rel": self.epsilon_rel}
        if self.auto is not None:
            out["epsilon_auto"] = "true"
        if self.epsilon_reference != "inner_product":
            out["epsilon_reference"] = self.epsilon_reference
        return {**out, **self.tag_fields}


def plain_problem(y: torch.Tensor) -> PotentialProblem:
    """The keys ``y`` (N, D), queries from N(0, I_D)."""
    return PotentialProblem(y)


def class_conditional_problem(y: torch.Tensor, labels: torch.Tensor, num_classes: int,
                              conditional: dict) -> PotentialProblem:
    """Keys ``[y_j, sqrt(beta) e_{z_j}]``, queries ``[x, sqrt(beta) e_z]`` (``conditional = {"beta": beta}``)."""
    beta = float(conditional["beta"])
    return PotentialProblem(augment_with_labels(y, labels, num_classes, beta),
                            label_source(labels, num_classes, beta, y.shape[1]),
                            fields={"conditional": conditional}, tag_fields={"beta": conditional["beta"]})


def conditioned_problem(y: torch.Tensor, conditions: torch.Tensor, beta: float, fields: dict,
                        tag_fields: dict) -> PotentialProblem:
    """Keys ``[y_j, sqrt(beta) z'_j]`` for the conditions z' (N, Dz) of the keys, queries ``[x, sqrt(beta) z]``."""
    return PotentialProblem(augment_with_condition(y, conditions, beta), condition_source(conditions, beta, y.shape[1]),
                            fields=fields, tag_fields=tag_fields)


def with_pca(problem: PotentialProblem, train: torch.Tensor, pca_dim: int, dataset: str,
             basis: PCABasis | None = None, rows: slice = slice(None)) -> PotentialProblem:
    """``problem`` in the top-``pca_dim`` principal subspace of the training points ``train`` (N, D).

    See :func:`pca_problem`; ``rows``: the keys this process fits (a sharded fit's shard).
    """
    pca = pca_problem(train, problem.keys, pca_dim, problem.source, dataset, basis=basis, rows=rows)
    return replace(problem, keys=pca.keys, source=pca.source, pca=pca, fields={**problem.fields, "pca_dim": pca_dim},
                   tag_fields={**problem.tag_fields, "pca_dim": pca_dim})


class PCAProblem:
    """The k-dimensional problem of a PCA fit: the basis, the projected keys and their source."""

    def __init__(self, basis: PCABasis, keys: torch.Tensor, source: Source | None, full_keys: torch.Tensor,
                 extra: int, full_source: Source | None, seconds: float) -> None:
        self.basis, self.keys, self.source, self.full_keys = basis, keys, source, full_keys
        self.extra, self.full_source, self.seconds = extra, full_source, seconds

    def wrap(self, inner: SemidiscretePotential) -> ProjectedPotential:
        """The fitted k-dimensional potential as a full-space one (it projects its queries)."""
        return ProjectedPotential(self.basis, inner, self.extra, data_fingerprint(self.full_keys))


def pca_problem(train: torch.Tensor, keys: torch.Tensor, pca_dim: int, source: Source | None, dataset: str,
                basis: PCABasis | None = None, rows: slice = slice(None)) -> PCAProblem:
    """Fit the basis on the training points ``train`` (N, D; the first D coordinates of the keys) and
    project the keys and the source.

    ``source``: the full-space source sampler of the job (None: N(0, I_D)). The projected problem draws
    N(0, I_k) directly in the unconditional case (the law of ``P x``), else the full source's samples
    projected (``[P x, sqrt(beta) e_z]`` for a conditional one: the extra coordinates pass through).
    ``basis``: a basis fitted already (a sharded fit's, :func:`sdfm.ot.pca_distributed.fit_pca_sharded`);
    ``rows``: the keys this process fits (a sharded fit's shard), the only ones projected.

    Raises:
        ConfigError: when ``pca_dim`` is not below the data dimension D.
    """
    d = train.shape[1]
    if not 1 <= pca_dim < d:
        raise ConfigError(f"config key 'potential.pca_dim' of data set {dataset!r}: {pca_dim} is not in 1..{d - 1} "
                          f"(the data dimension is {d}); use a smaller k, or null for the full space")
    start = time.perf_counter()
    basis = fit_pca(train, pca_dim) if basis is None else basis
    extra = keys.shape[1] - d
    projected = project_keys(basis, keys[rows], extra)
    seconds = time.perf_counter() - start
    projected_source = None
    if source is not None:
        def projected_source(count: int, generator: torch.Generator) -> torch.Tensor:
            x = source(count, generator)
            u = basis.project(x[:, :d])
            return torch.cat([u, x[:, d:]], dim=1) if extra else u

    return PCAProblem(basis, projected, projected_source, keys, extra, source, seconds)


def pca_report(problem: PCAProblem, potential: ProjectedPotential, fit_seconds: float, steps_run: int,
               reference_path=None, seed: int = 0) -> dict:
    """The summary's ``pca`` entry: k, explained variance, timings and full-space pairing quality.

    ``reference_path``: the full-space potential of the same points and epsilon (its pairs are the
    SD-FM pairs the PCA pairs are compared with), or None.
    """
    gen = torch.Generator().manual_seed(seed + 2)
    d = problem.basis.input_dim
    if problem.full_source is not None:
        x = problem.full_source(QUALITY_SAMPLES, gen)
    else:
        x = torch.randn(QUALITY_SAMPLES, d, generator=gen)
    reference = None
    if reference_path is not None:
        reference = SemidiscretePotential.load(reference_path, y=problem.full_keys, device=potential.y.device)
    quality = pairing_quality(potential, problem.full_keys[:, :d], x, reference, generator_seed=seed)
    out = {"dim": problem.basis.k, "input_dim": d, "explained_variance_ratio": problem.basis.explained_variance_ratio,
           "pca_seconds": problem.seconds, "fit_seconds_per_step": fit_seconds / max(steps_run, 1),
           "quality_samples": QUALITY_SAMPLES, **quality}
    if reference is not None:
        out["reference"] = str(reference_path)
        out["pairing_speedup"] = quality["reference_pairing_seconds_per_1k"] / max(quality["pairing_seconds_per_1k"],
                                                                                    1e-12)
    return out
