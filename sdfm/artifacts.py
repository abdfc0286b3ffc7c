"""The layout of a run's artifacts under ``results/``: file paths, the metric table's columns, epsilon labels.

The Snakemake rules name the same files (``workflow/rules/*.smk``); the Python side reads and
writes them through these functions, so a path or a column changes in one place:

* ``data/<dataset>.npz``: the prepared data set (rule ``prepare_data``);
* ``potentials/<dataset>/eps<label>.pt`` and ``.json``: a potential and its summary (``fit_potential``);
* ``runs/<dataset>/<method>/eps<label>/seed<seed>/``: ``model.pt``, ``model.json``, ``metrics.csv``,
  ``samples/`` (rules ``train``, ``evaluate``);
* ``benchmarks/<stage>/<dataset>/...tsv``: Snakemake's wall-time records of each job;
* ``metrics.csv``: every run's rows (``aggregate``), columns :data:`METRIC_COLUMNS`.

``<label>`` is :func:`epsilon_label`: the relative epsilon as ``%g`` (``0``, ``0.1``) or ``auto``.
The rows of an ``auto`` run hold the epsilon its potential job chose in ``epsilon`` and ``auto`` in
``epsilon_label``, so no reader has to re-derive which rows were ``auto``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["METRIC_COLUMNS", "auto_epsilons", "benchmark_file", "epsilon_label", "potential_file", "read_metrics",
           "run_dir"]

#: Columns of the tidy metric table, one row per (run, solver, NFE, metric).
METRIC_COLUMNS = ["dataset", "method", "epsilon", "epsilon_label", "batch_size", "seed", "solver", "nfe", "metric",
                  "value"]


def epsilon_label(epsilon: float | str) -> str:
    """The spelling of a relative epsilon in paths and in the ``epsilon_label`` column: ``0``, ``0.1``, ``auto``."""
    return "auto" if epsilon == "auto" else f"{float(epsilon):g}"


def potential_file(results: str | Path, dataset: str, label: str, suffix: str = ".pt") -> Path:
    """``<results>/potentials/<dataset>/eps<label>.pt`` (``suffix=".json"``: its summary)."""
    return Path(results) / "potentials" / dataset / f"eps{label}{suffix}"


def run_dir(results: str | Path, dataset: str, method: str, label: str, seed: int) -> Path:
    """``<results>/runs/<dataset>/<method>/eps<label>/seed<seed>``: a trained run's folder."""
    return Path(results) / "runs" / dataset / method / f"eps{label}" / f"seed{int(seed)}"


def benchmark_file(benchmarks: str | Path, stage: str, dataset: str, method: str, label: str,
                   seed: int | None = None) -> Path:
    """Snakemake's benchmark file of a job: ``potential/<ds>/eps<label>.tsv``, ``<stage>/<ds>/<method>-eps<label>-seed<s>.tsv``."""
    if stage == "potential":
        return Path(benchmarks) / "potential" / dataset / f"eps{label}.tsv"
    return Path(benchmarks) / stage / dataset / f"{method}-eps{label}-seed{int(seed)}.tsv"


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A metric table; one written before the ``epsilon_label`` column gets it from ``epsilon`` (no ``auto`` then)."""
    table = pd.read_csv(path, dtype={"epsilon_label": str})  # "0", "0.1", "auto": labels, not numbers
    if "epsilon_label" not in table.columns and "epsilon" in table.columns:
        table.insert(int(table.columns.get_loc("epsilon")) + 1, "epsilon_label",
                     [epsilon_label(e) for e in table.epsilon])
    return table


def auto_epsilons(table: pd.DataFrame, potentials: list[dict] = ()) -> dict[str, float]:
    """``{dataset: epsilon}`` chosen by SD-FM epsilon ``auto``: from the rows labelled ``auto``.

    A table written before the ``epsilon_label`` column holds the chosen number only; then the
    potential summaries ``eps auto.json`` (key ``epsilon_auto``) say which SD-FM epsilon it was.
    """
    if "epsilon_label" in table.columns and (table.epsilon_label.astype(str) == "auto").any():
        rows = table[(table.epsilon_label.astype(str) == "auto") & (table.method == "sdfm")]
        return {str(d): float(e) for d, e in rows.groupby("dataset").epsilon.first().items()}
    return {s["dataset"]: float(s["epsilon_rel"]) for s in potentials if s.get("epsilon_auto")}
