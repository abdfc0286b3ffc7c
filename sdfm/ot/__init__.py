"""Optimal transport: the semidiscrete potential (fit, assign, chi^2) and batch OT pairing."""

from sdfm.ot.batch import batch_ot_pairing, inner_product_cost, relative_epsilon, sinkhorn_plan
from sdfm.ot.chi2 import chi2_plugin, chi2_unbiased
from sdfm.ot.potential import SemidiscretePotential, data_fingerprint
from sdfm.ot.solver import SemidiscreteSolver, SolverConfig, fit_potential, gap_scale

__all__ = [
    "SemidiscretePotential",
    "SemidiscreteSolver",
    "SolverConfig",
    "batch_ot_pairing",
    "chi2_plugin",
    "chi2_unbiased",
    "data_fingerprint",
    "fit_potential",
    "gap_scale",
    "inner_product_cost",
    "relative_epsilon",
    "sinkhorn_plan",
]
