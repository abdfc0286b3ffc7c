"""The report's tables: metric names, seed summaries, the paper tables, the epsilon and guidance
studies, the cost and pairing tables (from ``metrics.csv``, summaries and Snakemake benchmarks).

:mod:`sdfm.report.document` assembles them (and the figures) into ``report.md`` and re-exports them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sdfm.artifacts import auto_epsilons, epsilon_label, read_metrics
from sdfm.report import figures
from sdfm.report.figures import choose_nfes, higher_is_better, variant_key, variant_label

__all__ = ["GUIDANCE_NFE", "METRIC_NAMES", "chi2_table", "cost_table", "epsilon_study", "format_paper_table", "guidance_scale",
           "guidance_study", "guidance_table", "metric_name", "pairing_table", "paper_table", "read_auto_epsilons",
           "read_benchmark", "shared_costs", "summarise"]

METRIC_NAMES = {"w2": "W2 to held-out data", "energy": "energy distance", "curvature": "path curvature",
                "fid": "FID (Inception-v3)", "kid": "KID (Inception-v3)",
                "precision": "precision (Inception-v3)", "recall": "recall (Inception-v3)",
                "psnr": "PSNR to the truth (dB)", "ssim": "SSIM to the truth"}
#: NFE of the guidance figure and table (the paper's guidance comparison: gamma = 2 at NFE 4).
GUIDANCE_NFE = 4


def metric_name(metric: str) -> str:
    """Human-readable name of a metric column value (``fd_<dataset>``: Frechet distance in its FeatureNet)."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    for prefix, what in (("fd_", "FD"), ("kid_", "KID"), ("precision_", "precision"), ("recall_", "recall")):
        if metric.startswith(prefix):
            return f"{what} in the {metric[len(prefix):]} FeatureNet"
    return metric


# ---------------------------------------------------------------------------------------- tables

def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds for every (dataset, method, epsilon, solver, nfe, metric)."""
    keys = ["dataset", "method", "epsilon", "solver", "nfe", "metric"]
    return table.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()


def _column(solver: str, nfe) -> str:
    return solver if solver.startswith("dopri5") else f"{solver} {int(nfe)}"


def _column_order(column: str) -> tuple:
    """Sort key of a paper-table column: by solver name, then NFE as a number; dopri5 last."""
    solver, _, nfe = column.rpartition(" ")
    if not solver:
        return (1, column, 0)
    return (0, solver, int(nfe) if nfe.isdigit() else 0)


def read_auto_epsilons(results: str | Path) -> dict[str, float]:
    """``{dataset: epsilon}`` of SD-FM epsilon ``auto`` in the run ``results`` (for ``sdfm compare``).

    From the ``epsilon_label`` column of ``<results>/metrics.csv``; a table written before that column
    falls back on the summaries ``<results>/potentials/*/epsauto.json`` (:func:`sdfm.artifacts.auto_epsilons`).
    """
    metrics = Path(results) / "metrics.csv"
    table = read_metrics(metrics) if metrics.is_file() else pd.DataFrame(columns=["dataset", "method", "epsilon"])
    summaries = [json.loads(p.read_text()) for p in sorted(Path(results).glob("potentials/*/epsauto.json"))]
    return auto_epsilons(table, summaries)


def paper_table(table: pd.DataFrame, dataset: str, metric: str, columns: list[tuple[str, int]] | None = None,
                auto: float | None = None):
    """Rows method / epsilon, columns solver-NFE (the papers' layout): ``(means, stds)`` over seeds.

    dopri5 picks its own NFE per seed, so its column pools the seeds whatever NFE they used.
    ``auto``: the SD-FM epsilon chosen by ``auto`` (:func:`auto_epsilons`); its row reads ``eps=auto (...)``.
    """
    sub = table[(table.dataset == dataset) & (table.metric == metric)].copy()
    sub["column"] = [_column(s, n) for s, n in zip(sub.solver, sub.nfe)]
    sub["row"] = [variant_label(m, e, m == "sdfm" and e == auto) for m, e in zip(sub.method, sub.epsilon)]
    order = {r: variant_key((m, e)) for r, m, e in zip(sub.row, sub.method, sub.epsilon)}
    stats = sub.groupby(["row", "column"])["value"].agg(["mean", "std"]).reset_index()
    means = stats.pivot(index="row", columns="column", values="mean")
    means = means.loc[sorted(means.index, key=order.get), sorted(means.columns, key=_column_order)]
    stds = stats.pivot(index="row", columns="column", values="std").reindex_like(means)
    if columns:
        wanted = [f"{s} {n}" if s != "dopri5" else "dopri5" for s, n in columns]
        means, stds = means[[c for c in wanted if c in means]], stds[[c for c in wanted if c in stds]]
    return means, stds


