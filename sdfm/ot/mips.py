"""Maximum inner product search (MIPS) backends for the eps = 0 semidiscrete assignment.

At eps = 0 the coupling pairs a source point x_i with

    j*(i) = argmax_j <q_i, k_j>,   q_i = [x_i, 1],   k_j = [y_j, g_j],

i.e. ``argmax_j <x_i, y_j> + g_j``. Two exact backends compute it behind one interface:

* :class:`TorchMips`: the blocked matmul + argmax of :func:`sdfm.ot.kernel.reduce_scores`
  (memory O(N d + block_elems), any device torch runs on).
* :class:`FaissMips`: ``faiss.IndexFlatIP`` (a ``GpuIndexFlatIP`` when faiss has GPU support
  and the tensors are on CUDA). While fitting, the keys change at every SGD step, so
  :meth:`FaissMips.search` builds the index per call; for a FIXED potential (pairing at
  training time) :meth:`FaissMips.build` returns a reusable searcher.

:func:`choose_backend` is the ``"auto"`` rule, see its docstring for the measurement.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from sdfm.ot.kernel import DEFAULT_BLOCK_ELEMS, Workspace, reduce_scores

__all__ = ["BACKENDS", "FAISS_FIXED_MIN_DIM", "FAISS_FIXED_MIN_QUERIES", "FAISS_WINS", "FaissMips", "MipsBackend",
           "Searcher", "TorchMips", "choose_backend", "faiss_available", "faiss_pays_for_fixed_keys", "get_backend"]


@runtime_checkable
class Searcher(Protocol):
    """A MIPS index over fixed keys: ``searcher(queries)`` returns the (B,) long argmax."""

    def __call__(self, queries: Tensor) -> Tensor: ...


@runtime_checkable
class MipsBackend(Protocol):
    """Exact MIPS: ``search(queries (B, D), keys (N, D)) -> (B,) long`` with ``argmax_j <q_i, k_j>``."""

    name: str

    def search(self, queries: Tensor, keys: Tensor) -> Tensor: ...

    def build(self, keys: Tensor) -> Searcher: ...


def _check(queries: Tensor, keys: Tensor) -> None:
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (B, D) and keys (N, D) must share D, got {tuple(queries.shape)}, {tuple(keys.shape)}")
    if keys.shape[0] < 1:
        raise ValueError("keys must hold at least one row")


class TorchMips:
    """Blocked torch matmul + argmax (:func:`sdfm.ot.kernel.reduce_scores` with ``need_mass=False``).

    Args:
        block_elems: largest number of scores held at once.
    """

    name = "torch"

    def __init__(self, block_elems: int = DEFAULT_BLOCK_ELEMS) -> None:
        self.block_elems = int(block_elems)
        self.workspace = Workspace()  # the score buffer, reused by every search

    def __repr__(self) -> str:
        return f"TorchMips(block_elems={self.block_elems})"

    def search(self, queries: Tensor, keys: Tensor) -> Tensor:
        _check(queries, keys)
        queries = queries.to(keys.device, keys.dtype)
        return reduce_scores(queries, keys, 0.0, need_mass=False, block_elems=self.block_elems,
                             workspace=self.workspace).index

    def build(self, keys: Tensor) -> Searcher:
        """A searcher over fixed keys (torch needs no index: it just holds the keys)."""
        return lambda queries: self.search(queries, keys)


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss is an optional extra
        raise ImportError("the 'faiss' MIPS backend needs faiss: pip install 'sdfm[faiss]' (or 'sdfm[faiss-gpu]')") from err
    return faiss


def faiss_has_gpu() -> bool:
    """True when the installed faiss was built with GPU support and sees a GPU."""
    faiss = _faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class _FaissSearcher:
    """A flat inner-product index over fixed keys; call it on (B, D) queries."""

    def __init__(self, keys: Tensor, resources=None) -> None:
        faiss = _faiss()
        _check(keys[:1], keys)
        self.device = keys.device
        self.dim = keys.shape[1]
        self.on_gpu = keys.device.type == "cuda" and faiss_has_gpu()
        if self.on_gpu:
            import faiss.contrib.torch_utils  # noqa: F401  (lets GPU indexes take CUDA tensors)

            config = faiss.GpuIndexFlatConfig()
            config.device = keys.device.index or 0
            self.index = faiss.GpuIndexFlatIP(resources, self.dim, config)
            self.index.add(keys.detach().float().contiguous())
        else:
            self.index = faiss.IndexFlatIP(self.dim)
            self.index.add(_as_numpy(keys))

    def __call__(self, queries: Tensor) -> Tensor:
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be (B, {self.dim}), got {tuple(queries.shape)}")
        if self.on_gpu:
            _, index = self.index.search(queries.detach().to(self.device).float().contiguous(), 1)
            return index[:, 0].long()
        _, index = self.index.search(_as_numpy(queries), 1)
        return torch.from_numpy(index[:, 0]).long().to(queries.device)


def _as_numpy(t: Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to("cpu", torch.float32).numpy())


class FaissMips:
    """Exact MIPS with ``faiss.IndexFlatIP`` (float32; on the GPU when faiss and the keys allow).

    :meth:`search` rebuilds the index every call (the keys change at every SGD step; the build
    is one O(N D) copy). :meth:`build` returns a reusable searcher for a fixed potential.
    """

    name = "faiss"

    def __init__(self) -> None:
        _faiss()
        self._resources = None

    def __repr__(self) -> str:
        return "FaissMips()"

    def _gpu_resources(self, keys: Tensor):
        if keys.device.type == "cuda" and faiss_has_gpu() and self._resources is None:
            self._resources = _faiss().StandardGpuResources()
        return self._resources

    def build(self, keys: Tensor) -> Searcher:
        """Index the fixed keys (N, D) once; the returned searcher maps (B, D) queries to (B,) indices."""
        return _FaissSearcher(keys, self._gpu_resources(keys))

    def search(self, queries: Tensor, keys: Tensor) -> Tensor:
        _check(queries, keys)
        return self.build(keys)(queries)


BACKENDS = {"torch": TorchMips, "faiss": FaissMips}

#: Shapes (n_keys, dim, n_queries) at which faiss beat torch when the index is rebuilt per call
#: (fitting: the keys change at every step), per device type; a shape is routed to faiss only
#: inside a box ``n_keys <= N and dim <= D and n_queries <= B`` listed here. None so far.
FAISS_WINS: dict[str, list[tuple[int, int, int]]] = {"cpu": [], "cuda": []}

#: The fixed-potential rule (:func:`faiss_pays_for_fixed_keys`): faiss from this key dimension
#: (d + 1, the potential column included) and this many queries per search, on CPU at eps = 0.
FAISS_FIXED_MIN_DIM, FAISS_FIXED_MIN_QUERIES = 785, 256


def faiss_available() -> bool:
    """True when ``import faiss`` works (faiss-cpu or faiss-gpu, the optional extras)."""
    try:
        _faiss()
    except ImportError:
        return False
    return True


def faiss_pays_for_fixed_keys(dim: int, n_queries: int, device: str | torch.device = "cpu",
                              epsilon: float = 0.0) -> bool:
    """Whether pairing against a FIXED potential (training time) should search a faiss index.

    Rule: CPU, ``epsilon == 0`` (an argmax; faiss draws nothing at eps > 0), key dimension
    ``dim >= 785`` (data of d >= 784), ``n_queries >= 256`` per search, and faiss importable.
    Everywhere else the torch paths of :meth:`sdfm.ot.SemidiscretePotential.assign` win or
    nothing was measured (CUDA: the bf16-screened pairing, faiss-gpu not measured yet).

    Measurement (``benchmarks/bench_faiss.py``: index built once, one thread each, process CPU
    time, median of interleaved repeats, same assignments; faiss-cpu 1.15.1; ``reports/bench/faiss.csv``),
    ratio faiss / torch ``assign(method="exact")``:

    ======== ====== ======= ======= ======= =======
    N          d    B=64    B=128   B=256   B=1024
    ======== ====== ======= ======= ======= =======
    1e4        64   1.79    2.36    2.63    1.95
    1e4        784  5.31    6.75    0.91    0.73
    1e4        3072 0.70    0.79    0.83    0.85
    1e5        64   5.93    3.90    4.45    5.35
    1e5        784  6.08    6.36    0.76    (0.78)
    ======== ====== ======= ======= ======= =======

    (In parentheses: the previous run of the same script.) The rule keeps B >= 256 although faiss
    also won at d = 3072 from B = 64: the cut-off in B was measured at d = 784 only.
    faiss-cpu's flat index hands queries to BLAS only from 20 rows on and then in 1024-key tiles
    reduced through a heap: at d = 64 the reduction dominates, at d = 784 with B >= 256 its GEMM
    tiles beat torch's blocked matmul + argmax by ~25%.
    """
    return (torch.device(device).type == "cpu" and epsilon == 0 and dim >= FAISS_FIXED_MIN_DIM
            and n_queries >= FAISS_FIXED_MIN_QUERIES and faiss_available())


def choose_backend(n_keys: int, dim: int, n_queries: int, device: str | torch.device = "cpu") -> str:
    """The ``"auto"`` rule while FITTING (keys change every call): the faster exact backend.

    Rule: ``"faiss"`` inside a box of :data:`FAISS_WINS` for the device type, else ``"torch"``.
    Both tables are empty: torch won every measured shape, so ``"auto"`` is torch everywhere.
    (A fixed potential at training time has its own rule, :func:`faiss_pays_for_fixed_keys`.)

    Measurement (CPU, 1 thread each: ``torch.set_num_threads(1)``, ``faiss.omp_set_num_threads(1)``,
    process time, median of 3-5 interleaved repeats, faiss-cpu 1.15.1, torch 2.14; the 2-core
    machine was shared, so wall time was unusable). Ratio = faiss time / torch time, index
    rebuilt per call (as while fitting); building it once changes the ratio by < 25%:

    ======== ===== ========== ========== ========== ==========
    N         D    B=16       B=64       B=256      B=1024
    ======== ===== ========== ========== ========== ==========
    1e3       3    2.0        2.9        1.4        2.1
    1e4       3    3.4        2.3        1.4        1.4
    1e5       3    2.7        1.4        1.3        1.5
    1e3       65   2.0        2.9        3.0        2.5
    1e4       65   3.2        3.9        3.5        2.3
    1e5       65   4.6        5.8        3.3        --
    1e3       785  4.2        6.1        4.2        4.5
    1e4       785  4.8        8.4        3.9        --
    1e5       785  12.0       --         --         --
    ======== ===== ========== ========== ========== ==========

    (Wall time with 2 threads on the loaded machine agreed: faiss 1.3-14x slower from N = 1e4,
    a tie within noise at N = 1e3; so did whole SGD steps in ``benchmarks/bench_kernel.py``,
    faiss 1.5-5x slower at N = 1e4-1e5, d = 64-784, B = 256.) faiss-cpu's flat index reduces BLAS tiles of 1024 keys
    through a heap, while torch takes one argmax over a contiguous row block. On CUDA nothing
    was measured yet (faiss-gpu is not a dependency): torch until a GPU run fills
    ``FAISS_WINS["cuda"]``.

    Args:
        n_keys: N, the number of keys.
        dim: D, the key dimension (d + 1 with the potential column).
        n_queries: B, queries per search.
        device: where the tensors live.
    """
    boxes = FAISS_WINS.get(torch.device(device).type, [])
    if any(n_keys <= n and dim <= d and n_queries <= b for n, d, b in boxes):
        return "faiss"
    return "torch"


def get_backend(name: str = "auto", *, n_keys: int | None = None, dim: int | None = None,
                n_queries: int | None = None, device: str | torch.device = "cpu", **kw) -> MipsBackend:
    """Return a MIPS backend by name: ``"torch"``, ``"faiss"`` or ``"auto"``.

    Args:
        name: backend name; ``"auto"`` applies :func:`choose_backend` to the shape arguments
            (``"torch"`` when they are not given).
        n_keys, dim, n_queries, device: the problem shape, used by ``"auto"`` only.
        **kw: constructor arguments of the backend (``block_elems`` for torch).

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    if name == "auto":
        if None in (n_keys, dim, n_queries):
            name = "torch"
        else:
            name = choose_backend(n_keys, dim, n_queries, device)
    if name not in BACKENDS:
        raise ValueError(f"unknown MIPS backend {name!r}; choose one of {sorted(BACKENDS) + ['auto']}")
    cls = BACKENDS[name]
    return cls(**kw) if name == "torch" else cls()
