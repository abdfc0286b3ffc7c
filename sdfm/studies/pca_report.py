"""Job ``pca-study-report``: the PCA study's figure and its markdown section of report.md.

Inputs: the CSVs of :mod:`sdfm.studies.pca` (speed and quality vs k, one per data set) and,
optionally, the run's ``metrics.csv`` with the potential summaries of the data sets fitted with
``potential.pca_dim`` and of their full-space references, which add a table of sample quality
(``fd_<dataset>``) per k.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.io import atomic_write_text  # noqa: E402
from sdfm.report.figures import STYLE, save_figure  # noqa: E402

__all__ = ["plot_pca_study", "pca_section", "write_pca_study_report"]


def plot_pca_study(table: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Four panels vs k (log x): time per SGD step and per pairing batch, chi^2, excess cost, OT gain kept."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for i, (name, rows) in enumerate(table.groupby("set", sort=True)):
            rows, color = rows.sort_values("k"), colors[i % len(colors)]
            d = int(rows.input_dim.iloc[0])
            axes[0].plot(rows.k, rows.step_seconds * 1e3, "o-", color=color,
                         label=f"{name}: SGD step (B={rows.batch_size.iloc[0]})")
            axes[0].plot(rows.k, rows.pairing_seconds * 1e3, "s--", color=color,
                         label=f"{name}: pairing (B={rows.pairing_batch.iloc[0]})")
            axes[1].plot(rows.k, rows.final_chi2, "o-", color=color, label=f"{name} (D={d})")
            axes[2].plot(rows.k, 100 * rows.relative_excess_cost, "o-", color=color, label=name)
            axes[3].plot(rows.k, 100 * rows.gain_retained, "o-", color=color, label=name)
            for ax in axes:
                ax.axvline(d, color=color, lw=0.8, ls=":")
        axes[0].set(yscale="log", ylabel="milliseconds", title="speed (median, side by side)")
        axes[1].set(yscale="log", ylabel="chi² of the marginal", title=f"chi² after {int(table.steps.iloc[0])} steps")
        axes[2].set(ylabel="% of the full-space OT cost", title="excess full-space cost E|x - T(x)|²")
        axes[3].set(ylabel="%", title="OT gain over independent pairs kept", ylim=(None, 105))
        ks = sorted(set(table.k))
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            ax.set_xlabel("PCA dimension k (dotted: D, the full space)")
        axes[0].legend(fontsize=7)
        axes[1].legend(fontsize=7)
        fig.tight_layout()
        return save_figure(fig, stem)


def _speed_table(rows: pd.DataFrame) -> list[str]:
    lines = ["| k | var. kept | fit wall s/step | SGD step ms | ×  | pairing ms | × | chi² | cost | excess | gain kept "
             "| same pair |", "|" + "---|" * 12]
    for r in rows.sort_values("k").itertuples():
        lines.append(f"| {r.k}{' (full)' if r.k == r.input_dim else ''} | {r.explained_variance_ratio:.1%} | "
                     f"{r.fit_seconds_per_step:.4f} | {1e3 * r.step_seconds:.2f} | {r.step_speedup:.1f} | "
                     f"{1e3 * r.pairing_seconds:.2f} | {r.pairing_speedup:.1f} | {r.final_chi2:.3g} | {r.cost:.2f} | "
                     f"{r.relative_excess_cost:+.1%} | {r.gain_retained:.1%} | {r.agreement:.1%} |")
    return lines


def _run_table(metrics: pd.DataFrame, summaries: list[dict]) -> list[str]:
    """Per data set of the run: k, the potential's quality and fd of SD-FM and FM (euler, largest NFE)."""
    pca = {s["dataset"]: s for s in summaries if "pca" in s}
    if not pca:
        return []
    full = {s["dataset"] for s in summaries if "pca" not in s}
    dims = {v["pca"]["input_dim"] for v in pca.values()}
    full_dim = f"{max(dims)} (full)" if len(dims) == 1 else "full"
    lines = ["| data set | k | var. kept | chi² | excess cost | gain kept | same pair | pairing × | fd SD-FM | fd FM |",
             "|" + "---|" * 10]
    order = sorted(full) + sorted(pca, key=lambda name: -pca[name]["pca"]["dim"])
    for name in order:
        s = next(x for x in summaries if x["dataset"] == name)
        p = s.get("pca")
        fd = {}
        rows = metrics[(metrics.dataset == name) & metrics.metric.str.startswith("fd_") & (metrics.solver == "euler")]
        if len(rows):
            rows = rows[rows.nfe == rows.nfe.max()]
            for method in ("sdfm", "fm"):
                sel = rows[(rows.method == method) & ((method == "fm") | (rows.epsilon == s["epsilon_rel"]))]
                fd[method] = f"{sel.value.mean():.2f}" if len(sel) else "–"
        nfe = f" (euler, NFE {int(rows.nfe.max())})" if len(rows) else ""
        k = p["dim"] if p else full_dim
        cells = ([f"{p['explained_variance_ratio']:.1%}", f"{s['final_chi2']:.3g}",
                  f"{p['excess_cost'] / p['cost_reference']:+.1%}" if "excess_cost" in p else "–",
                  f"{p['gain_retained']:.1%}" if "gain_retained" in p else "–",
                  f"{p['agreement']:.1%}" if "agreement" in p else "–",
                  f"{p['pairing_speedup']:.1f}" if "pairing_speedup" in p else "–"] if p else
                 ["100%", f"{s['final_chi2']:.3g}", "0", "100%", "100%", "1"])
        lines.append(f"| {name} | {k} | " + " | ".join(cells) + f" | {fd.get('sdfm', '–')} | {fd.get('fm', '–')} |")
    return ["", f"Sample quality per k in this run{nfe}; the potentials' pairs measured in the full space:", "",
            *lines]


