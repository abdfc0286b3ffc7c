"""Tidy tables and figures from ``results/metrics.csv`` and the potential summaries.

Figures are written as PNG (for the README and report) and PDF (for papers) with one style:
a line per method / epsilon, mean over seeds with a +- std band, log-scaled NFE axis.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.io import atomic_path, atomic_write_text  # noqa: E402

__all__ = ["summarise", "paper_table", "plot_metric_vs_nfe", "plot_chi2_curves", "write_report", "variant_label"]

METHOD_COLORS = {"fm": "#4d4d4d", "otfm": "#1f77b4", "sdfm": "#d62728"}
METHOD_NAMES = {"fm": "FM (independent)", "otfm": "OT-FM (batch OT)", "sdfm": "SD-FM (semidiscrete)"}
METRIC_NAMES = {"w2": "W2 to held-out data", "energy": "energy distance", "curvature": "path curvature",
                "fid": "FID (Inception-v3)", "kid": "KID (Inception-v3)"}


def metric_name(metric: str) -> str:
    """Human-readable name of a metric column value (``fd_<dataset>``: Frechet distance in its FeatureNet)."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    for prefix, what in (("fd_", "FD"), ("kid_", "KID")):
        if metric.startswith(prefix):
            return f"{metric} ({what} in the {metric[len(prefix):]} FeatureNet)"
    return metric


def _column_order(column: str) -> tuple:
    """Sort key of a paper-table column: by solver name, then NFE as a number; dopri5 last."""
    solver, _, nfe = column.rpartition(" ")
    if not solver:
        return (1, column, 0)
    return (0, solver, int(nfe) if nfe.isdigit() else 0)


def variant_label(method: str, epsilon: float) -> str:
    """Legend / row label of a method at a relative epsilon (FM has none)."""
    return METHOD_NAMES.get(method, method) if method == "fm" else f"{METHOD_NAMES.get(method, method)}, eps={epsilon:g}"


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds for every (dataset, method, epsilon, solver, nfe, metric)."""
    keys = ["dataset", "method", "epsilon", "solver", "nfe", "metric"]
    return table.groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()


def paper_table(table: pd.DataFrame, dataset: str, metric: str, columns: list[tuple[str, int]] | None = None) -> pd.DataFrame:
    """Rows method / epsilon, columns solver-NFE (the papers' layout), cells ``mean +- std``."""
    stats = summarise(table[(table.dataset == dataset) & (table.metric == metric)])
    stats["column"] = stats.apply(lambda r: r.solver if r.solver.startswith("dopri5") else f"{r.solver} {int(r.nfe)}", axis=1)
    stats["row"] = stats.apply(lambda r: variant_label(r.method, r.epsilon), axis=1)
    means = stats.pivot_table(index="row", columns="column", values="mean")
    means = means[sorted(means.columns, key=_column_order)]
    stds = stats.pivot_table(index="row", columns="column", values="std").reindex_like(means)
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
            text = f"{mean:.4g}" + (f" ± {std:.2g}" if pd.notna(std) else "")
            cells.append(f"**{text}**" if mean == best[col] else text)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _save(fig, stem: Path) -> list[Path]:
    paths = []
    for suffix in (".png", ".pdf"):
        path = stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def plot_metric_vs_nfe(table: pd.DataFrame, dataset: str, out_dir: str | Path, solver: str = "euler") -> list[Path]:
    """One panel per metric: mean +- std over seeds vs NFE, a line per method / epsilon."""
    sub = summarise(table[(table.dataset == dataset) & (table.solver == solver)])
    metrics = sorted(sub.metric.unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for (method, epsilon), group in sub[sub.metric == metric].groupby(["method", "epsilon"]):
            group = group.sort_values("nfe")
            style = "-" if epsilon == 0 else "--"
            ax.plot(group.nfe, group["mean"], style, marker="o", ms=4, color=METHOD_COLORS.get(method),
                    label=variant_label(method, epsilon))
            ax.fill_between(group.nfe, group["mean"] - group["std"].fillna(0), group["mean"] + group["std"].fillna(0),
                            color=METHOD_COLORS.get(method), alpha=0.15, lw=0)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        means = sub[sub.metric == metric]["mean"]
        if (means > 0).all():
            ax.set_yscale("log")  # methods differ by orders of magnitude at low NFE
        elif means.abs().max() > 0:  # unbiased estimates can dip below zero
            ax.set_yscale("symlog", linthresh=1e-3 * float(means.abs().max()))
        ax.set_xlabel(f"NFE ({solver})")
        ax.set_ylabel(metric_name(metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, frameon=False)
    fig.suptitle(f"{dataset}: sample quality vs number of function evaluations")
    fig.tight_layout()
    return _save(fig, Path(out_dir) / f"{dataset}_metrics_vs_nfe")


def plot_chi2_curves(summaries: list[dict], dataset: str, out_dir: str | Path) -> list[Path]:
    """chi^2 of the averaged potential vs SGD step, one line per epsilon, with the 0.05 line."""
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    for summary in sorted(summaries, key=lambda s: s["epsilon_rel"]):
        curve = summary["chi2_curve"]
        ax.plot(curve["step"], [max(c, 1e-5) for c in curve["chi2"]], marker="o", ms=3,
                label=f"eps={summary['epsilon_rel']:g} (abs {summary['epsilon_abs']:.3g})")
    ax.axhline(0.05, color="grey", ls=":", label="chi² = 0.05")
    ax.set_yscale("log")
    ax.set_xlabel("SGD step")
    ax.set_ylabel("chi²(m(g), b), unbiased estimate\n(estimates below 1e-5 drawn at 1e-5)")
    ax.set_title(f"{dataset}: potential convergence")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _save(fig, Path(out_dir) / f"{dataset}_chi2")


def write_report(metrics_csv: str | Path, summaries: list[str | Path], out_dir: str | Path, meta: dict) -> Path:
    """Figures for every data set and ``report.md`` with the paper-style tables."""
    out_dir = Path(out_dir)
    table = pd.read_csv(metrics_csv)
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    lines = ["# sdfm report", "", f"Experiment `{meta.get('experiment', '')}`, commit `{meta.get('commit', 'unknown')}`.", ""]
    for dataset in sorted(table.dataset.unique()):
        lines += [f"## {dataset}", ""]
        fig_paths = plot_metric_vs_nfe(table, dataset, out_dir / "figures")
        lines += [f"![{dataset} metrics vs NFE](figures/{fig_paths[0].name})", ""]
        own = [s for s in loaded if s["dataset"] == dataset]
        if own:
            chi2_paths = plot_chi2_curves(own, dataset, out_dir / "figures")
            lines += [f"![{dataset} potential convergence](figures/{chi2_paths[0].name})", ""]
            lines += ["| epsilon (rel) | epsilon (abs) | steps | fit seconds | final chi² |", "|---|---|---|---|---|"]
            for s in sorted(own, key=lambda s: s["epsilon_rel"]):
                lines.append(f"| {s['epsilon_rel']:g} | {s['epsilon_abs']:.4g} | {s['steps_run']} | "
                             f"{s['fit_seconds']:.1f} | {s['final_chi2']:.4f} |")
            lines.append("")
        for metric in sorted(table[table.dataset == dataset].metric.unique()):
            means, stds = paper_table(table, dataset, metric)
            lines += [f"### {metric_name(metric)} (mean ± std over seeds; best in bold)", "",
                      format_paper_table(means, stds), ""]
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
