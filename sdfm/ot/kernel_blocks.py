"""Building blocks of the semidiscrete kernel (:mod:`sdfm.ot.kernel`): augmented queries and keys,
row blocks and their sizes, the reusable score buffer, the row argmax and the row exponentials.

The CPU tunings (the chunked argmax of :func:`row_argmax`, the cache sub-blocks of the eps > 0 row
exponentials in :func:`exp_rows`) and the CUDA block size (:func:`block_elems_for`) are explained
in the docstring of :mod:`sdfm.ot.kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ARGMAX_CHUNK", "CACHE_ELEMS", "CUDA_MEMORY_FRACTION", "DEFAULT_BLOCK_ELEMS", "FUSED_MAX_DIM",
           "MIN_BLOCK_ROWS", "Reduction", "Workspace", "augment_keys", "augment_queries", "block_elems_for",
           "exp_rows", "key_column", "min_block_rows", "row_argmax", "row_blocks"]

#: Largest number of score entries held at once (2^26 float32 = 256 MiB).
DEFAULT_BLOCK_ELEMS = 1 << 26
#: Columns per chunk of :func:`row_argmax` (values-only max per chunk, index in one chunk; measured there).
ARGMAX_CHUNK = 256
#: Scores per sub-block of the eps > 0 row reductions on CPU (2^18 float32 = 1 MiB, within L2).
CACHE_ELEMS = 1 << 18
#: On CUDA, the share of the free device memory a score block may take.
CUDA_MEMORY_FRACTION = 0.25
#: Largest data dimension d for which CUDA reductions use the fused kernels by default: above
#: it the matmul dominates and cuBLAS (the torch path) is the faster matmul. A first guess, to
#: be set from ``benchmarks/bench_gpu.py`` (its kernel rows time both paths).
FUSED_MAX_DIM = 256


def block_elems_for(block_elems: int, device: torch.device | str, dtype: torch.dtype = torch.float32) -> int:
    """Scores per block on ``device``: ``block_elems`` on CPU; on CUDA at least that, and up to
    :data:`CUDA_MEMORY_FRACTION` of the free device memory (fewer, larger launches; below 2^31)."""
    device = torch.device(device)
    if device.type != "cuda":
        return block_elems
    free, _ = torch.cuda.mem_get_info(device)
    by_memory = int(CUDA_MEMORY_FRACTION * free) * 8 // torch.finfo(dtype).bits
    return max(block_elems, min(by_memory, (1 << 31) - 1))


class Workspace:
    """A score buffer reused across calls (one per solver, searcher or benchmark state).

    :meth:`scores` returns a contiguous (rows, cols) view of one flat buffer, reallocated only
    when it is too small or on another device / dtype. Reuse saves the page faults of a fresh
    B x N block at every call (on CPU they cost as much as the matmul at small d); the buffer
    never holds more than the largest block asked for, at most ``block_elems`` scores.
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None

    def scores(self, rows: int, cols: int, like: Tensor) -> Tensor:
        """An uninitialised (rows, cols) tensor with the device and dtype of ``like``."""
        need = rows * cols
        buf = self._buffer
        if buf is None or buf.numel() < need or buf.device != like.device or buf.dtype != like.dtype:
            self._buffer = buf = None  # free the old buffer before allocating its successor
            self._buffer = buf = torch.empty(need, device=like.device, dtype=like.dtype)
        return buf[:need].view(rows, cols)

    def matmul(self, queries: Tensor, keys: Tensor) -> Tensor:
        """``queries @ keys.T`` written into the buffer (a fresh tensor when autograd tracks the inputs)."""
        if torch.is_grad_enabled() and (queries.requires_grad or keys.requires_grad):
            return queries @ keys.T  # out= does not support autograd
        return torch.matmul(queries, keys.T, out=self.scores(queries.shape[0], keys.shape[0], keys))

    def release(self) -> None:
        """Drop the buffer (the next call allocates again)."""
        self._buffer = None