def pca_section(table: pd.DataFrame, figure: str, metrics: pd.DataFrame | None = None,
                summaries: list[dict] = ()) -> str:
    """The markdown section: the figure, a speed / quality table per data set, the run's table."""
    lines = ["### PCA cost: speed and pairing quality vs k", "",
             "The potential is fitted and queried for the cost |P x - P y|² in the top-k principal subspace "
             "(`potential.pca_dim`); k = D is the full space. Speed: median over interleaved rounds of one SGD "
             "step's kernel and of pairing one batch of noise (projection + k-dim MIPS), with the speed-up (×) "
             "over the full space. Quality: chi² of the marginal after the same number of steps; the mean "
             "full-space cost E|x - y_T(x)|² of the pairs (excess over the full-space SD-FM pairs), the share of "
             "the OT gain over independent pairs that is kept, and the share of noise paired with the same point.",
             "", f"![PCA study]({figure})", ""]
    for name, rows in table.groupby("set", sort=True):
        r = rows.iloc[0]
        lines += [f"**{name}** (N = {r.n_points}, D = {r.input_dim}; {int(r.steps)} steps of B = {r.batch_size}; "
                  f"independent pairs cost {r.cost_independent:.2f})", "", *_speed_table(rows), ""]
    if metrics is not None:
        lines += _run_table(metrics, list(summaries))
    return "\n".join(lines) + "\n"


def write_pca_study_report(csvs: list[str | Path], figure: str | Path, section: str | Path, reports_dir: str | Path,
                           metrics: str | Path | None = None, summaries: list[str | Path] = ()) -> Path:
    """Draw ``figure`` (.png and .pdf beside it) and write the markdown ``section``."""
    table = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    figure = Path(figure)
    plot_pca_study(table, figure.with_suffix(""))
    link = figure.resolve().relative_to(Path(reports_dir).resolve()).as_posix()
    runs = pd.read_csv(metrics) if metrics else None
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    atomic_write_text(section, pca_section(table, link, runs, loaded))
    return Path(section)
