"""The fit-potential job's PCA cost (``potential.pca_dim: k``): the projected problem and its report.

The job fits the potential of N(0, I_k) -> ``sum_j b_j delta_{P y_j}`` (see :mod:`sdfm.ot.pca`),
saves it with its basis, and measures its pairs in the full space: the chi^2 of the marginal (the
k-dimensional one, see :mod:`sdfm.ot.pca`), the mean full-space cost ``E|x - y_T(x)|^2`` against
independent pairs and, when the job is given the full-space potential of the same data, against the
SD-FM pairs (excess cost, share of the OT gain kept, share of queries paired identically), and the
pairing time per 1,024 queries of both.
"""

from __future__ import annotations

import time

import torch

from sdfm.config import ConfigError
from sdfm.data import Dataset
from sdfm.jobs.potential import Source
from sdfm.ot import SemidiscretePotential
from sdfm.ot.pca import PCABasis, ProjectedPotential, fit_pca, pairing_quality, project_keys
from sdfm.ot.potential import data_fingerprint

__all__ = ["PCAProblem", "pca_problem", "pca_report"]

#: Full-space source samples of the quality measurement.
QUALITY_SAMPLES = 32_768


class PCAProblem:
    """The k-dimensional problem of a PCA fit: the basis, the projected keys and their source."""

    def __init__(self, basis: PCABasis, keys: torch.Tensor, source: Source | None, full_keys: torch.Tensor,
                 extra: int, full_source: Source | None, seconds: float) -> None:
        self.basis, self.keys, self.source, self.full_keys = basis, keys, source, full_keys
        self.extra, self.full_source, self.seconds = extra, full_source, seconds

    def wrap(self, inner: SemidiscretePotential) -> ProjectedPotential:
        """The fitted k-dimensional potential as a full-space one (it projects its queries)."""
        return ProjectedPotential(self.basis, inner, self.extra, data_fingerprint(self.full_keys))


def pca_problem(data: Dataset, keys: torch.Tensor, pca_dim: int, source: Source | None, dataset: str) -> PCAProblem:
    """Fit the basis on the data (the first D coordinates of the keys) and project the keys and the source.

    ``source``: the full-space source sampler of the job (None: N(0, I_D)). The projected problem draws
    N(0, I_k) directly in the unconditional case (the law of ``P x``), else the full source's samples
    projected (``[P x, sqrt(beta) e_z]`` for a conditional one: the extra coordinates pass through).

    Raises:
        ConfigError: when ``pca_dim`` is not below the data dimension D.
    """
    d = data.dim
    if not 1 <= pca_dim < d:
        raise ConfigError(f"config key 'potential.pca_dim' of data set {dataset!r}: {pca_dim} is not in 1..{d - 1} "
                          f"(the data dimension is {d}); use a smaller k, or null for the full space")
    start = time.perf_counter()
    basis = fit_pca(data.flat_train(), pca_dim)
    extra = keys.shape[1] - d
    projected = project_keys(basis, keys, extra)
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
