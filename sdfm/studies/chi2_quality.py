"""Study ``chi2_quality``: SD-FM's sample quality against how far its potential was fitted.

The semidiscrete potential g pairs noise x with the data point ``argmax_j <x, y_j> - g_j`` (eps = 0;
softmax above). How well g is fitted is measured by the chi^2 divergence between the mass the
pairing sends to each data point and the data weights, ``chi^2 = sum_j (m_j - b_j)^2 / b_j``
(:mod:`sdfm.ot.chi2`): 0 at the optimum, where every point is drawn as often as its weight says.
The paper reports that SD-FM's sample quality stops improving once chi^2 is near 0.05.

Per data set named in the study, one potential is fitted for each ``level`` with the data set's
own potential settings and ``chi2_threshold = level``: the fit stops at the first evaluation
whose upper confidence bound ``chi2_hat + chi2_z * sd`` is at most the level (the solver's
stopping rule), checked every ``eval_every`` steps; ``steps`` caps it. The chi^2 each fit
reached is measured again on fresh noise (``final_chi2`` of its summary, the x axis here). An
SD-FM model is trained on each of these potentials for every seed of the config, with the data
set's model, train and evaluate settings, and scored on the data set's test split with its
FeatureNet (one file for every level, so the FD columns compare). The grid's FM and SD-FM rows of
the same data set (same seeds), when the config trains them, are drawn as references.

Jobs run under the label ``<dataset>-chi2-<level>`` (their MLflow runs, their metric names
``fd_<label>``, renamed here to the data set's ``fd_<dataset>``).

Outputs: ``studies/chi2_quality/<dataset>.csv`` (one row per level, seed, solver, NFE and metric,
with the potential's chi^2 and steps), a figure (per data set and metric: the metric vs the
reached chi^2 on log axes, a line per Euler NFE, mean and std over seeds) and a report section with
a table and, per NFE, the largest chi^2 whose quality cannot be told from the best level's (:func:`saturation`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.artifacts import epsilon_label, read_metrics  # noqa: E402
from sdfm.cli_args import json_object  # noqa: E402
from sdfm.errors import ConfigError  # noqa: E402
from sdfm.io import atomic_write_text  # noqa: E402
from sdfm.report.style import _readable_log_ticks, _style, _value_scale, higher_is_better, save_figure  # noqa: E402
from sdfm.report.tables import metric_name  # noqa: E402
from sdfm.studies import Study  # noqa: E402

__all__ = ["STUDY", "chi2_quality_study", "collect", "level_label", "run_label", "saturation", "study_settings"]

#: ``studies.chi2_quality`` unless its entry says otherwise (``datasets`` has no default: it is required).
STUDY_DEFAULTS = {"levels": [1.0, 0.3, 0.1, 0.05, 0.02], "epsilon": 0.0, "eval_every": 25, "steps": None}


def level_label(level: float) -> str:
    """A chi^2 level as it is spelled in paths and labels: ``1``, ``0.05``."""
    return f"{float(level):g}"


def run_label(dataset: str, level: float | str) -> str:
    """The name the study's jobs of one (data set, level) run under: ``digits-chi2-0.05``."""
    return f"{dataset}-chi2-{level if isinstance(level, str) else level_label(level)}"


def study_settings(potential: dict, study: dict, level: float) -> dict:
    """The solver settings of the fit stopped at ``level``: the data set's, with ``chi2_threshold = level``,
    the study's ``eval_every`` and, when given, its ``steps`` cap."""
    settings = {**potential, "chi2_threshold": float(level), "eval_every": study["eval_every"]}
    if study.get("steps") is not None:
        settings["steps"] = study["steps"]
    return settings


def collect(dataset: str, metrics: dict[float, list[str | Path]], summaries: dict[float, str | Path]) -> pd.DataFrame:
    """One table of the study's runs of ``dataset``.

    Args:
        metrics: ``{level: [per-run metrics.csv, one per seed]}``.
        summaries: ``{level: potential summary JSON}``.

    Returns:
        Columns ``dataset, level, chi2, steps_run, reached, seed, solver, nfe, metric, value``:
        ``chi2`` the fit's ``final_chi2`` (fresh noise), ``reached`` whether its stopping rule fired before
        the step cap; metric names ``fd_<label>`` etc. renamed to the data set's.
    """
    frames = []
    for level, paths in sorted(metrics.items(), reverse=True):
        summary = json.loads(Path(summaries[level]).read_text())
        label = run_label(dataset, level)
        for path in paths:
            table = read_metrics(path)
            renamed = table.metric.str.replace(f"_{label}", f"_{dataset}", regex=False)
            frames.append(table.assign(dataset=dataset, metric=renamed, level=float(level),
                                       chi2=float(summary["final_chi2"]), steps_run=int(summary["steps_run"]),
                                       reached=bool(summary.get("stopped_by_threshold", False))))
    columns = ["dataset", "level", "chi2", "steps_run", "reached", "seed", "solver", "nfe", "metric", "value"]
    return pd.concat(frames, ignore_index=True)[columns]


