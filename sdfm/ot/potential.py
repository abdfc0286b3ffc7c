"""The fitted semidiscrete dual potential and its derived views (assignment, marginal, chi^2)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from sdfm.io import atomic_torch_save
from sdfm.ot.chi2 import chi2_unbiased
from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS, augment_keys, augment_queries, reduce_scores, sample_assignment

__all__ = ["SemidiscretePotential", "data_fingerprint"]


def data_fingerprint(y: Tensor) -> str:
    """Content hash of the target points, stored with a potential to refuse a wrong data set."""
    array = y.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(str(array.shape).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()[:16]


@dataclass
class SemidiscretePotential:
    """Dual potential g of the semidiscrete OT problem from N(0, I_d) to ``sum_j b_j delta_{y_j}``.

    The cost is ``c(x, y) = -<x, y>``. The coupling is
    ``pi_j(x) = softmax_j((<x, y_j> + g_j) / eps + log b_j)``, the one-hot argmax at eps = 0,
    i.e. a maximum inner product search of ``[x, 1]`` against ``[y_j, g_j]``. The squared
    Euclidean potentials ``1/2 |x - y|^2`` of the same coupling are ``g_j + |y_j|^2 / 2``
    (see :meth:`squared_euclidean_g`).

    Attributes:
        y: (N, d) target points.
        g: (N,) potential (the averaged iterate of the solver).
        epsilon: absolute regularisation, in units of the cost.
        weights: (N,) target weights b (uniform when built with ``None``).
        history: convergence curve, ``{"step": [...], "chi2": [...]}``, and solver metadata.
        block_elems: largest score block held in memory by the kernel.
    """

    y: Tensor
    g: Tensor
    epsilon: float = 0.0
    weights: Tensor | None = None
    history: dict = field(default_factory=dict)
    block_elems: int = DEFAULT_BLOCK_ELEMS

    def __post_init__(self) -> None:
        if self.weights is None:
            n = self.y.shape[0]
            self.weights = torch.full((n,), 1.0 / n, dtype=torch.float64, device=self.y.device)
        self._keys: Tensor | None = None
        self._screened = None  # the bf16 copy of the keys of the screened pairing, made on first use
        self._faiss = None  # the faiss index over the keys, built on first use

    @property
    def n_points(self) -> int:
        return self.y.shape[0]

    @property
    def dim(self) -> int:
        return self.y.shape[1]

    @property
    def keys(self) -> Tensor:
        """The MIPS keys ``[y_j, g_j + eps log b_j]`` (cached)."""
        if self._keys is None:
            self._keys = augment_keys(self.y, self.g, self.epsilon, self.weights.log())
        return self._keys

    def to(self, device: str | torch.device) -> "SemidiscretePotential":
        """Return a copy on ``device``."""
        return SemidiscretePotential(
            self.y.to(device), self.g.to(device), self.epsilon, self.weights.to(device), self.history, self.block_elems
        )

    def squared_euclidean_g(self) -> Tensor:
        """The same potential for the cost 1/2 |x - y|^2: ``g_j + |y_j|^2 / 2``."""
        return self.g + 0.5 * self.y.square().sum(dim=1).to(self.g.dtype)

    def assign(self, x: Tensor, generator: torch.Generator | None = None, top_k: int | None = None,
               method: str = "auto") -> Tensor:
        """Pair each source point with a data index: the argmax at eps = 0, a draw from pi(x) at eps > 0.

        Args:
            x: (B, d) source samples.
            generator: random generator for the draw at eps > 0.
            top_k: at eps > 0, draw among the k best columns only (approximate, faster; ``exact`` only).
            method: ``"exact"`` (float32 score blocks, :func:`sdfm.ot.kernel.sample_assignment`;
                inverse-CDF draw at eps > 0), ``"screened"`` (bfloat16 screen, exact re-rank and
                verification, Gumbel-max at eps > 0: :class:`sdfm.ot.pairing.ScreenedPairing`),
                ``"faiss"`` (eps = 0 only: a ``faiss.IndexFlatIP`` over the keys, built once,
                :mod:`sdfm.ot.mips`) or ``"auto"``: screened on CUDA float32; faiss on CPU where
                :func:`sdfm.ot.mips.faiss_pays_for_fixed_keys` says it is faster (eps = 0,
                d >= 784, B >= 256, faiss installed); exact elsewhere. All are exact (faiss and
                exact agree up to float32 ties); at eps > 0 exact and screened draw different
                (equally distributed) samples from the same generator.
        """
        method = self._pairing_method(method, self.y.device, top_k, n_queries=x.shape[0])
        if method == "screened":
            if self._screened is None:
                from sdfm.ot.pairing import ScreenedPairing

                self._screened = ScreenedPairing(self.keys, block_elems=self.block_elems)
            return self._screened(x, self.epsilon, generator)
        queries = augment_queries(x.to(self.y.device, self.y.dtype))
        if method == "faiss":
            if self.epsilon > 0:
                raise ValueError("pairing method 'faiss' is an argmax: it needs epsilon = 0 (use 'exact' or 'auto')")
            if self._faiss is None:
                from sdfm.ot.mips import FaissMips

                self._faiss = FaissMips().build(self.keys)
            return self._faiss(queries)
        return sample_assignment(
            queries, self.keys, self.epsilon, generator=generator, top_k=top_k, block_elems=self.block_elems
        )

    def _pairing_method(self, method: str, device, top_k: int | None = None, n_queries: int | None = None) -> str:
        if method not in ("auto", "exact", "screened", "faiss"):
            raise ValueError(f"unknown pairing method {method!r}: expected 'auto', 'exact', 'screened' or 'faiss'")
        if method == "auto":
            from sdfm.ot.mips import faiss_pays_for_fixed_keys
            from sdfm.ot.pairing import default_pairing

            usable = self.y.dtype == torch.float32 and top_k is None
            method = default_pairing(device) if usable else "exact"
            if (method == "exact" and usable and n_queries is not None
                    and faiss_pays_for_fixed_keys(self.dim + 1, n_queries, device, self.epsilon)):
                method = "faiss"
        return method

    def pairing_backend(self, device=None, batch_size: int | None = None) -> str:
        """What :meth:`assign` uses by default on ``device`` (the potential's) for batches of
        ``batch_size`` queries: ``"screened-bf16"``, ``"faiss-flat-ip"`` or ``"torch-fp32"`` (a run parameter)."""
        method = self._pairing_method("auto", device if device is not None else self.y.device, n_queries=batch_size)
        return {"screened": "screened-bf16", "faiss": "faiss-flat-ip"}.get(method, "torch-fp32")

    def marginal_counts(self, x: Tensor):
        """Column sums of the coupling rows pi(x_i): ``(mass, mass_sq)`` as float64 (N,)."""
        queries = augment_queries(x.to(self.y.device, self.y.dtype))
        reduction = reduce_scores(queries, self.keys, self.epsilon, block_elems=self.block_elems)
        return reduction.mass, reduction.mass_sq

    def chi2(self, x: Tensor) -> float:
        """Unbiased estimate of chi^2(m(g), b) from the source samples ``x`` (paper Eq. 3.5)."""
        mass, mass_sq = self.marginal_counts(x)
        return chi2_unbiased(mass, mass_sq, x.shape[0], self.weights)

    def semi_dual(self, x: Tensor) -> float:
        """Monte Carlo estimate of ``F_eps(g) = <b, g> + E_x f_eps(x; g)`` on the samples ``x``."""
        queries = augment_queries(x.to(self.y.device, self.y.dtype))
        value = reduce_scores(queries, self.keys, self.epsilon, need_mass=False, block_elems=self.block_elems).value
        return float((self.weights * self.g.to(torch.float64)).sum() - value.to(torch.float64).mean())

    def save(self, path: str | Path, include_data: bool = True) -> None:
        """Write the potential atomically; without the data, a fingerprint guards :meth:`load`."""
        state = {
            "g": self.g.cpu(),
            "epsilon": self.epsilon,
            "weights": self.weights.cpu(),
            "history": self.history,
            "fingerprint": data_fingerprint(self.y),
            "y": self.y.cpu() if include_data else None,
        }
        atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: str | Path, y: Tensor | None = None, device: str | torch.device | None = None):
        """Read a potential written by :meth:`save`; ``y`` is required when it was saved without data."""
        state = torch.load(path, map_location="cpu", weights_only=False)
        if y is None:
            if state["y"] is None:
                raise ValueError(f"{path} was saved without its data points: pass y= to SemidiscretePotential.load")
            y = state["y"]
        elif data_fingerprint(y) != state["fingerprint"]:
            raise ValueError(f"{path} was fitted on other data points (fingerprint mismatch): refit the potential")
        potential = cls(y, state["g"], state["epsilon"], state["weights"], state["history"])
        return potential.to(device) if device is not None else potential