def row_argmax(scores: Tensor, chunk: int = ARGMAX_CHUNK) -> tuple[Tensor, Tensor]:
    """``scores.max(dim=1)`` (values, first index of the maximum), without its per-element index work.

    The maximum of each chunk of ``chunk`` columns is a values-only reduction (several times
    cheaper than max-with-index on CPU); the first chunk holding the row maximum is found on the
    (rows, N / chunk) chunk maxima, and the index is located inside that chunk alone (a copy of
    its ``chunk`` contiguous scores per row). Ties go to the lowest index, as with ``max(dim=1)``:
    the first maximal chunk, then the first maximal column in it. Measured (1 CPU thread, process
    time, vs ``max(dim=1)`` / values-only ``amax``): B x N = 256 x 1e4: 1.3 ms vs 3.1 / 0.45;
    1024 x 1e4: 7.5 vs 10.8 / 5.5; 256 x 1e5: 13.0 vs 24.0 / 11.4; 64 x 1e6: 30.7 vs 66.7 / 28.6
    (chunk 256; 2048 was 2x slower at N = 1e4, 128 no faster).
    """
    rows, n = scores.shape
    if n <= chunk or scores.is_cuda:  # the chunking is a CPU tuning; one launch on a GPU
        return scores.max(dim=1)
    full = n // chunk * chunk
    chunks = scores[:, :full].unflatten(1, (full // chunk, chunk))  # (rows, k, chunk), a view
    maxima = chunks.amax(dim=2)
    if full < n:  # the short tail chunk: its max-with-index directly (fewer than `chunk` columns)
        tail_best, tail_index = scores[:, full:].max(dim=1)
        maxima = torch.cat([maxima, tail_best[:, None]], dim=1)
    best, which = maxima.max(dim=1)
    inside = which.clamp(max=chunks.shape[1] - 1)
    # one contiguous row of `chunk` scores per query (a copy of rows x chunk, not a gather)
    index = inside * chunk + chunks[torch.arange(rows, device=scores.device), inside].argmax(dim=1)
    if full < n:
        index = torch.where(which == chunks.shape[1], full + tail_index, index)
    return best, index


@dataclass
class Reduction:
    """Row and column reductions of the score matrix for one batch of queries.

    Attributes:
        value: (B,) ``max_j s_ij`` at eps = 0, ``eps logsumexp_j s_ij / eps`` at eps > 0.
        index: (B,) the argmax at eps = 0, ``None`` otherwise.
        mass: (N,) float64 column sums of the coupling rows pi(x_i) (counts at eps = 0).
        mass_sq: (N,) float64 column sums of pi(x_i)^2 (equal to ``mass`` at eps = 0).
        margin: (B,) gap between the best and second best score at eps = 0, else ``None``.
        mass_cube: (N,) float64 column sums of pi(x_i)^3 when asked for (``mass`` at eps = 0).
    """

    value: Tensor
    index: Tensor | None
    mass: Tensor | None
    mass_sq: Tensor | None
    margin: Tensor | None = None
    mass_cube: Tensor | None = None


def augment_queries(x: Tensor) -> Tensor:
    """Return ``[x, 1]`` so that one matmul against :func:`augment_keys` adds the potential."""
    return torch.cat([x, x.new_ones(x.shape[0], 1)], dim=1)


def key_column(g: Tensor, dtype: torch.dtype, epsilon: float = 0.0, log_weights: Tensor | None = None) -> Tensor:
    """The last column of :func:`augment_keys`: ``g + eps log b`` computed in ``dtype``."""
    shift = g.to(dtype)
    if epsilon > 0 and log_weights is not None:
        shift = shift + epsilon * log_weights.to(dtype)
    return shift


def augment_keys(y: Tensor, g: Tensor, epsilon: float = 0.0, log_weights: Tensor | None = None) -> Tensor:
    """Return the keys ``[y_j, g_j + eps log b_j]`` of the maximum inner product search."""
    return torch.cat([y, key_column(g, y.dtype, epsilon, log_weights)[:, None]], dim=1)


#: Most rows :func:`min_block_rows` asks a block to keep.
MIN_BLOCK_ROWS = 128


def min_block_rows(dim: int) -> int:
    """Fewest query rows per block worth keeping for keys of dimension ``dim``: ``min(128, dim // 4)``.

    Every row block reads all N keys; with few rows the matmul is bound by that read (measured,
    1 CPU thread, N = 2e5, D = 785, 256 queries: blocks of 16 / 67 / 128 rows cost 2.5 / 1.38 /
    1.00 x one matmul; 67 rows is what 2^26 scores leave at N = 1e6). The floor costs at most
    ``N dim / 4`` scores of memory, a quarter of the keys themselves.
    """
    return max(1, min(MIN_BLOCK_ROWS, dim // 4))


def row_blocks(n_rows: int, n_keys: int, block_elems: int = DEFAULT_BLOCK_ELEMS, min_rows: int = 1):
    """Yield slices of ``max(1, min_rows, block_elems // n_keys)`` query rows (the last may be shorter)."""
    step = max(1, min_rows, block_elems // max(1, n_keys))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def exp_rows(scores: Tensor, sub_elems: int = CACHE_ELEMS) -> tuple[Tensor, Tensor]:
    """In place ``s_ij <- exp(max(s_ij - m_i, -40))``; returns the row maxima m and row sums.

    Row sub-blocks of about ``sub_elems`` scores go through max, subtract, clamp, exp and sum
    while they sit in cache (one trip through memory instead of five). exp of inputs below
    about -87 takes a slow subnormal path on CPU (up to 1000x); terms below e^-40 change a row
    sum by at most N * 4e-18 relative, so they are clamped first.
    """
    rows, n = scores.shape
    if scores.is_cuda:  # one pass per op over the whole block; no subnormal slow path to avoid
        row_max = scores.amax(dim=1, keepdim=True)
        row_sum = scores.sub_(row_max).exp_().sum(dim=1)
        return row_max.squeeze(1), row_sum
    step = max(1, sub_elems // max(1, n))
    if step >= rows:
        row_max = scores.amax(dim=1, keepdim=True)
        row_sum = scores.sub_(row_max).clamp_(min=-40.0).exp_().sum(dim=1)
        return row_max.squeeze(1), row_sum
    row_max = scores.new_empty(rows)
    row_sum = scores.new_empty(rows)
    for start in range(0, rows, step):
        part = scores[start:start + step]
        top = part.amax(dim=1, keepdim=True)
        torch.sum(part.sub_(top).clamp_(min=-40.0).exp_(), dim=1, out=row_sum[start:start + step])
        row_max[start:start + step] = top.squeeze(1)
    return row_max, row_sum
