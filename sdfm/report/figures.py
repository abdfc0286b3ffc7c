"""Paper figures: one style for every plot, PNG (README, report) and PDF (papers) side by side.

Colours name the method (FM grey, OT-FM blue, SD-FM red) and markers repeat it for grey-scale
print; the line style names the relative epsilon (solid for 0, then dashed, dotted, dash-dot).
Every function takes tidy inputs (tables, loaded models, image files), draws one figure and
returns the paths it wrote (``<out_dir>/<stem>.png`` and ``.pdf``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.io import atomic_path  # noqa: E402

__all__ = [
    "METHOD_COLORS", "METHOD_NAMES", "STAGE_COLORS", "STYLE", "choose_nfes", "placeholder", "plot_chi2_curves",
    "plot_cost", "plot_metric_vs_epsilon", "plot_metric_vs_nfe", "plot_sample_grids", "plot_trajectories",
    "save_figure", "short_label", "variant_label", "higher_is_better", "plot_guidance",
]

METHOD_COLORS = {"fm": "#4d4d4d", "otfm": "#1f77b4", "sdfm": "#d62728"}
METHOD_MARKERS = {"fm": "s", "otfm": "o", "sdfm": "^"}
METHOD_NAMES = {"fm": "FM (independent)", "otfm": "OT-FM (batch OT)", "sdfm": "SD-FM (semidiscrete)"}
METHOD_SHORT = {"fm": "FM", "otfm": "OT-FM", "sdfm": "SD-FM"}
METHOD_ORDER = {"fm": 0, "otfm": 1, "sdfm": 2}
#: Metrics (plain, or ``<name>_<dataset>``) where higher is better; every other metric is lower-is-better.
HIGHER_IS_BETTER = ("precision", "recall", "psnr", "ssim")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` (e.g. ``precision``, ``recall_digits``) is better."""
    return any(metric == name or metric.startswith(name + "_") for name in HIGHER_IS_BETTER)


def _direction(metrics) -> str:
    """The figure title's reading hint: lower is better, unless some panel is marked higher-is-better."""
    if len(metrics) and all(higher_is_better(m) for m in metrics):  # e.g. psnr and ssim alone
        return "higher is better"
    if any(higher_is_better(m) for m in metrics):
        return "lower is better, except ↑: higher is better"
    return "lower is better"


def _metric_label(metric: str, metric_name) -> str:
    """Axis label: the metric's name, with an up arrow when higher is better (long ones on two lines)."""
    if not higher_is_better(metric):
        return metric_name(metric)
    label = f"{metric_name(metric)} ↑"
    return label.replace(" in the ", "\nin the ", 1) if len(label) > 28 else label
LINESTYLES = ["-", "--", ":", "-."]
#: Stage colours of the cost figure (ColorBrewer Dark2), with hatches for grey-scale print.
STAGE_COLORS = {"potential": "#7570b3", "train": "#1b9e77", "evaluate": "#d95f02"}
STAGE_HATCHES = {"potential": "//", "train": "", "evaluate": ".."}
STAGE_NAMES = {"potential": "potential fit", "train": "training", "evaluate": "evaluation"}

#: rcParams of every figure: print sizes (9-10 pt at the saved width), light grid, no top/right spines.
STYLE = {
    "font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
    "legend.fontsize": 8, "figure.titlesize": 11, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.6, "lines.markersize": 4.5,
    "savefig.dpi": 200, "pdf.fonttype": 42, "ps.fonttype": 42,
}


@contextmanager
def _style():
    with plt.rc_context(STYLE):
        yield


def variant_label(method: str, epsilon: float, auto: bool = False) -> str:
    """Legend / row label of a method at a relative epsilon (FM has none); ``eps=auto (0.0191)`` when chosen."""
    name = METHOD_NAMES.get(method, method)
    return name if method == "fm" else f"{name}, eps=" + (f"auto ({epsilon:.3g})" if auto else f"{epsilon:g}")


def short_label(method: str, epsilon: float, auto: bool = False) -> str:
    """Compact label for panel titles and grid rows: ``FM``, ``SD-FM ε=0.1``, ``SD-FM ε=auto (0.019)``."""
    name = METHOD_SHORT.get(method, method)
    return name if method == "fm" else f"{name} ε=" + (f"auto ({epsilon:.2g})" if auto else f"{epsilon:g}")


