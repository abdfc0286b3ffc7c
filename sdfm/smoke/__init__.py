"""Smoke runs of a workflow config: its whole DAG, at toy scale, on stand-in files of its real formats.

``sdfm smoke-config CONFIG`` (:func:`sdfm.smoke.run.smoke_config`) writes generated files in the
formats the config's file-based sources read (:mod:`sdfm.smoke.standins`), a randomly initialised
Inception network for FID (:mod:`sdfm.smoke.inception`), rewrites the config to toy scale
(:mod:`sdfm.smoke.shrink`) and runs Snakemake to ``report.md``. Application layer: the library
never imports it.
"""