def format_paper_table(means: pd.DataFrame, stds: pd.DataFrame, lower_is_better: bool = True) -> str:
    """Markdown table; the best mean of each column is in bold."""
    best = means.min() if lower_is_better else means.max()
    header = "| method | " + " | ".join(means.columns) + " |"
    lines = [header, "|" + "---|" * (len(means.columns) + 1)]
    for row in means.index:
        cells = []
        for col in means.columns:
            mean, std = means.at[row, col], stds.at[row, col]
            if pd.isna(mean):
                cells.append("–")
                continue
            text = f"{mean:.4g}" + (f" ± {std:.2g}" if pd.notna(std) else "")
            cells.append(f"**{text}**" if mean == best[col] else text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def epsilon_study(table: pd.DataFrame, dataset: str, solver: str = "euler", nfes=None) -> pd.DataFrame:
    """Mean / std / count over seeds per (method, epsilon, NFE, metric) at a few NFE (default 1, 4, 16-like)."""
    sub = table[(table.dataset == dataset) & (table.solver == solver)]
    nfes = choose_nfes(sub.nfe.unique()) if nfes is None else list(nfes)
    return summarise(sub[sub.nfe.isin(nfes)])


def guidance_scale(solver: str) -> tuple[str, float]:
    """Split a ``solver`` column value into (solver, guidance scale w): ``"euler@g=2.0"`` -> ``("euler", 2.0)``.

    The evaluate job appends ``@g=<w>`` only when w != 1, so a plain name means w = 1.
    """
    name, sep, scale = str(solver).partition("@g=")
    return name, float(scale) if sep else 1.0


def guidance_study(table: pd.DataFrame, dataset: str, nfe: int = GUIDANCE_NFE, solver: str | None = None):
    """Mean / std / count over seeds per (method, epsilon, guidance w, metric) at one solver and NFE.

    Args:
        solver: a fixed-step solver; default Euler when it was run, else the first one found.
        nfe: wanted NFE (default 4, the paper's); the nearest one run (on a log scale) when absent.

    Returns:
        ``(stats, solver, nfe)``: the summary (columns method, epsilon, guidance, metric, mean, std,
        count; empty when nothing matches) and the solver and NFE it is taken at.
    """
    own = table[table.dataset == dataset]
    parsed = [guidance_scale(s) for s in own.solver]
    own = own.assign(base=[p[0] for p in parsed], guidance=[p[1] for p in parsed])
    fixed = own[~own.base.isin(("dopri5", "meanflow"))]
    if solver is None:
        bases = sorted(set(fixed.base))
        solver = "euler" if "euler" in bases or not bases else bases[0]
    sub = fixed[fixed.base == solver]
    columns = ["method", "epsilon", "guidance", "metric", "mean", "std", "count"]
    if sub.empty:
        return pd.DataFrame(columns=columns), solver, int(nfe)
    available = sorted(int(n) for n in sub.nfe.unique())
    if nfe not in available:
        nfe = min(available, key=lambda v: (abs(np.log(v) - np.log(nfe)), v))
    stats = sub[sub.nfe == nfe].groupby(["method", "epsilon", "guidance", "metric"])["value"]
    return stats.agg(["mean", "std", "count"]).reset_index()[columns], solver, int(nfe)


def guidance_table(stats: pd.DataFrame, solver: str, nfe: int) -> list[str]:
    """Markdown lines: per metric, rows method / epsilon, columns guidance scale w (best in bold)."""
    lines = []
    for metric in sorted(stats.metric.unique(), key=lambda m: (higher_is_better(m), m)):
        sub = stats[stats.metric == metric].assign(
            row=lambda f: [variant_label(m, e) for m, e in zip(f.method, f.epsilon)],
            column=lambda f: [f"w = {w:g}" for w in f.guidance])
        order = {r: variant_key((m, e)) for r, m, e in zip(sub.row, sub.method, sub.epsilon)}
        means = sub.pivot(index="row", columns="column", values="mean")
        means = means.loc[sorted(means.index, key=order.get), [f"w = {w:g}" for w in sorted(sub.guidance.unique())]]
        stds = sub.pivot(index="row", columns="column", values="std").reindex_like(means)
        better = "higher" if higher_is_better(metric) else "lower"
        lines += [f"**{metric_name(metric)}** (`{metric}`) at {figures._solver_name(solver)} NFE {nfe} by guidance "
                  f"scale w (w = 1: no guidance; mean ± std over seeds; {better} is better, best in bold)", "",
                  format_paper_table(means, stds, lower_is_better=better == "lower"), ""]
    return lines


def read_benchmark(path: str | Path) -> float:
    """Wall seconds (column ``s``) of one Snakemake benchmark file; the mean over repeats; NaN if absent."""
    path = Path(path)
    if not path.is_file():
        return float("nan")
    frame = pd.read_csv(path, sep="\t")
    return float(frame["s"].mean()) if "s" in frame and len(frame) else float("nan")


def cost_table(runs: pd.DataFrame, benchmarks: str | Path, auto: dict[str, float] | None = None) -> pd.DataFrame:
    """Wall seconds per stage and variant, from the benchmark files of the runs in ``runs``.

    Args:
        runs: one row per trained run (dataset, method, epsilon, seed).
        benchmarks: the folder ``results/benchmarks`` (``potential/<ds>/eps<e>.tsv``,
            ``train/<ds>/<method>-eps<e>-seed<s>.tsv``, ``evaluate/...`` likewise).
        auto: ``{dataset: epsilon}`` chosen by SD-FM ``auto`` (:func:`auto_epsilons`): its files are ``epsauto``.

    Returns:
        One row per (dataset, method, epsilon): ``potential`` (the SD-FM potential at that epsilon,
        counted once however many seeds use it; 0 for FM / OT-FM), ``train`` and ``evaluate`` (sums
        over seeds), ``total``, ``seeds`` and ``missing`` (benchmark files not found).
    """
    benchmarks = Path(benchmarks)
    rows = []
    runs = runs[["dataset", "method", "epsilon", "seed"]].drop_duplicates()
    for (dataset, method, epsilon), group in runs.groupby(["dataset", "method", "epsilon"]):
        row = {"dataset": dataset, "method": method, "epsilon": float(epsilon), "potential": 0.0, "train": 0.0,
               "evaluate": 0.0, "seeds": len(group), "missing": 0}
        files = []
        label = "auto" if method == "sdfm" and (auto or {}).get(dataset) == epsilon else epsilon_label(epsilon)
        if method == "sdfm":
            files.append(("potential", benchmarks / "potential" / dataset / f"eps{label}.tsv"))
        for seed in sorted(group.seed):
            name = f"{method}-eps{label}-seed{int(seed)}.tsv"
            files += [(stage, benchmarks / stage / dataset / name) for stage in ("train", "evaluate")]
        for stage, path in files:
            seconds = read_benchmark(path)
            if np.isnan(seconds):
                row["missing"] += 1
            else:
                row[stage] += seconds
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["dataset", "method", "epsilon", "potential", "train", "evaluate", "seeds",
                                        "missing"])
    frame["total"] = frame[["potential", "train", "evaluate"]].sum(axis=1)
    return frame


