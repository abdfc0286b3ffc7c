"""The convergence study's report part, at its old import path: it lives in :mod:`sdfm.studies.convergence`."""

from sdfm.studies.convergence import (REFERENCE_EXPONENT, convergence_section, plot_convergence,  # noqa: F401
                                      write_convergence_report)

__all__ = ["convergence_section", "plot_convergence", "write_convergence_report"]