def variant_key(variant: tuple[str, float]) -> tuple:
    """Sort key of (method, epsilon): FM, OT-FM, SD-FM, each by increasing epsilon."""
    return METHOD_ORDER.get(variant[0], 9), variant[0], float(variant[1])


def _line_style(method: str, epsilon: float, epsilons: list[float]) -> dict:
    rank = sorted(set(epsilons)).index(epsilon) if epsilon in epsilons else 0
    return {"color": METHOD_COLORS.get(method, "black"), "marker": METHOD_MARKERS.get(method, "o"),
            "linestyle": LINESTYLES[rank % len(LINESTYLES)]}


def _solver_name(solver: str) -> str:
    return {"euler": "Euler", "midpoint": "midpoint", "heun": "Heun", "rk4": "RK4"}.get(solver, solver)


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically and close the figure."""
    stem = Path(stem)
    paths = []
    for suffix in (".png", ".pdf"):
        path = stem.with_suffix(suffix)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=suffix[1:], bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def placeholder(stem: str | Path, title: str, reason: str) -> list[Path]:
    """A figure that says why there is nothing to draw (a declared output must still exist)."""
    with _style():
        fig, ax = plt.subplots(figsize=(5, 1.6))
        ax.axis("off")
        ax.set_title(title)
        ax.text(0.5, 0.4, reason, ha="center", va="center", wrap=True, transform=ax.transAxes)
        return save_figure(fig, stem)


def choose_nfes(available, k: int = 3) -> list[int]:
    """At most ``k`` NFE values spread evenly on a log scale: e.g. 1, 4, 16 out of 1, 2, 4, 8, 16."""
    values = sorted({int(v) for v in available})
    if len(values) <= k:
        return values
    logs = np.log(values)
    targets = np.linspace(logs[0], logs[-1], k)
    picked = []
    for target in targets:
        left = [v for v in values if v not in picked]
        picked.append(min(left, key=lambda v: abs(math.log(v) - target)))
    return sorted(picked)


def _value_scale(ax, values, decades: float = 10.0) -> None:
    """Log y when the (positive) values span more than a factor ``decades``; linear otherwise."""
    values = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if len(values) and (values > 0).all() and values.max() / values.min() > decades:
        ax.set_yscale("log")


def _readable_log_ticks(ax) -> None:
    """On a log y axis spanning less than ~1.5 decades, label 1-2-5 (or every digit) as plain numbers."""
    if ax.get_yscale() != "log":
        return
    lo, hi = ax.get_ylim()
    if lo <= 0 or hi / lo >= 30:
        return
    subs = (1.0, 2.0, 5.0) if hi / lo >= 3 else (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=subs))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _legend_below(fig, handles, labels) -> None:
    """A legend of at most five columns centred under the panels, then a layout that leaves room for it."""
    rows = math.ceil(len(labels) / 5)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=2.6, columnspacing=1.4)
    fig.tight_layout(rect=(0, (0.3 * rows + 0.08) / fig.get_figheight(), 1, 1))


def plot_metric_vs_nfe(stats: pd.DataFrame, dataset: str, out_dir: str | Path, solver: str = "euler",
                       metric_name=str) -> list[Path]:
    """One panel per metric: mean +- std over seeds vs NFE, a line per method / epsilon.

    Args:
        stats: summarised rows (``summarise``) of one data set and solver: method, epsilon, nfe,
            metric, mean, std.
    """
    metrics = sorted(stats.metric.unique())
    epsilons = sorted(stats.epsilon.unique())
    with _style():
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            sub = stats[stats.metric == metric]
            groups = sorted(sub.groupby(["method", "epsilon"]), key=lambda kv: variant_key(kv[0]))
            for (method, epsilon), group in groups:
                group = group.sort_values("nfe")
                style = _line_style(method, epsilon, epsilons)
                ax.plot(group.nfe, group["mean"], label=short_label(method, epsilon), **style)
                std = group["std"].fillna(0)
                ax.fill_between(group.nfe, group["mean"] - std, group["mean"] + std, color=style["color"],
                                alpha=0.12, lw=0)
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
        handles, labels = axes[0][0].get_legend_handles_labels()
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
    epsilons = sorted(stats.epsilon.unique())
    scales = sorted(stats.guidance.unique())
    with _style():
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            sub = stats[stats.metric == metric]
            for (method, epsilon), group in sorted(sub.groupby(["method", "epsilon"]), key=lambda kv: variant_key(kv[0])):
                group = group.sort_values("guidance")
                style = _line_style(method, epsilon, epsilons)
                ax.plot(group.guidance, group["mean"], label=short_label(method, epsilon), **style)
                std = group["std"].fillna(0)
                ax.fill_between(group.guidance, group["mean"] - std, group["mean"] + std, color=style["color"],
                                alpha=0.12, lw=0)
            if 1.0 in scales:
                ax.axvline(1.0, color="grey", ls=":", lw=1.0)
            if not higher_is_better(metric):
                _value_scale(ax, list(sub["mean"]))
                _readable_log_ticks(ax)
            ax.set_xticks(scales, [f"{w:g}" for w in scales])
            ax.set_xlabel("guidance scale w (1: no guidance)")
            ax.set_ylabel(_metric_label(metric, metric_name))
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.suptitle(f"{dataset}: classifier-free guidance at {_solver_name(solver)} NFE {int(nfe)} "
                     f"(mean ± std over seeds; {_direction(metrics)})")
        _legend_below(fig, handles, labels)
        return save_figure(fig, Path(out_dir) / f"{dataset}_guidance")


def plot_cost(costs: pd.DataFrame, pairing: pd.DataFrame, dataset: str, out_dir: str | Path) -> list[Path]:
    """Wall seconds per stage (stacked, totals over seeds) and the pairing share of a training step.

    Args:
        costs: one row per variant (method, epsilon) with columns ``potential``, ``train``,
            ``evaluate`` (seconds; a potential is charged once to the SD-FM variant that uses it).
        pairing: one row per variant with ``share_mean``, ``share_std`` (fractions of a step).
    """
    variants = sorted({(m, e) for m, e in zip(costs.method, costs.epsilon)}
                      | {(m, e) for m, e in zip(pairing.method, pairing.epsilon)}, key=variant_key)
    labels = [short_label(m, e) for m, e in variants]
    y = np.arange(len(variants))[::-1]
    with _style():
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.6, 0.45 * len(variants) + 1.5),
                                          gridspec_kw={"width_ratios": [1.4, 1]})
        indexed = costs.set_index(["method", "epsilon"]) if len(costs) else None
        start = np.zeros(len(variants))
        totals = np.zeros(len(variants))
        for stage in STAGE_COLORS:
            widths = np.array([float(indexed.at[v, stage]) if indexed is not None and v in indexed.index
                               and np.isfinite(indexed.at[v, stage]) else 0.0 for v in variants])
            left.barh(y, widths, left=start, color=STAGE_COLORS[stage], hatch=STAGE_HATCHES[stage],
                      edgecolor="white", lw=0.5, label=STAGE_NAMES[stage], height=0.7)
            start += widths
            totals += widths
        for yi, total in zip(y, totals):
            left.text(total, yi, f" {total:.0f} s", va="center", fontsize=7)
        left.set_xlim(0, max(totals.max(), 1e-9) * 1.18)
        left.set_yticks(y, labels)
        left.set_xlabel("wall seconds (total over seeds)")
        left.set_title("where the time goes")
        left.grid(axis="y", alpha=0)
        left.legend(frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
        share = pairing.set_index(["method", "epsilon"]) if len(pairing) else None
        for yi, v in zip(y, variants):
            if share is None or v not in share.index:
                continue
            mean, std = 100 * float(share.at[v, "share_mean"]), 100 * float(np.nan_to_num(share.at[v, "share_std"]))
            right.barh(yi, mean, xerr=std, color=METHOD_COLORS.get(v[0]), alpha=0.85, height=0.7, capsize=2)
            right.text(mean + std, yi, f" {mean:.0f}%", va="center", fontsize=7)
        right.set_xlim(0, 100)
        right.set_yticks(y, [""] * len(y))
        right.set_xlabel("pairing time / training step (%)")
        right.set_title("pairing share of a step")
        right.grid(axis="y", alpha=0)
        fig.suptitle(f"{dataset}: compute cost")
        fig.tight_layout()
        return save_figure(fig, Path(out_dir) / f"{dataset}_cost")


def plot_trajectories(panels: list[dict], data: np.ndarray | None, dataset: str, out_dir: str | Path,
                      nfe: int) -> list[Path]:
    """ODE paths from noise (t=0) to samples (t=1) per method, on top of the target data.

    Args:
        panels: ``{"method", "epsilon", "paths": (T+1, B, 2) array, "curvature": float}`` per model,
            all solved from the same noise.
        data: (N, 2) target points drawn in light grey (or None).
    """
    n = len(panels)
    ncols = n if n <= 5 else math.ceil(n / 2)
    nrows = math.ceil(n / ncols)
    every = np.concatenate([p["paths"].reshape(-1, 2) for p in panels] + ([data] if data is not None else []))
    center = (every.min(axis=0) + every.max(axis=0)) / 2
    half = 0.53 * float((every.max(axis=0) - every.min(axis=0)).max())  # square panels, 6% margin
    with _style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols, 3.1 * nrows), squeeze=False, layout="constrained")
        for ax in axes.flat[n:]:
            ax.axis("off")
        for ax, panel in zip(axes.flat, sorted(panels, key=lambda p: variant_key((p["method"], p["epsilon"])))):
            color = METHOD_COLORS.get(panel["method"], "black")
            if data is not None:
                ax.scatter(data[:, 0], data[:, 1], s=1.5, color="#c8c8c8", lw=0, rasterized=True)
            paths = panel["paths"]
            for b in range(paths.shape[1]):
                ax.plot(paths[:, b, 0], paths[:, b, 1], color=color, lw=0.9, alpha=0.8)
            ax.scatter(paths[0, :, 0], paths[0, :, 1], s=9, facecolor="white", edgecolor="black", lw=0.7, zorder=3)
            ax.scatter(paths[-1, :, 0], paths[-1, :, 1], s=11, color=color, edgecolor="black", lw=0.3, zorder=4)
            ax.set_title(f"{short_label(panel['method'], panel['epsilon'])}\ncurvature {panel['curvature']:.3f}")
            ax.set_xlim(center[0] - half, center[0] + half)
            ax.set_ylim(center[1] - half, center[1] + half)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
        fig.suptitle(f"{dataset}: Euler paths (NFE {nfe}) from noise (○) to samples (●); held-out data in grey")
        return save_figure(fig, Path(out_dir) / f"{dataset}_trajectories")


def plot_sample_grids(grids: dict[tuple[str, float], dict[str, Path]], columns: list[str], dataset: str,
                      out_dir: str | Path) -> list[Path]:
    """Compose sample-grid PNGs: a row per method / epsilon, a column per solver and NFE.

    Args:
        grids: ``{(method, epsilon): {column label: png path}}``.
        columns: the column labels in order, e.g. ``["Euler 1", "Euler 4", "dopri5 (NFE 146)"]``.
    """
    from PIL import Image

    variants = sorted(grids, key=variant_key)
    with _style():
        fig, axes = plt.subplots(len(variants), len(columns), figsize=(1.9 * len(columns) + 0.6, 1.95 * len(variants)),
                                 squeeze=False, layout="constrained")
        for r, variant in enumerate(variants):
            for c, column in enumerate(columns):
                ax = axes[r][c]
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_visible(False)
                path = grids[variant].get(column)
                if path is not None:
                    with Image.open(path) as image:
                        ax.imshow(np.asarray(image.convert("RGB")), interpolation="nearest")
                else:
                    ax.text(0.5, 0.5, "no grid", ha="center", va="center", transform=ax.transAxes, color="grey")
                if r == 0:
                    ax.set_title(column)
                if c == 0:
                    ax.set_ylabel(short_label(*variant).replace(" ", "\n", 1), color=METHOD_COLORS.get(variant[0]),
                                  fontsize=9)
        fig.suptitle(f"{dataset}: samples (first seed, same noise for every method)")
        return save_figure(fig, Path(out_dir) / f"{dataset}_samples")
