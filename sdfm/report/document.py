"""Tidy tables, figures and ``report.md`` from the DAG's outputs.

Inputs (nothing else is read): ``results/metrics.csv``; the potential summaries
``results/potentials/<ds>/eps<e>.json``; the training summaries
``results/runs/<ds>/<method>/eps<e>/seed<s>/model.json`` (pairing share; for 2-D data sets the
``model.pt`` beside it draws the trajectories; for image sets the evaluate job's
``samples/*.png`` beside it are composed into one figure); the prepared 2-D data sets (the grey
background of the trajectories); and the Snakemake benchmark files
``results/benchmarks/<rule>/...tsv`` (column ``s``: wall seconds).

Figures (``sdfm.report.figures``) are named ``<dataset>_<kind>`` with ``kind`` one of :data:`sdfm.report.kinds.KINDS`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sdfm.artifacts import auto_epsilons, epsilon_label, read_metrics
from sdfm.io import atomic_write_text
from sdfm.provenance import git_state
from sdfm.report import figures
from sdfm.report.figures import choose_nfes, higher_is_better, variant_key, variant_label
from sdfm.report.kinds import FIGURE_KINDS, applicable_kinds, split_figure_name

__all__ = [
    "FIGURE_KINDS", "GUIDANCE_NFE", "cost_table", "epsilon_study", "format_paper_table", "git_state",
    "guidance_scale", "guidance_study", "guidance_table", "pairing_table",
    "paper_table", "plot_chi2_curves", "plot_metric_vs_nfe", "read_benchmark", "sample_grid_files", "shared_costs",
    "split_figure_name", "summarise", "trajectory_panels", "variant_label", "write_report",
    "read_auto_epsilons",
]

METRIC_NAMES = {"w2": "W2 to held-out data", "energy": "energy distance", "curvature": "path curvature",
                "fid": "FID (Inception-v3)", "kid": "KID (Inception-v3)",
                "precision": "precision (Inception-v3)", "recall": "recall (Inception-v3)",
                "psnr": "PSNR to the truth (dB)", "ssim": "SSIM to the truth"}
#: NFE of the guidance figure and table (the paper's guidance comparison: gamma = 2 at NFE 4).
GUIDANCE_NFE = 4
#: Euler NFE of the trajectory figure, and how many paths it draws.
TRAJECTORY_NFE, TRAJECTORY_PATHS = 16, 32


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


# ------------------------------------------------------------------------------ model-based inputs

def trajectory_panels(model_paths: dict[tuple[str, float], Path], nfe: int = TRAJECTORY_NFE,
                      n_paths: int = TRAJECTORY_PATHS, seed: int = 0) -> list[dict]:
    """Euler paths of each 2-D model from the same noise; curvature over 512 paths (``sdfm.metrics``)."""
    import torch

    from sdfm.fm.sampling import guided_velocity, integrate
    from sdfm.metrics import path_curvature
    from sdfm.models.checkpoint import load_trained

    panels = []
    for (method, epsilon), path in model_paths.items():
        model, state = load_trained(path, "cpu")
        gen = torch.Generator().manual_seed(seed)
        x0 = torch.randn(512, *state["sample_shape"], generator=gen)
        num_classes = state.get("model_extra", {}).get("num_classes")
        labels = torch.randint(num_classes, (512,), generator=gen) if num_classes else None
        with torch.no_grad():
            result = integrate(guided_velocity(model, labels), x0, solver="euler", nfe=nfe, return_trajectory=True)
        trajectory = result.trajectory
        panels.append({"method": method, "epsilon": epsilon, "curvature": path_curvature(trajectory),
                       "paths": trajectory[:, :n_paths].reshape(trajectory.shape[0], n_paths, -1).numpy()})
    return panels


_GRID = re.compile(r"^(?P<solver>[a-z0-9]+)_nfe(?P<nfe>\d+)(?:_g(?P<g>[0-9.e+-]+))?\.png$")


def sample_grid_files(run_dir: str | Path) -> dict[str, Path]:
    """``{column label: png}`` of a run's evaluate grids at a few NFE (Euler, dopri5, MeanFlow maps)."""
    found = []
    for path in sorted((Path(run_dir) / "samples").glob("*.png")):
        match = _GRID.match(path.name)
        if match:
            found.append((match["solver"], int(match["nfe"]), match["g"], path))
    guided = {g for _, _, g, _ in found}
    keep_g = None if None in guided else (sorted(guided)[0] if guided else None)  # one guidance scale
    found = [f for f in found if f[2] == keep_g]
    out = {}
    fixed = [s for s in ("euler", "midpoint", "heun", "rk4") if any(f[0] == s for f in found)][:1]
    for solver in ("meanflow", *fixed):
        nfes = choose_nfes([n for s, n, _, _ in found if s == solver])
        for s, n, _, path in found:
            if s == solver and n in nfes:
                out[f"{'MeanFlow' if s == 'meanflow' else s.capitalize()} {n}"] = path
    for s, n, _, path in found:
        if s == "dopri5":
            out["dopri5 (adaptive)"] = path
    return out


