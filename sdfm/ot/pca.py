"""The PCA cost: a semidiscrete potential fitted and queried in a k-dimensional principal subspace.

With P (k x D) the top-k principal directions of the centred data (orthonormal rows), the PCA cost
is ``c_k(x, y) = |P x - P y|^2`` (the paper's ImageNet-64 runs use k = 500). Its coupling only
sees ``u = P x`` and the keys ``P y_j`` (not centred: the cost depends on ``P (x - y)``; in the MIPS
form ``-<u, P y_j>`` centring would only add ``<u, P m>``, the same for every j), and for
``x ~ N(0, I_D)`` the projection ``u = P x`` is exactly N(0, I_k) because ``P P^T = I_k``. So the
potential is an ordinary semidiscrete problem in k dimensions, from N(0, I_k) to
``sum_j b_j delta_{P y_j}``, solved by :func:`sdfm.ot.fit_potential` unchanged; pairing a noise
batch projects it with P and runs the MIPS in k dimensions (2 B D k + 2 B N k flops instead of
2 B N D).

Marginals. The pairing ``T(x) = T_k(P x)`` pushes N(0, I_D) to the same marginal as ``T_k``
pushes N(0, I_k), so its chi^2 (the marginal error) is the k-dimensional one, whichever space the
queries are drawn in.

Full-space cost. Write ``Q = I - P^T P``. The part ``Q x`` of the noise is independent of ``P x``
and hence of the assignment, so for the PCA pairs with an exact marginal

    E|x - y_T(x)|^2 = E|P x - P y_T(x)|^2 + (D - k) + sum_j b_j |Q y_j|^2,

the k-dimensional OT cost plus independent pairing in the complement; independent pairs cost
``D + sum_j b_j |y_j|^2``. :func:`pairing_quality` measures the full-space cost of both pairings
(and of a full-space potential's pairs, when one is given).

Class-conditional potentials (keys ``[y_j, sqrt(beta) e_{z_j}]``) project the first D
coordinates only; the ``extra`` label coordinates pass through unchanged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor

from sdfm.io import atomic_torch_save
from sdfm.ot.potential import SemidiscretePotential, data_fingerprint

__all__ = ["PCABasis", "ProjectedPotential", "basis_from_covariance", "fit_pca", "load_potential",
           "pairing_quality"]


@dataclass(frozen=True)
class PCABasis:
    """The top-k principal directions of a data set (float64, on the CPU).

    Attributes:
        components: (k, D) orthonormal rows P, by decreasing variance; each row's entry of
            largest magnitude is positive (a deterministic sign).
        mean: (D,) the data mean (used to fit P only; projections are not centred).
        explained_variance: (k,) the variances of the data along the rows of P.
        total_variance: the trace of the data covariance.
    """

    components: Tensor
    mean: Tensor
    explained_variance: Tensor
    total_variance: float

    @property
    def k(self) -> int:
        return self.components.shape[0]

    @property
    def input_dim(self) -> int:
        return self.components.shape[1]

    @property
    def explained_variance_ratio(self) -> float:
        """Share of the data variance kept by the subspace."""
        return float(self.explained_variance.sum() / max(self.total_variance, 1e-300))

    def project(self, x: Tensor) -> Tensor:
        """``x P^T`` for the (B, D) rows x, in x's dtype and on x's device (not centred)."""
        return x @ self.components.to(x.device, x.dtype).T

    def state(self) -> dict:
        return {"components": self.components, "mean": self.mean, "explained_variance": self.explained_variance,
                "total_variance": self.total_variance}

    @classmethod
    def from_state(cls, state: dict) -> "PCABasis":
        return cls(state["components"], state["mean"], state["explained_variance"], float(state["total_variance"]))


def fit_pca(y: Tensor, k: int, chunk: int = 65536) -> PCABasis:
    """The top-k principal directions of the (N, D) points ``y``, computed in float64 on the CPU.

    For N > D the D x D covariance is accumulated over chunks of rows (memory O(D^2 + chunk D)) and
    diagonalised with ``eigh``; for N <= D the centred data itself is decomposed by SVD. The sign of
    each direction makes its largest-magnitude entry positive (ties: the first), so the basis is a
    function of the data alone.
    """
    if y.ndim != 2:
        raise ValueError(f"fit_pca takes (N, D) points, got shape {tuple(y.shape)}")
    n, d = y.shape
    if not 1 <= k <= d:
        raise ValueError(f"the PCA dimension must be in 1..{d} (the data dimension), got {k}")
    y = y.detach().to("cpu", torch.float64)
    mean = y.mean(dim=0)
    if n > d:
        cov = torch.zeros(d, d, dtype=torch.float64)
        for start in range(0, n, chunk):
            block = y[start:start + chunk] - mean
            cov += block.T @ block
        return basis_from_covariance(cov / max(n - 1, 1), mean, k)
    else:
        _, s, vh = torch.linalg.svd(y - mean, full_matrices=False)
        svals = s.square() / max(n - 1, 1)
        total = float(svals.sum())
        rank = int((s > 1e-10 * s[0]).sum()) if n > 1 and s[0] > 0 else 0
        variance, components = svals[:min(k, rank)], vh[:min(k, rank)]
        if components.shape[0] < k:  # rank < k: complete with directions of zero variance, a function of the rest
            q, _ = torch.linalg.qr(torch.cat([components.T, torch.eye(d, dtype=torch.float64)], dim=1))
            components = q[:, :k].T.contiguous()
            variance = torch.cat([variance, torch.zeros(k - len(variance), dtype=torch.float64)])
    return PCABasis(_signed(components), mean, variance, total)


def basis_from_covariance(cov: Tensor, mean: Tensor, k: int) -> PCABasis:
    """The top-k eigenvectors of a (D, D) covariance (``eigh``, float64 on the CPU), signed as in :func:`fit_pca`."""
    cov = cov.detach().to("cpu", torch.float64)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True, stable=True)
    variance, components = evals[order][:k].clamp(min=0), evecs[:, order][:, :k].T
    return PCABasis(_signed(components), mean.detach().to("cpu", torch.float64), variance, float(cov.trace()))


def _signed(components: Tensor) -> Tensor:
    """Each row times the sign of its largest-magnitude entry (ties: the first), so the basis is a function of the data."""
    components = components.contiguous()
    pivot = components.abs().argmax(dim=1)
    signs = torch.sign(components[torch.arange(components.shape[0]), pivot])
    return components * torch.where(signs == 0, 1.0, signs)[:, None]


class ProjectedPotential:
    """A semidiscrete potential for the PCA cost ``|P x - P y|^2`` (see the module docstring).

    It pairs D-dimensional queries (D + K with label coordinates) like a
    :class:`~sdfm.ot.SemidiscretePotential`: ``assign``, ``chi2``, ``marginal_counts`` and
    ``semi_dual`` project the queries, then call the k-dimensional potential ``inner``.

    Args:
        basis: the PCA basis (k x D).
        inner: the potential over the keys ``[P y_j, labels_j]`` (dimension k + extra).
        extra: label coordinates after the first D, passed through unprojected.
        fingerprint: :func:`~sdfm.ot.data_fingerprint` of the full-space keys, guarding :meth:`load`.
    """

    def __init__(self, basis: PCABasis, inner: SemidiscretePotential, extra: int = 0,
                 fingerprint: str | None = None) -> None:
        if inner.dim != basis.k + extra:
            raise ValueError(f"the inner potential has dim {inner.dim}, expected k + extra = {basis.k + extra}")
        self.basis, self.inner, self.extra, self.fingerprint = basis, inner, extra, fingerprint

    @property
    def y(self) -> Tensor:
        """The projected keys ``[P y_j, labels_j]`` the MIPS runs against (their device is the potential's)."""
        return self.inner.y

    @property
    def n_points(self) -> int:
        return self.inner.n_points

    @property
    def dim(self) -> int:
        """The dimension of the queries it takes: D (+ K label coordinates)."""
        return self.basis.input_dim + self.extra

    @property
    def pca_dim(self) -> int:
        return self.basis.k

    @property
    def g(self) -> Tensor:
        return self.inner.g

    @property
    def epsilon(self) -> float:
        return self.inner.epsilon

    @property
    def weights(self) -> Tensor:
        return self.inner.weights

    @property
    def history(self) -> dict:
        return self.inner.history

    def project(self, x: Tensor) -> Tensor:
        """``[P x[:, :D], x[:, D:]]`` on the potential's device and dtype."""
        x = x.to(self.inner.y.device, self.inner.y.dtype)
        d = self.basis.input_dim
        if x.shape[1] != self.dim:
            raise ValueError(f"queries of dim {x.shape[1]} given to a PCA potential over dim {self.dim}")
        u = self.basis.project(x[:, :d])
        return torch.cat([u, x[:, d:]], dim=1) if self.extra else u

    def assign(self, x: Tensor, generator: torch.Generator | None = None, top_k: int | None = None) -> Tensor:
        """The data index of each (B, D) query: the k-dimensional potential's pairing of ``P x``."""
        return self.inner.assign(self.project(x), generator=generator, top_k=top_k)

    def pairing_backend(self, device=None, batch_size: int | None = None) -> str:
        """What :meth:`assign` uses (that of the k-dimensional potential): a run parameter."""
        return self.inner.pairing_backend(device, batch_size)

    def marginal_counts(self, x: Tensor):
        return self.inner.marginal_counts(self.project(x))

    def chi2(self, x: Tensor) -> float:
        """chi^2 of the marginal, from full-space samples (equal in law to the k-dimensional estimate)."""
        return self.inner.chi2(self.project(x))

    def semi_dual(self, x: Tensor) -> float:
        return self.inner.semi_dual(self.project(x))

    def to(self, device) -> "ProjectedPotential":
        return ProjectedPotential(self.basis, self.inner.to(device), self.extra, self.fingerprint)

    def save(self, path, include_data: bool = False) -> None:
        """Write atomically, without the data: the basis, the k-dim potential and the full keys' fingerprint."""
        if include_data:
            raise ValueError("a PCA potential is saved without its data points: load it with the full-space keys")
        inner = self.inner
        atomic_torch_save({"g": inner.g.cpu(), "epsilon": inner.epsilon, "weights": inner.weights.cpu(),
                           "history": inner.history, "fingerprint": self.fingerprint, "y": None,
                           "pca": self.basis.state(), "extra": self.extra}, path)

    @classmethod
    def load(cls, path, y: Tensor, device=None) -> "ProjectedPotential":
        """Read a potential written by :meth:`save`; ``y``: the (N, D + extra) full-space keys."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        return cls._from_state(path, state, y, device)

    @classmethod
    def _from_state(cls, path, state: dict, y: Tensor, device) -> "ProjectedPotential":
        if data_fingerprint(y) != state["fingerprint"]:
            raise ValueError(f"{path} was fitted on other data points (fingerprint mismatch): refit the potential")
        basis, extra = PCABasis.from_state(state["pca"]), int(state["extra"])
        keys = project_keys(basis, y.cpu(), extra)
        inner = SemidiscretePotential(keys, state["g"], state["epsilon"], state["weights"], state["history"])
        potential = cls(basis, inner, extra, state["fingerprint"])
        return potential.to(device) if device is not None else potential


def project_keys(basis: PCABasis, y: Tensor, extra: int = 0) -> Tensor:
    """``[P y_j, labels_j]`` in y's dtype, projected in float64 (the same keys wherever it runs)."""
    d = basis.input_dim
    u = (y[:, :d].to(torch.float64) @ basis.components.to(y.device).T).to(y.dtype)
    return torch.cat([u, y[:, d:]], dim=1) if extra else u


def load_potential(path, y: Tensor, device=None):
    """Read the potential file of a fit-potential job, full-space or PCA, against the full keys ``y``."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if "pca" in state:
        return ProjectedPotential._from_state(path, state, y, device)
    return SemidiscretePotential.load(path, y=y, device=device)


def pairing_quality(potential, y: Tensor, x: Tensor, reference=None, generator_seed: int = 0,
                    chunk: int = 8192) -> dict:
    """Full-space quality of a potential's pairs ``(x, y_T(x))`` on the source samples ``x``.

    Args:
        potential: the potential to measure (a :class:`ProjectedPotential` or a full-space one).
        y: (N, D) data points in the full space (the first D coordinates of the keys).
        x: (M, D + extra) source samples (queries, with label coordinates for conditional ones).
        reference: a full-space potential over the same points (the SD-FM pairs), or None.

    Returns:
        ``cost``: mean ``|x - y_T(x)|^2`` over the first D coordinates; ``cost_independent``: the exact
        mean over independent pairs ``D + sum_j b_j |y_j|^2``; ``pairing_seconds_per_1k``: wall time of
        the assignment per 1,024 queries. With ``reference``: ``cost_reference``, its timing, ``agreement``
        (share of queries sent to the same point: at eps > 0, two independent draws), ``excess_cost``
        (``cost - cost_reference``) and ``gain_retained``, the share of the OT gain over independent pairs
        that the PCA pairs keep, ``(cost_independent - cost) / (cost_independent - cost_reference)``.
    """
    d = y.shape[1]
    y64 = y.to("cpu", torch.float64)
    b = potential.weights.to("cpu", torch.float64)
    out = {"cost_independent": float(d + (b * y64.square().sum(dim=1)).sum())}

    def measure(pot, seed):
        gen = torch.Generator(device=pot.y.device).manual_seed(seed)
        total, seconds, idx = 0.0, 0.0, []
        for start in range(0, x.shape[0], chunk):
            q = x[start:start + chunk]
            began = time.perf_counter()
            index = pot.assign(q, generator=gen).cpu()
            if pot.y.device.type == "cuda":
                torch.cuda.synchronize(pot.y.device)
            seconds += time.perf_counter() - began
            total += float((q[:, :d].to(torch.float64).cpu() - y64[index]).square().sum())
            idx.append(index)
        return total / x.shape[0], seconds * 1024 / x.shape[0], torch.cat(idx)

    out["cost"], out["pairing_seconds_per_1k"], index = measure(potential, generator_seed)
    if reference is not None:
        out["cost_reference"], out["reference_pairing_seconds_per_1k"], ref = measure(reference, generator_seed + 1)
        out["agreement"] = float((index == ref).double().mean())
        out["excess_cost"] = out["cost"] - out["cost_reference"]
        gain = out["cost_independent"] - out["cost_reference"]
        out["gain_retained"] = (out["cost_independent"] - out["cost"]) / gain if gain > 0 else float("nan")
    return out
