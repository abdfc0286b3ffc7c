"""Argument types and the shared options of the ``sdfm`` subcommands, for :mod:`sdfm.cli` and the studies.

A study (:mod:`sdfm.studies`) adds its own subcommands through :class:`Commands`, so the command
line of a new study is written in its module, not in :mod:`sdfm.cli`. Nothing here imports torch:
building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
import os

__all__ = ["Commands", "job_context", "json_object", "json_or_null", "seconds"]


def json_object(text: str) -> dict:
    """A JSON object given on the command line (``--settings '{"steps": 100}'``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not a JSON object: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object such as '{\"steps\": 100}'")
    return value


def json_or_null(text: str) -> dict | None:
    """A JSON object, or None for an empty string, ``null`` or ``None``."""
    return None if text.strip() in ("", "null", "None") else json_object(text)


def seconds(text: str) -> float:
    """A number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


def job_context(args):
    """The :class:`sdfm.runtime.JobContext` of a job subcommand (threads set, progress interval exported)."""
    from sdfm.progress import INTERVAL_ENV
    from sdfm.runtime import JobContext, setup_threads

    setup_threads(args.threads)
    if args.progress_seconds is not None:  # read by sdfm.progress (also in torchrun's other ranks)
        os.environ[INTERVAL_ENV] = str(args.progress_seconds)
    return JobContext(experiment=args.experiment, results_dir=args.results_dir, progress=not args.no_progress,
                      log_model=getattr(args, "log_model", False))


class Commands:
    """The subcommands of the ``sdfm`` parser: :meth:`job` (with the options every job shares) or :meth:`plain`."""

    def __init__(self, subparsers):
        self.subparsers = subparsers

    def plain(self, name: str, func, help_text: str) -> argparse.ArgumentParser:
        """A subcommand running ``func(args)`` with no shared options."""
        p = self.subparsers.add_parser(name, help=help_text)
        p.set_defaults(func=func)
        return p

    def job(self, name: str, func, help_text: str, reads_data: bool = True) -> argparse.ArgumentParser:
        """A job subcommand: ``--data`` (if it reads a prepared data set), ``--dataset``, MLflow, threads, device."""
        p = self.plain(name, func, help_text)
        if reads_data:
            p.add_argument("--data", required=True, help="the data set cache written by prepare-data")
        p.add_argument("--dataset", required=True, help="the data set's name in the config")
        p.add_argument("--experiment", default="sdfm", help="MLflow experiment name")
        p.add_argument("--results-dir", default="results", help="where the default MLflow store lives")
        p.add_argument("--threads", type=int, default=None, help="torch threads (Snakemake's threads:)")
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars and lines")
        p.add_argument("--progress-seconds", type=seconds, default=None,
                       help="seconds between progress lines when the output is not a terminal (default 30, "
                            "or SDFM_PROGRESS_SECONDS)")
        p.add_argument("--log-model", action="store_true", help="log a trained model with mlflow.pytorch")
        return p