# --------------------------------------------------------------------------------------- the job

def _applicable(dataset: str, table: pd.DataFrame, potentials: list[dict], kind_of_data: str | None) -> list[str]:
    """The figure kinds that have something to show for ``dataset`` (:mod:`sdfm.report.kinds`, from the results)."""
    own = table[table.dataset == dataset]
    facts = {"epsilons": own[own.method != "fm"].epsilon.nunique(),
             "guidance_scales": len({guidance_scale(s)[1] for s in own.solver.unique()}),
             "potentials": any(s["dataset"] == dataset for s in potentials), "kind": kind_of_data,
             "superres": bool({"psnr", "ssim"} & set(own.metric))}  # super-resolution scores (sdfm.report.superres)
    return applicable_kinds(facts)


def _cost_markdown(costs: pd.DataFrame, pairing: pd.DataFrame, shared: dict, auto: float | None = None) -> list[str]:
    lines = ["| method | potential fit (s) | training (s) | evaluation (s) | total (s) | pairing share of a step |",
             "|---|---|---|---|---|---|"]
    share = pairing.set_index(["method", "epsilon"])
    for _, row in costs.sort_values(["method", "epsilon"], key=lambda c: c.map(figures.METHOD_ORDER)
                                    if c.name == "method" else c).iterrows():
        key = (row.method, row.epsilon)
        cell = "–"
        if key in share.index:
            mean, std = share.at[key, "share_mean"], share.at[key, "share_std"]
            cell = f"{100 * mean:.1f}%" + (f" ± {100 * std:.1f}" if pd.notna(std) else "")
        label = variant_label(row.method, row.epsilon, row.method == "sdfm" and row.epsilon == auto)
        lines.append(f"| {label} | {row.potential:.1f} | {row.train:.1f} | "
                     f"{row.evaluate:.1f} | {row.total:.1f} | {cell} |")
    note = [f"Totals over {int(costs.seeds.max())} seed(s); a potential is fitted once per epsilon and shared by "
            "its seeds."] if len(costs) else []
    if shared:
        note.append("Shared by every method: " + ", ".join(f"{k} {v:.1f} s" for k, v in shared.items()) + ".")
    if len(costs) and costs.missing.sum():
        note.append(f"{int(costs.missing.sum())} benchmark file(s) were missing and count as 0 s.")
    return lines + ([""] + [" ".join(note)] if note else [])


