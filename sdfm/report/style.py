"""The figures' common style: method colours, markers and labels, rcParams, axis helpers, saving.

Colours name the method (FM grey, OT-FM blue, SD-FM red) and markers repeat it for grey-scale
print; the line style names the relative epsilon (solid for 0, then dashed, dotted, dash-dot).
:mod:`sdfm.report.figures` (metrics) and :mod:`sdfm.report.run_figures` (cost, paths, samples) draw
with it; every figure is saved as ``<stem>.png`` and ``<stem>.pdf`` by :func:`save_figure`.
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
    "HIGHER_IS_BETTER", "LINESTYLES", "METHOD_COLORS", "METHOD_MARKERS", "METHOD_NAMES", "METHOD_ORDER", "METHOD_SHORT",
    "STAGE_COLORS", "STAGE_HATCHES", "STAGE_NAMES", "STYLE", "choose_nfes", "higher_is_better", "placeholder",
    "save_figure", "short_label", "variant_key", "variant_label",
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



def _variant_lines(ax, rows: pd.DataFrame, x: str, epsilons: list[float]) -> None:
    """One line per (method, epsilon) of ``rows``: the mean against column ``x``, with a +- std band."""
    for (method, epsilon), group in sorted(rows.groupby(["method", "epsilon"]), key=lambda kv: variant_key(kv[0])):
        group = group.sort_values(x)
        style = _line_style(method, epsilon, epsilons)
        ax.plot(group[x], group["mean"], label=short_label(method, epsilon), **style)
        std = group["std"].fillna(0)
        ax.fill_between(group[x], group["mean"] - std, group["mean"] + std, color=style["color"], alpha=0.12, lw=0)
