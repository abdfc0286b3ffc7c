"""The PCA study's report part, at its old import path: it lives in :mod:`sdfm.studies.pca`."""

from sdfm.studies.pca import pca_section, plot_pca_study, write_pca_study_report  # noqa: F401

__all__ = ["plot_pca_study", "pca_section", "write_pca_study_report"]