def write_report(metrics_csv: str | Path, summaries: list[str | Path], out_dir: str | Path, meta: dict,
                 train_summaries: list[str | Path] = (), data: list[str | Path] = (),
                 benchmarks: str | Path | None = None, figures_wanted: list[str] | None = None,
                 sections: list[str | Path] = ()) -> Path:
    """Draw the figures and write ``<out_dir>/report.md`` (figures under ``<out_dir>/figures``).

    Args:
        meta: ``experiment``; ``repo`` (the git checkout whose commit is recorded; or ``commit``
            given as is); ``config`` (the run's config as a dict or JSON text, recorded as YAML).
        train_summaries: the training jobs' ``model.json``; their ``model.pt`` and ``samples/``
            beside them feed the trajectory and sample figures.
        data: prepared data sets ``<name>.npz`` (the file stem is the data set's name).
        benchmarks: the Snakemake benchmark folder; without it the cost figure shows pairing only.
        figures_wanted: exactly these figures (``<dataset>_<kind>``), each drawn or, when its
            inputs are missing, replaced by a figure that says so; default: every one that applies.
        sections: markdown files written by the studies' rules, appended in order under "Studies"
            (their figure links are relative to ``out_dir``).
    """
    out_dir, fig_dir = Path(out_dir), Path(out_dir) / "figures"
    table = read_metrics(metrics_csv)
    potentials = [json.loads(Path(p).read_text()) for p in summaries]
    trained = [(Path(p), json.loads(Path(p).read_text())) for p in train_summaries]
    data_paths = {Path(p).stem: Path(p) for p in data}
    datasets = sorted(set(table.dataset) | {s["dataset"] for s in potentials} | {s["dataset"] for _, s in trained})
    if figures_wanted is None:
        kinds = {d: _applicable(d, table, potentials, _data_kind(d, data_paths, trained)) for d in datasets}
    else:
        kinds = {}
        for name in figures_wanted:
            dataset, kind = split_figure_name(name)
            kinds.setdefault(dataset, []).append(kind)
        datasets = sorted(set(datasets) | set(kinds))
    runs = table[["dataset", "method", "epsilon", "seed"]].drop_duplicates()
    pairing_all = pairing_table([s for _, s in trained])
    if meta.get("commit"):
        git = {"commit": meta["commit"], "dirty": None, "error": None}
    else:
        git = git_state(meta.get("repo"))
    lines = [f"# sdfm report: {meta.get('experiment', '')}", "", _provenance(git, meta), "",
             "Data sets: " + ", ".join(f"[{d}](#{d.lower()})" for d in datasets) + ".", "",
             _conventions(meta.get("config")), ""]
    eps_note = _EPS_NOTE[_config_dict(meta.get("config")).get("epsilon_reference", "inner_product")]
    for dataset in datasets:
        lines += [f"## {dataset}", ""]
        wanted = kinds.get(dataset, [])
        for kind in [k for k in FIGURE_KINDS if k in wanted]:
            lines += _figure_section(kind, dataset, table, potentials, trained, data_paths, runs, pairing_all,
                                     benchmarks, fig_dir)
        lines += ["### Tables", ""]
        for metric in sorted(table[table.dataset == dataset].metric.unique()):
            means, stds = paper_table(table, dataset, metric, auto=auto_epsilons(table, potentials).get(dataset))
            better = "higher" if higher_is_better(metric) else "lower"
            lines += [f"**{metric_name(metric)}** (`{metric}`; mean ± std over seeds; {better} is better, best in bold)"
                      f"; eps relative to {eps_note}",
                      "", format_paper_table(means, stds, lower_is_better=better == "lower"), ""]
        dopri = table[(table.dataset == dataset) & (table.solver == "dopri5")]
        if len(dopri):
            lines += [f"dopri5 used {dopri.nfe.mean():.0f} NFE on average ({int(dopri.nfe.min())}–"
                      f"{int(dopri.nfe.max())} over runs).", ""]
    if sections:
        lines += ["## Studies", ""]
        for section in sections:
            lines += [Path(section).read_text().rstrip("\n"), ""]
    lines += _config_section(meta.get("config"))
    report = out_dir / "report.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report


def _data_kind(dataset: str, data_paths: dict, trained: list) -> str | None:
    """``points`` when a 2-D prepared data set and a model are given, ``images`` when grids exist."""
    if dataset in data_paths and any(s["dataset"] == dataset for _, s in trained):
        return "points"
    if any(s["dataset"] == dataset and (p.parent / "samples").is_dir() for p, s in trained):
        return "images"
    return None


def _provenance(git: dict, meta: dict) -> str:
    if git.get("commit"):
        state = {True: "dirty: tracked files differ from it", False: "clean", None: "state unknown"}[git.get("dirty")]
        where = f" of `{meta['repo']}`" if meta.get("repo") else ""
        text = f"Produced by commit `{git['commit']}`{where} ({state})."
    else:
        text = f"Commit unknown ({git.get('error') or 'no git information'})."
    return text + " Figures: `figures/<name>.png` (and `.pdf` for print); configuration at the end."


