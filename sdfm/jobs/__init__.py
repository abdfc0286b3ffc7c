"""The workflow's jobs: one module per Snakemake rule, called by ``sdfm <subcommand>``.

Each job reads its inputs from files, takes every setting as an argument, writes its outputs
atomically and logs one MLflow run (see :mod:`sdfm.tracking`). Modules are imported by the
CLI one at a time, so a job loads only what it needs.
"""
