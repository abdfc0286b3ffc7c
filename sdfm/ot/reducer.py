"""Where the N points of a semi-dual fit live: :class:`Reducer` (all in this process).

:class:`sdfm.ot.distributed.ShardedReducer` overrides it with collectives when the points are
split across processes, so one SGD loop (:class:`sdfm.ot.solver.SemidiscreteSolver`) serves both.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from sdfm.ot.chi2 import Chi2Estimate, chi2_from_moments, chi2_moments, chi2_unbiased
from sdfm.ot.solver_init import initial_potential, target_weights

__all__ = ["Reducer"]


class Reducer:
    """The solver's view of the whole data set when all N points live in this process.

    Every quantity of an SGD step that involves all N points goes through one of these methods
    (or through ``reduce_scores(..., combine=self.combine)``). Here they are the identity or the
    plain formula; :class:`sdfm.ot.distributed.ShardedReducer` overrides them with collectives
    over a process group, each process holding a contiguous shard of the points.
    """

    #: cross-shard hook of :func:`sdfm.ot.kernel.reduce_scores` (``None``: nothing to combine).
    combine = None
    #: whether this process shows the progress bar.
    is_main = True

    def target_weights(self, weights: Tensor | None, n: int, device) -> Tensor:
        """This process's target weights b, normalised to sum to one over all points."""
        return target_weights(weights, n, device)

    def initial_potential(self, y: Tensor, init: str) -> Tensor:
        """The starting potential of this process's points (see :func:`sdfm.ot.solver_init.initial_potential`)."""
        return initial_potential(y, init)

    def minimum(self, value: float) -> float:
        """The minimum of ``value`` over all processes."""
        return value

    def total(self, value: Tensor) -> Tensor:
        """The sum of the scalar tensor ``value`` over all processes, the same on each."""
        return value

    def chi2(self, mass: Tensor, mass_sq: Tensor, n_samples: int, weights: Tensor) -> float:
        """The chi^2 estimate (:func:`sdfm.ot.chi2.chi2_unbiased`) from this process's columns."""
        return chi2_unbiased(mass, mass_sq, n_samples, weights)

    def chi2_estimate(self, mass: Tensor, mass_sq: Tensor, mass_cube: Tensor, n_samples: int,
                      weights: Tensor) -> Chi2Estimate:
        """The chi^2 estimate with its sd (:func:`sdfm.ot.chi2.chi2_moments`, summed over processes)."""
        return chi2_from_moments(self.sum_vector(chi2_moments(mass, mass_sq, mass_cube, n_samples, weights)),
                                 n_samples)

    def sum_vector(self, value: Tensor) -> Tensor:
        """The elementwise sum of the 1-D tensor ``value`` over all processes, the same on each."""
        return value

    def count(self, n_local: int) -> int:
        """The number of points over all processes."""
        return n_local

    def checkpoint(self, path: str | Path) -> str | Path:
        """This process's checkpoint file, given the solver's ``checkpoint`` argument."""
        return path

    def agree(self, value, what: str):
        """Return ``value``, after checking that every process holds the same one."""
        return value