#: What a relative epsilon is relative to, per ``epsilon_reference`` (sdfm.ot.batch.relative_epsilon).
_EPS_NOTE = {"inner_product": "the std of the cost -<x, y>",
             "sq_euclidean": "the std of the cost |x - y|^2 (OTT-JAX's convention)"}


def _config_dict(config) -> dict:
    return (json.loads(config) if isinstance(config, str) else config) or {}


def _conventions(config) -> str:
    """One line: how epsilon is made relative and OT-FM's OT batch (``methods.otfm.ot_batch_size``)."""
    config = _config_dict(config)
    reference = config.get("epsilon_reference", "inner_product")
    text = (f"Epsilon (SD-FM and OT-FM) is relative to {_EPS_NOTE[reference]} on a reference batch "
            f"(`epsilon_reference: {reference}`).")
    n = (config.get("methods") or {}).get("otfm", {}).get("ot_batch_size")
    if n is not None:
        text += (f" OT-FM solves OT on {n} noise x {n} data points and trains on batches drawn from each plan "
                 f"(`methods.otfm.ot_batch_size`).")
    for name, entry in (config.get("datasets") or {}).items():
        if entry.get("ot_batch_size") is not None:
            text += f" On {name}, OT-FM's plans hold {entry['ot_batch_size']} pairs (`datasets.{name}.ot_batch_size`)."
    return text


def _config_section(config) -> list[str]:
    if not config:
        return []
    if isinstance(config, str):
        config = json.loads(config)
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)
    return ["## Configuration", "", "The run's configuration (the config file after schema validation):", "",
            "```yaml", text.rstrip(), "```", ""]