def _one_dopri5_column(table: pd.DataFrame) -> pd.DataFrame:
    """An adaptive solver's rows (dopri5: its NFE differs between runs) as one column, NFE 0."""
    return table.assign(nfe=table.nfe.where(~table.solver.str.startswith("dopri5"), 0))


def _stats(table: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds per (data set, metric, solver, NFE, level)."""
    keys = ["dataset", "metric", "solver", "nfe", "level", "chi2", "steps_run", "reached"]
    return _one_dopri5_column(table).groupby(keys)["value"].agg(["mean", "std", "count"]).reset_index()


def _column(solver: str, nfe: int) -> str:
    return solver if nfe == 0 else f"{solver} {nfe}"


def saturation(table: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, metric, solver, NFE) of the per-seed ``table`` (:func:`collect`): the best level (best mean
    over seeds) and the largest reached chi^2 whose quality cannot be told apart from the best one's.

    Every level is trained with the same seeds, so a level is compared with the best one seed by seed: with
    ``d_s = value(level, s) - value(best, s)`` (signed so that d > 0 is worse) over the k seeds both have, the
    level is within noise when ``mean(d) <= 2 sd(d) / sqrt(k)`` (a one-sided paired test at roughly the 95%
    level); with one seed, when it is within 2% of the best.

    Columns ``dataset, metric, solver, nfe, best_chi2, best, saturates_at``."""
    rows = []
    for (dataset, metric, solver, nfe), cell in _one_dopri5_column(table).groupby(["dataset", "metric", "solver",
                                                                                    "nfe"]):
        wide = cell.pivot_table(index="seed", columns="level", values="value")
        chi2 = cell.groupby("level").chi2.first()
        sign = -1.0 if higher_is_better(metric) else 1.0
        means = wide.mean()
        best = (sign * means).idxmin()
        within = []
        for level in wide.columns:
            d = (sign * (wide[level] - wide[best])).dropna()
            bound = 2.0 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.02 * abs(means[best])
            if d.mean() <= bound:
                within.append(chi2[level])
        rows.append({"dataset": dataset, "metric": metric, "solver": solver, "nfe": int(nfe),
                     "best_chi2": float(chi2[best]), "best": float(means[best]), "saturates_at": float(max(within))})
    return pd.DataFrame(rows)


def _references(grid: pd.DataFrame | None, dataset: str, metric: str, solver: str, nfe: int, epsilon: str) -> dict:
    """Means over seeds of the grid's FM and SD-FM (at the study's epsilon) rows of one cell."""
    if grid is None:
        return {}
    cell = grid[(grid.dataset == dataset) & (grid.metric == metric) & (grid.solver == solver)
                & ((grid.nfe == nfe) | (nfe == 0))]
    out = {}
    for name, rows in (("FM", cell[cell.method == "fm"]),
                       ("SD-FM (grid fit)", cell[(cell.method == "sdfm") & (cell.epsilon_label == epsilon)])):
        if len(rows):
            out[name] = float(rows.value.mean())
    return out


def _figure(stats: pd.DataFrame, grid: pd.DataFrame | None, epsilon: str, stem: Path) -> list[Path]:
    panels = sorted({(d, m) for d, m in zip(stats.dataset, stats.metric)})
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
        for ax, (dataset, metric) in zip(axes[0], panels):
            cell = stats[(stats.dataset == dataset) & (stats.metric == metric) & (stats.solver == "euler")]
            if cell.empty:  # no Euler rows: every solver of the run
                cell = stats[(stats.dataset == dataset) & (stats.metric == metric)]
            groups = list(cell.groupby(["solver", "nfe"]))
            colors = plt.cm.viridis(np.linspace(0, 0.85, len(groups)))
            values = list(cell["mean"])
            for color, ((solver, nfe), rows) in zip(colors, groups):
                rows = rows.sort_values("chi2")
                ax.errorbar(rows.chi2.clip(lower=1e-4), rows["mean"], yerr=rows["std"].fillna(0.0), fmt="o-", ms=4,
                            lw=1.2, capsize=2, color=color, label=_column(solver, int(nfe)))
                references = _references(grid, dataset, metric, solver, int(nfe), epsilon)
                for value, ls in zip(references.values(), (":", "--")):
                    ax.axhline(value, color=color, ls=ls, lw=0.9)
                values += references.values()
            ax.axvline(0.05, color="grey", lw=0.8, ls="-.")
            ax.set_xscale("log")
            _value_scale(ax, values)
            _readable_log_ticks(ax)
            ax.set_xlabel("chi² of the potential (fresh noise; dash-dot: 0.05)")
            ax.set_ylabel(metric_name(metric), fontsize=8)
            ax.set_title(f"{dataset}", fontsize=10)
            ax.legend(fontsize=7, title="solver, NFE", title_fontsize=7)
        references = " Dotted: FM; dashed: SD-FM on the grid's potential." if grid is not None else ""
        fig.suptitle(f"SD-FM sample quality vs chi² of its potential (mean ± std over seeds).{references}",
                     fontsize=9)
        fig.tight_layout()
        return save_figure(fig, stem)


def _section(table: pd.DataFrame, grid: pd.DataFrame | None, epsilon: str, figure_link: str) -> str:
    lines = ["### Sample quality vs chi^2 of the potential", "",
             f"SD-FM (epsilon {epsilon}) trained on potentials whose fit stopped once the upper confidence bound of "
             "chi^2 reached each level; chi^2 is then measured again on fresh noise (the column chi^2). "
             "Mean ± std over seeds; the best level of each column in bold.", "",
             f"![sample quality vs chi^2]({figure_link})", ""]
    stats, plateau = _stats(table), saturation(table)
    for (dataset, metric), cell in stats.groupby(["dataset", "metric"]):
        columns = sorted({(s, int(n)) for s, n in zip(cell.solver, cell.nfe)}, key=lambda c: (c[0] != "euler", c))
        levels = cell.drop_duplicates("level").sort_values("level", ascending=False)
        header = ["level", "chi^2", "steps", *[_column(s, n) for s, n in columns]]
        lines += [f"**{dataset}**, {metric_name(metric)}:", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        best = {c: plateau[(plateau.dataset == dataset) & (plateau.metric == metric) & (plateau.solver == c[0])
                           & (plateau.nfe == c[1])].best.iloc[0] for c in columns}
        for _, level in levels.iterrows():
            cells = []
            for solver, nfe in columns:
                row = cell[(cell.level == level.level) & (cell.solver == solver) & (cell.nfe == nfe)]
                if row.empty:
                    cells.append("–")
                    continue
                mean, std = float(row["mean"].iloc[0]), row["std"].iloc[0]
                text = f"{mean:.4g}" + (f" ± {std:.2g}" if np.isfinite(std) else "")
                cells.append(f"**{text}**" if mean == best[(solver, nfe)] else text)
            reached = "" if level.reached else " (cap)"
            lines.append(f"| {level.level:g} | {level.chi2:.3g} | {int(level.steps_run)}{reached} | "
                         + " | ".join(cells) + " |")
        references = {c: _references(grid, dataset, metric, *c, epsilon) for c in columns}
        for name in dict.fromkeys(n for refs in references.values() for n in refs):
            lines.append(f"| {name} | | | " + " | ".join(
                f"{references[c][name]:.4g}" if name in references[c] else "–" for c in columns) + " |")
        found = plateau[(plateau.dataset == dataset) & (plateau.metric == metric)]
        lines += ["", "Quality indistinguishable from the best level's (paired over seeds: mean difference at most "
                  "2 standard errors) from chi^2 = "
                  + ", ".join(f"{r.saturates_at:.3g} ({_column(r.solver, r.nfe)})" for r in found.itertuples())
                  + " down (the largest such chi^2 per column; the paper's finding: from about 0.05).", ""]
        if any(not r for r in levels.reached):
            lines += ["(cap): the fit used all its steps before its bound reached the level.", ""]
    return "\n".join(lines)


def chi2_quality_study(dataset_runs: dict[str, tuple[dict, dict]], figure: str | Path, section: str | Path,
                       reports_dir: str | Path, tables_dir: str | Path, grid_metrics: str | Path | None = None,
                       epsilon: float = 0.0) -> pd.DataFrame:
    """Collect, write ``<tables_dir>/<dataset>.csv``, draw the figure and write the section; return the rows.

    Args:
        dataset_runs: ``{dataset: (metrics, summaries)}`` as :func:`collect` takes them.
        grid_metrics: the run's ``metrics.csv`` (FM and SD-FM reference lines), or None.
    """
    table = pd.concat([collect(d, *runs) for d, runs in sorted(dataset_runs.items())], ignore_index=True)
    Path(tables_dir).mkdir(parents=True, exist_ok=True)
    for dataset, rows in table.groupby("dataset"):
        atomic_write_text(Path(tables_dir) / f"{dataset}.csv", rows.to_csv(index=False))
    grid = read_metrics(grid_metrics) if grid_metrics else None
    _figure(_stats(table), grid, epsilon_label(epsilon), Path(figure).with_suffix(""))
    link = Path(figure).resolve().relative_to(Path(reports_dir).resolve()).as_posix()
    atomic_write_text(section, _section(table, grid, epsilon_label(epsilon), link) + "\n")
    return table


def check_config(config: dict, study: dict) -> None:
    """Each of ``studies.chi2_quality.datasets`` is a data set of the config; levels are distinct."""
    for name in study["datasets"]:
        if name not in config["datasets"]:
            raise ConfigError(f"config key 'studies.chi2_quality.datasets': '{name}' is not a data set of 'datasets' "
                              f"({', '.join(config['datasets'])}); name one of them")
    labels = [level_label(level) for level in study["levels"]]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"config key 'studies.chi2_quality.levels': {study['levels']} repeats a level; give each once")


def _parse_runs(runs: dict) -> dict[str, tuple[dict, dict]]:
    """``{dataset: {level: {"summary": path, "metrics": [paths]}}}`` -> ``{dataset: (metrics, summaries)}``."""
    return {dataset: ({float(level): run["metrics"] for level, run in levels.items()},
                      {float(level): run["summary"] for level, run in levels.items()})
            for dataset, levels in runs.items()}


def _cmd_study(args) -> None:
    table = chi2_quality_study(_parse_runs(args.runs), args.figure, args.section, args.reports_dir, args.tables_dir,
                               grid_metrics=args.metrics, epsilon=args.epsilon)
    print(f"{args.section}: {table.level.nunique()} levels x {table.seed.nunique()} seeds of "
          f"{', '.join(sorted(table.dataset.unique()))}")


def register(commands) -> None:
    """The subcommand ``chi2-quality-study`` (the fits, trainings and evaluations run as the grid's jobs do)."""
    p = commands.plain("chi2-quality-study", _cmd_study, "SD-FM quality vs the chi^2 of its potential: "
                       "tables, figure and report section")
    p.add_argument("--runs", type=json_object, required=True,
                   help='JSON {dataset: {level: {"summary": potential.json, "metrics": [metrics.csv per seed]}}}')
    p.add_argument("--metrics", default=None, help="the run's metrics.csv (FM and SD-FM reference lines)")
    p.add_argument("--epsilon", type=float, default=0.0, help="the study's relative epsilon")
    p.add_argument("--tables-dir", required=True, help="where <dataset>.csv goes")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")


def shrink(entry: dict) -> dict:
    """The entry at toy scale (``sdfm smoke-config``): the largest and smallest level, a check every 10 steps."""
    study = copy.deepcopy(entry)
    levels = sorted(study.get("levels", STUDY_DEFAULTS["levels"]))
    study.update(levels=[levels[-1], levels[0]] if len(levels) > 1 else levels, eval_every=10)
    study.pop("steps", None)
    return study


STUDY = Study(name="chi2_quality", defaults=STUDY_DEFAULTS, check=check_config, register=register, shrink=shrink,
              resources={"chi2_quality_potential": {"mem_mb": 4000, "runtime": 120, "gpus": 1},
                         "chi2_quality_train": {"mem_mb": 4000, "runtime": 240, "gpus": 1},
                         "chi2_quality_evaluate": {"mem_mb": 4000, "runtime": 120, "gpus": 1}})
