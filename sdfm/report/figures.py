"""Paper figures: one style for every plot, PNG (README, report) and PDF (papers) side by side.

Every function takes tidy inputs (tables, loaded models, image files), draws one figure and
returns the paths it wrote (``<out_dir>/<stem>.png`` and ``.pdf``). Here: the metric figures
(vs NFE, vs epsilon, vs the guidance scale, the chi^2 curves); the style and its helpers are in
:mod:`sdfm.report.style`, the figures of runs (cost, trajectories, sample grids) in
:mod:`sdfm.report.run_figures`; both are re-exported, so ``sdfm.report.figures`` names them all.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.report.run_figures import plot_cost, plot_sample_grids, plot_trajectories  # noqa: E402
from sdfm.report.style import (HIGHER_IS_BETTER, LINESTYLES, METHOD_COLORS, METHOD_MARKERS,  # noqa: E402, F401
                               METHOD_NAMES, METHOD_ORDER, METHOD_SHORT, STAGE_COLORS, STAGE_HATCHES, STAGE_NAMES,
                               STYLE, _direction, _legend_below, _line_style, _metric_label, _readable_log_ticks,
                               _solver_name, _style, _value_scale, _variant_lines, choose_nfes, higher_is_better,
                               placeholder, save_figure, short_label, variant_key, variant_label)

__all__ = [
    "METHOD_COLORS", "METHOD_NAMES", "STAGE_COLORS", "STYLE", "choose_nfes", "placeholder", "plot_chi2_curves",
    "plot_cost", "plot_metric_vs_epsilon", "plot_metric_vs_nfe", "plot_sample_grids", "plot_trajectories",
    "save_figure", "short_label", "variant_label", "higher_is_better", "plot_guidance",
]


def _variant_panels(stats: pd.DataFrame, metrics: list[str], x: str):
    """One panel per metric side by side, each with a line per (method, epsilon) of ``stats`` against column
    ``x`` (:func:`_variant_lines`); returns the figure and ``(ax, metric, rows of that metric)`` per panel."""
    epsilons = sorted(stats.epsilon.unique())
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
    panels = []
    for ax, metric in zip(axes[0], metrics):
        rows = stats[stats.metric == metric]
        _variant_lines(ax, rows, x, epsilons)
        panels.append((ax, metric, rows))
    return fig, panels


def plot_metric_vs_nfe(stats: pd.DataFrame, dataset: str, out_dir: str | Path, solver: str = "euler",
                       metric_name=str) -> list[Path]:
    """One panel per metric: mean +- std over seeds vs NFE, a line per method / epsilon.

    Args:
        stats: summarised rows (``summarise``) of one data set and solver: method, epsilon, nfe,
            metric, mean, std.
    """
    metrics = sorted(stats.metric.unique())
    with _style():
        fig, panels = _variant_panels(stats, metrics, "nfe")
        for ax, metric, sub in panels:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(sorted(sub.nfe.unique())))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            means = sub["mean"]
            if higher_is_better(metric):
                pass  # shares in [0, 1] (precision, recall): a linear axis
            elif (means > 0).all():
                ax.set_yscale("log")  # methods differ by orders of magnitude at low NFE
            elif means.abs().max() > 0:  # unbiased estimates can dip below zero
                ax.set_yscale("symlog", linthresh=1e-3 * float(means.abs().max()))
            ax.set_xlabel(f"NFE ({_solver_name(solver)})")
            ax.set_ylabel(_metric_label(metric, metric_name))
            _readable_log_ticks(ax)
        handles, labels = panels[0][0].get_legend_handles_labels()
        fig.suptitle(f"{dataset}: sample quality vs NFE (mean ± std over seeds; {_direction(metrics)})")
        _legend_below(fig, handles, labels)
        return save_figure(fig, Path(out_dir) / f"{dataset}_metrics_vs_nfe")


def plot_chi2_curves(summaries: list[dict], dataset: str, out_dir: str | Path) -> list[Path]:
    """chi^2 of the averaged potential vs SGD step, one line per epsilon, with the 0.05 line."""
    epsilons = [s["epsilon_rel"] for s in summaries]
    with _style():
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
        for summary in sorted(summaries, key=lambda s: s["epsilon_rel"]):
            curve = summary["chi2_curve"]
            style = _line_style("sdfm", summary["epsilon_rel"], epsilons)
            ax.plot(curve["step"], [max(c, 1e-5) for c in curve["chi2"]], **style,
                    label=f"ε={summary['epsilon_rel']:g} (abs {summary['epsilon_abs']:.3g})")
        ax.axhline(0.05, color="grey", ls=":", lw=1.2, label="χ² = 0.05")
        ax.set_yscale("log")
        ax.set_xlabel("SGD step")
        ax.set_ylabel("χ²(m(g), b), unbiased estimate")
        ax.set_title(f"{dataset}: potential convergence")
        ax.legend(frameon=False, title="estimates < 1e-5 drawn at 1e-5", title_fontsize=7)
        fig.tight_layout()
        return save_figure(fig, Path(out_dir) / f"{dataset}_chi2")


def plot_metric_vs_epsilon(study: pd.DataFrame, dataset: str, out_dir: str | Path, solver: str = "euler",
                           metric_name=str, auto: float | None = None) -> list[Path]:
    """The epsilon study: rows metrics, columns NFE; x the relative epsilon (categorical, so 0 shows).

    Args:
        study: rows of ``report.epsilon_study`` (method, epsilon, nfe, metric, mean, std, count)
            for one data set; FM rows become a horizontal reference line with its +- std band.
        auto: the SD-FM epsilon chosen by ``auto`` (sdfm.ot.auto_epsilon): its point is a star and
            its tick reads ``auto``, in its place on the epsilon axis.
    """
    metrics = sorted(study.metric.unique())
    nfes = sorted(study.nfe.unique())
    coupled = study[study.method != "fm"]
    epsilons = sorted(coupled.epsilon.unique())
    position = {e: i for i, e in enumerate(epsilons)}
    methods = sorted(coupled.method.unique(), key=lambda m: METHOD_ORDER.get(m, 9))
    offset = {m: (i - (len(methods) - 1) / 2) * 0.08 for i, m in enumerate(methods)}
    with _style():
        fig, axes = plt.subplots(len(metrics), len(nfes), figsize=(2.9 * len(nfes) + 0.4, 2.5 * len(metrics)),
                                 squeeze=False)
        for r, metric in enumerate(metrics):
            for c, nfe in enumerate(nfes):
                ax = axes[r][c]
                cell = study[(study.metric == metric) & (study.nfe == nfe)]
                fm = cell[cell.method == "fm"]
                values = list(cell["mean"])
                if len(fm):
                    mean, std = float(fm["mean"].iloc[0]), float(np.nan_to_num(fm["std"].iloc[0]))
                    ax.axhline(mean, color=METHOD_COLORS["fm"], ls="--", lw=1.2, label=METHOD_NAMES["fm"])
                    ax.axhspan(mean - std, mean + std, color=METHOD_COLORS["fm"], alpha=0.12, lw=0)
                for method in methods:
                    rows = cell[cell.method == method].sort_values("epsilon")
                    if rows.empty:
                        continue
                    x = [position[e] + offset[method] for e in rows.epsilon]
                    ax.errorbar(x, rows["mean"], yerr=rows["std"].fillna(0), color=METHOD_COLORS.get(method),
                                marker=METHOD_MARKERS.get(method, "o"), capsize=2.5,
                                label=METHOD_NAMES.get(method, method))
                    chosen = rows[rows.epsilon == auto] if method == "sdfm" and auto is not None else rows.iloc[:0]
                    if len(chosen):
                        ax.plot([position[auto] + offset[method]], chosen["mean"], ls="none", marker="*", ms=14,
                                mfc="gold", mec="black", zorder=5, label=f"SD-FM, ε = auto ({auto:.2g})")
                spread = cell["std"].fillna(0)
                if not higher_is_better(metric):  # precision / recall: shares in [0, 1], a linear axis
                    _value_scale(ax, values + list(cell["mean"] - spread) + list(cell["mean"] + spread))
                _readable_log_ticks(ax)
                ax.set_xticks(range(len(epsilons)), [f"auto\n{e:.2g}" if e == auto else f"{e:g}" for e in epsilons])
                ax.set_xlim(-0.5, len(epsilons) - 0.5)
                if r == 0:
                    ax.set_title(f"NFE = {int(nfe)} ({_solver_name(solver)})")
                if r == len(metrics) - 1:
                    ax.set_xlabel("relative ε")
                if c == 0:
                    ax.set_ylabel(_metric_label(metric, metric_name))
        handles, labels = [], []
        for ax in axes.flat:
            for h, l in zip(*ax.get_legend_handles_labels()):
                if l not in labels:
                    handles.append(h)
                    labels.append(l)
        fig.suptitle(f"{dataset}: effect of ε at fixed NFE (mean ± std over seeds; {_direction(metrics)})")
        _legend_below(fig, handles, labels)
        return save_figure(fig, Path(out_dir) / f"{dataset}_metrics_vs_epsilon")


def plot_guidance(stats: pd.DataFrame, dataset: str, out_dir: str | Path, nfe: int, solver: str = "euler",
                  metric_name=str) -> list[Path]:
    """Classifier-free guidance: one panel per metric vs the guidance scale w at one NFE, a line per method / epsilon.

    Sampling follows ``v_w = v(x, t, null) + w (v(x, t, z) - v(x, t, null))``: w = 1 is the
    conditional model (marked by a dotted line), w = 0 the unconditional one, w > 1 guidance.

    Args:
        stats: mean / std over seeds of one data set, solver and NFE: method, epsilon, guidance
            (w), metric, mean, std. Frechet / kernel distances get a log axis when they span
            more than a factor 10; precision and recall (higher is better) a linear one.
    """
    metrics = sorted(stats.metric.unique(), key=lambda m: (higher_is_better(m), m))
    scales = sorted(stats.guidance.unique())
    with _style():
        fig, panels = _variant_panels(stats, metrics, "guidance")
        for ax, metric, sub in panels:
            if 1.0 in scales:
                ax.axvline(1.0, color="grey", ls=":", lw=1.0)
            if not higher_is_better(metric):
                _value_scale(ax, list(sub["mean"]))
                _readable_log_ticks(ax)
            ax.set_xticks(scales, [f"{w:g}" for w in scales])
            ax.set_xlabel("guidance scale w (1: no guidance)")
            ax.set_ylabel(_metric_label(metric, metric_name))
        handles, labels = panels[0][0].get_legend_handles_labels()
        fig.suptitle(f"{dataset}: classifier-free guidance at {_solver_name(solver)} NFE {int(nfe)} "
                     f"(mean ± std over seeds; {_direction(metrics)})")
        _legend_below(fig, handles, labels)
        return save_figure(fig, Path(out_dir) / f"{dataset}_guidance")