# Long (81 lines): one branch per figure kind; the drawing per kind belongs beside its row of
# sdfm.report.kinds (ARCHITECTURE.md).
def _figure_section(kind, dataset, table, potentials, trained, data_paths, runs, pairing_all, benchmarks,
                    fig_dir) -> list[str]:
    """Draw one figure (or its placeholder) and return its markdown (heading, image, tables)."""
    stem = fig_dir / f"{dataset}_{kind}"
    own = table[table.dataset == dataset]
    extra: list[str] = []
    title, reason = FIGURE_KINDS[kind].title, None
    if kind == "metrics_vs_nfe":
        solver = "euler" if (own.solver == "euler").any() else (str(own.solver.iloc[0]) if len(own) else "euler")
        stats = summarise(own[own.solver == solver])
        if stats.empty:
            reason = "no metrics for this data set"
        else:
            figures.plot_metric_vs_nfe(stats, dataset, fig_dir, solver=solver, metric_name=metric_name)
    elif kind == "metrics_vs_epsilon":
        study = epsilon_study(table, dataset)
        if study.empty or study[study.method != "fm"].epsilon.nunique() < 1:
            reason = "no OT-FM / SD-FM metrics at Euler NFE"
        else:
            figures.plot_metric_vs_epsilon(study, dataset, fig_dir, metric_name=metric_name,
                                           auto=auto_epsilons(table, potentials).get(dataset))
    elif kind == "guidance":
        stats, solver, nfe = guidance_study(table, dataset)
        if stats.empty or stats.guidance.nunique() < 2:
            reason = "no metrics at two or more guidance scales"
        else:
            figures.plot_guidance(stats, dataset, fig_dir, nfe, solver=solver, metric_name=metric_name)
            extra = guidance_table(stats, solver, nfe)
    elif kind == "chi2":
        own_pot = [s for s in potentials if s["dataset"] == dataset]
        if not own_pot:
            reason = "no SD-FM potential"
        else:
            figures.plot_chi2_curves(own_pot, dataset, fig_dir)
            extra = ["| epsilon (rel) | epsilon (abs) | steps | fit seconds | final chi² |", "|---|---|---|---|---|"]
            for s in sorted(own_pot, key=lambda s: s["epsilon_rel"]):
                flag = " (diverging)" if s.get("diverging") else ""
                extra.append(f"| {s['epsilon_rel']:.3g}{' (auto)' if s.get('epsilon_auto') else ''} | "
                             f"{s['epsilon_abs']:.4g} | {s['steps_run']} | "
                             f"{s['fit_seconds']:.1f} | {s['final_chi2']:.4f}{flag} |")
    elif kind == "cost":
        auto = auto_epsilons(table, potentials)
        costs = (cost_table(runs[runs.dataset == dataset], benchmarks, auto) if benchmarks
                 else cost_table(runs.iloc[:0], "."))
        pairing = pairing_all[pairing_all.dataset == dataset]
        if costs.empty and pairing.empty:
            reason = "no benchmark files or training summaries"
        else:
            figures.plot_cost(costs, pairing, dataset, fig_dir)
            extra = _cost_markdown(costs, pairing, shared_costs(dataset, benchmarks) if benchmarks else {},
                                   auto.get(dataset))
    elif kind == "trajectories":
        models = _first_seed_models(dataset, trained)
        if dataset not in data_paths or not models:
            reason = "needs the prepared 2-D data set and trained models"
        else:
            from sdfm.data import load_prepared

            test = load_prepared(data_paths[dataset]).test
            if test.dim() != 2 or test.shape[1] != 2:
                reason = f"trajectories are drawn for 2-D data; {dataset} has samples of shape {tuple(test.shape[1:])}"
            else:
                figures.plot_trajectories(trajectory_panels(models), test[:2000].numpy(), dataset, fig_dir,
                                          nfe=TRAJECTORY_NFE)
    elif kind == "samples":
        grids = {v: sample_grid_files(p.parent) for v, p in _first_seed_models(dataset, trained, ".json").items()}
        grids = {v: g for v, g in grids.items() if g}
        if not grids:
            reason = "no sample grids under the runs' samples/ folders"
        else:
            columns = sorted({c for g in grids.values() for c in g}, key=_grid_column_order)
            figures.plot_sample_grids(grids, columns, dataset, fig_dir)
    elif kind == "superres":
        from sdfm.report.superres import superres_section

        run_dirs = {v: p.parent for v, p in _first_seed_models(dataset, trained, ".json").items()}
        reason, extra = superres_section(dataset, table, run_dirs, fig_dir)
    if reason:
        figures.placeholder(stem, f"{dataset}: {title}", reason)
    lines = [f"### {title}", "", f"![{dataset}: {title}](figures/{stem.name}.png)", ""]
    return lines + ([*extra, ""] if extra else [])


def _grid_column_order(label: str) -> tuple:
    solver, _, nfe = label.partition(" ")
    rank = {"MeanFlow": 0, "dopri5": 2}.get(solver, 1)
    return (rank, int(nfe) if nfe.isdigit() else 0)


def _first_seed_models(dataset: str, trained: list, suffix: str = ".pt") -> dict[tuple[str, float], Path]:
    """``{(method, epsilon): model.pt (or model.json)}`` of the lowest seed of each variant of ``dataset``."""
    best: dict = {}
    for path, s in trained:
        if s["dataset"] != dataset:
            continue
        key = (s["method"], float(s["epsilon_rel"]))
        target = path.with_suffix(suffix)
        if target.is_file() and (key not in best or s["seed"] < best[key][0]):
            best[key] = (s["seed"], target)
    return {k: v[1] for k, v in sorted(best.items(), key=lambda kv: variant_key(kv[0]))}


# Backwards-compatible names (the figures live in sdfm.report.figures).
def plot_metric_vs_nfe(table: pd.DataFrame, dataset: str, out_dir: str | Path, solver: str = "euler") -> list[Path]:
    """Metric vs NFE figure of one data set from the tidy table (see ``figures.plot_metric_vs_nfe``)."""
    stats = summarise(table[(table.dataset == dataset) & (table.solver == solver)])
    return figures.plot_metric_vs_nfe(stats, dataset, out_dir, solver=solver, metric_name=metric_name)


plot_chi2_curves = figures.plot_chi2_curves