def shared_costs(dataset: str, benchmarks: str | Path) -> dict[str, float]:
    """Wall seconds of the per-data-set jobs every method shares (data preparation, FeatureNet, FID statistics)."""
    benchmarks = Path(benchmarks)
    out = {"data preparation": read_benchmark(benchmarks / "prepare" / f"{dataset}.tsv"),
           "FeatureNet": read_benchmark(benchmarks / "feature_net" / f"{dataset}.tsv"),
           "FID reference statistics": read_benchmark(benchmarks / "fid_reference" / f"{dataset}.tsv")}
    return {k: v for k, v in out.items() if not np.isnan(v)}


def pairing_table(train_summaries: list[dict]) -> pd.DataFrame:
    """Pairing share of a training step per variant: mean / std over seeds, and the seconds behind it."""
    columns = ["dataset", "method", "epsilon", "share_mean", "share_std", "pairing_seconds", "step_seconds", "seeds"]
    if not train_summaries:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame([{"dataset": s["dataset"], "method": s["method"], "epsilon": float(s["epsilon_rel"]),
                           "seed": s["seed"], "share": s["pairing_share"], "pairing_seconds": s["pairing_seconds"],
                           "step_seconds": s["step_seconds"]} for s in train_summaries])
    grouped = frame.groupby(["dataset", "method", "epsilon"])
    out = grouped.agg(share_mean=("share", "mean"), share_std=("share", "std"),
                      pairing_seconds=("pairing_seconds", "mean"), step_seconds=("step_seconds", "mean"),
                      seeds=("seed", "count")).reset_index()
    return out[columns]


def chi2_table(potentials: list[dict]) -> list[str]:
    """Markdown rows of the potentials of one data set by epsilon: absolute epsilon, steps, fit time, final chi^2."""
    lines = ["| epsilon (rel) | epsilon (abs) | steps | fit seconds | final chi² |", "|---|---|---|---|---|"]
    for s in sorted(potentials, key=lambda s: s["epsilon_rel"]):
        flag = " (diverging)" if s.get("diverging") else ""
        lines.append(f"| {s['epsilon_rel']:.3g}{' (auto)' if s.get('epsilon_auto') else ''} | "
                     f"{s['epsilon_abs']:.4g} | {s['steps_run']} | "
                     f"{s['fit_seconds']:.1f} | {s['final_chi2']:.4f}{flag} |")
    return lines
