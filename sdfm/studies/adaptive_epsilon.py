"""Job ``adaptive-epsilon-study``: SD-FM at epsilon ``auto`` against the hand-picked epsilons.

Inputs: ``metrics.csv`` (the ``epsilon`` column holds auto's chosen number) and the potential
summaries ``potentials/<dataset>/epsauto.json`` (the choice, its target and entropy curve).
Outputs: a figure (per data set: the renormalised entropy ``H_rel`` of the reference-batch coupling
vs the relative epsilon, with the target and the choice; below it each metric vs epsilon at every
Euler NFE, auto as a star, SD-FM at eps = 0 and FM as dashed lines) and a markdown section whose
table gives, per metric and NFE, every SD-FM variant, FM, the best fixed epsilon and auto's rank.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.artifacts import auto_epsilons, read_metrics  # noqa: E402
from sdfm.errors import ConfigError  # noqa: E402
from sdfm.io import atomic_write_text  # noqa: E402
from sdfm.report.document import metric_name, summarise  # noqa: E402
from sdfm.report.figures import _style, higher_is_better, save_figure  # noqa: E402
from sdfm.studies import Study  # noqa: E402

__all__ = ["STUDY", "auto_vs_fixed", "adaptive_epsilon_study"]


def auto_vs_fixed(table: pd.DataFrame, auto: dict[str, float], solver: str = "euler") -> pd.DataFrame:
    """One row per (dataset, metric, nfe) of the data sets in ``auto``: auto vs the fixed SD-FM epsilons.

    Columns: ``dataset, metric, nfe, auto_epsilon, auto, best_fixed_epsilon, best_fixed, fm, rank,
    variants`` and ``fixed`` (``{epsilon: mean}``); values are means over seeds; ``rank`` is auto's
    place among all SD-FM variants (1: the best).
    """
    stats = summarise(table[(table.solver == solver) & table.dataset.isin(list(auto))])
    rows = []
    for (dataset, metric, nfe), cell in stats.groupby(["dataset", "metric", "nfe"]):
        eps_auto = auto[dataset]
        sd = cell[cell.method == "sdfm"].set_index("epsilon")["mean"]
        if eps_auto not in sd.index:
            continue
        fixed = sd.drop(index=eps_auto)
        higher = higher_is_better(metric)
        best = (fixed.idxmax() if higher else fixed.idxmin()) if len(fixed) else np.nan
        better = (sd > sd[eps_auto]) if higher else (sd < sd[eps_auto])
        fm = cell[cell.method == "fm"]["mean"]
        rows.append({"dataset": dataset, "metric": metric, "nfe": int(nfe), "auto_epsilon": eps_auto,
                     "auto": float(sd[eps_auto]), "best_fixed_epsilon": best,
                     "best_fixed": float(fixed[best]) if len(fixed) else np.nan,
                     "fm": float(fm.iloc[0]) if len(fm) else np.nan, "rank": int(better.sum()) + 1,
                     "variants": len(sd), "fixed": {float(e): float(v) for e, v in fixed.items()}})
    return pd.DataFrame(rows)


def _section(comparison: pd.DataFrame, summaries: dict[str, dict], figure_link: str) -> str:
    lines = ["### Adaptive epsilon", "",
             "SD-FM with epsilon `auto` (`sdfm.ot.auto_epsilon`): the smallest relative epsilon whose pairing on a "
             "seeded reference batch of n noise x n data points reaches the renormalised entropy "
             "H(J|I) / log n = target (0: deterministic, 1: independent), found by bisection on log epsilon, "
             "against the hand-picked epsilons of the same config (Euler; mean over seeds; best SD-FM in bold).", "",
             f"![adaptive epsilon]({figure_link})", ""]
    for dataset, rows in comparison.groupby("dataset", sort=True):
        s = summaries[dataset]["epsilon_auto"]
        lines += [f"**{dataset}**: auto chose epsilon = {s['epsilon_rel']:.3g} (absolute {s['epsilon_abs']:.3g}; "
                  f"H_rel {s['entropy']:.3f} at target {s['target_entropy']:g}, n = {s['reference_batch']}, "
                  f"criterion {s['criterion']}).", ""]
        epsilons = sorted({e for f in rows.fixed for e in f})
        header = ["metric", "NFE", *[f"eps={e:g}" for e in epsilons], f"auto ({s['epsilon_rel']:.3g})", "FM",
                  "auto's rank"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for _, r in rows.sort_values(["metric", "nfe"]).iterrows():
            values = [r.fixed.get(e, np.nan) for e in epsilons] + [r.auto]
            best = np.nanmax(values) if higher_is_better(r.metric) else np.nanmin(values)
            cells = [f"**{v:.4g}**" if v == best else ("–" if np.isnan(v) else f"{v:.4g}") for v in values]
            lines.append(f"| {r.metric} | {r.nfe} | " + " | ".join(cells) + f" | {r.fm:.4g} | {r['rank']} of "
                         f"{r.variants} |")
        wins = int((rows["rank"] == 1).sum())
        ratio = rows.auto / rows.best_fixed
        lines += ["", f"Auto is the best SD-FM variant in {wins} of {len(rows)} (metric, NFE) cells; auto / best "
                  f"fixed ranges {ratio.min():.3f}-{ratio.max():.3f} (median {ratio.median():.3f}); the best fixed "
                  f"epsilon is {', '.join(sorted({f'{e:g}' for e in rows.best_fixed_epsilon}))}.", ""]
    return "\n".join(lines)


def _figure(comparison: pd.DataFrame, summaries: dict[str, dict], stem: Path) -> list[Path]:
    datasets = sorted(comparison.dataset.unique())
    metrics = {d: sorted(comparison[comparison.dataset == d].metric.unique()) for d in datasets}
    rows = 1 + max(len(m) for m in metrics.values())
    with _style():
        fig, axes = plt.subplots(rows, len(datasets), figsize=(3.6 * len(datasets), 2.7 * rows), squeeze=False)
        for c, dataset in enumerate(datasets):
            s = summaries[dataset]["epsilon_auto"]
            ax = axes[0][c]
            ax.plot(s["curve"]["epsilon_rel"], s["curve"]["entropy"], "k.-", lw=1, ms=4, label="H_rel (reference batch)")
            ax.axhline(s["target_entropy"], color="grey", ls=":", lw=1, label="target")
            ax.plot([s["epsilon_rel"]], [s["entropy"]], ls="none", marker="*", ms=14, mfc="gold", mec="black",
                    label=f"auto: ε = {s['epsilon_rel']:.2g}")
            fixed = sorted({e for f in comparison[comparison.dataset == dataset].fixed for e in f if e > 0})
            for e in fixed:
                ax.axvline(e, color="#d62728", ls="--", lw=0.8, alpha=0.6)
            ax.set_xscale("log")
            ax.set_ylim(0, 1)
            ax.set_title(f"{dataset} (dashed: fixed ε)")
            ax.set_xlabel("relative ε")
            if c == 0:
                ax.set_ylabel("H(J|I) / log n")
            ax.legend(fontsize=7, loc="upper left")
            for r, metric in enumerate(metrics[dataset], start=1):
                ax = axes[r][c]
                sub = comparison[(comparison.dataset == dataset) & (comparison.metric == metric)]
                colors = plt.cm.viridis(np.linspace(0, 0.85, len(sub)))
                for color, (_, row) in zip(colors, sub.sort_values("nfe").iterrows()):
                    eps = [e for e in sorted(row.fixed) if e > 0]
                    ax.plot(eps, [row.fixed[e] for e in eps], "o-", color=color, ms=4, label=f"NFE {row.nfe}")
                    if 0.0 in row.fixed:
                        ax.axhline(row.fixed[0.0], color=color, ls="--", lw=0.9)
                    ax.plot([row.auto_epsilon], [row.auto], ls="none", marker="*", ms=13, mfc="gold", mec=color)
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("relative ε (dashed: ε = 0; star: auto)")
                ax.set_ylabel(metric_name(metric), fontsize=8)
                ax.legend(fontsize=7)
            for r in range(len(metrics[dataset]) + 1, rows):
                axes[r][c].axis("off")
        fig.suptitle("SD-FM: adaptive ε vs the hand-picked grid (Euler; mean over seeds)")
        fig.tight_layout()
        return save_figure(fig, stem)


def adaptive_epsilon_study(metrics_csv: str | Path, summaries: list[str | Path], figure: str | Path,
                           section: str | Path, reports_dir: str | Path, solver: str = "euler") -> pd.DataFrame:
    """Draw the figure, write the markdown section (figure link relative to ``reports_dir``); return the table."""
    table = read_metrics(metrics_csv)
    loaded = [json.loads(Path(p).read_text()) for p in summaries]
    auto = auto_epsilons(table, loaded)
    if not auto:
        raise ValueError("no potential summary with 'epsilon_auto': add 'auto' to methods.sdfm.epsilons")
    by_dataset = {s["dataset"]: s for s in loaded if s.get("epsilon_auto")}
    comparison = auto_vs_fixed(table, auto, solver)
    if comparison.empty:
        raise ValueError(f"{metrics_csv} has no {solver} rows of SD-FM at the auto epsilon of {sorted(auto)}")
    _figure(comparison, by_dataset, Path(figure).with_suffix(""))
    link = Path(figure).resolve().relative_to(Path(reports_dir).resolve()).as_posix()
    atomic_write_text(section, _section(comparison, by_dataset, link) + "\n")
    return comparison


def check_config(config: dict, study: dict) -> None:
    """``studies.adaptive_epsilon`` needs SD-FM at epsilon ``auto``."""
    if "auto" not in config["methods"].get("sdfm", {}).get("epsilons", []):
        raise ConfigError("config key 'studies.adaptive_epsilon' compares SD-FM at epsilon 'auto' with the fixed "
                          "ones; add 'auto' to methods.sdfm.epsilons")


def _cmd_study(args) -> None:
    table = adaptive_epsilon_study(args.metrics, args.summaries, args.figure, args.section, args.reports_dir)
    print(f"{args.section}: {len(table)} (data set, metric, NFE) comparisons")


def register(commands) -> None:
    """The subcommand ``adaptive-epsilon-study`` (the grid's own jobs do the work; this draws and describes)."""
    p = commands.plain("adaptive-epsilon-study", _cmd_study,
                       "SD-FM at epsilon auto vs the fixed epsilons: figure and section")
    p.add_argument("--metrics", required=True, help="metrics.csv")
    p.add_argument("--summaries", nargs="+", required=True, help="the potential summaries epsauto.json")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")


STUDY = Study(name="adaptive_epsilon", check=check_config, register=register)
