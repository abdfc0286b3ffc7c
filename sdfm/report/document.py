"""Tidy tables, figures and ``report.md`` from the DAG's outputs.

Inputs (nothing else is read): ``results/metrics.csv``; the potential summaries
``results/potentials/<ds>/eps<e>.json``; the training summaries
``results/runs/<ds>/<method>/eps<e>/seed<s>/model.json`` (pairing share; for 2-D data sets the
``model.pt`` beside it draws the trajectories; for image sets the evaluate job's
``samples/*.png`` beside it are composed into one figure); the prepared 2-D data sets (the grey
background of the trajectories); and the Snakemake benchmark files
``results/benchmarks/<rule>/...tsv`` (column ``s``: wall seconds).

Figures (``sdfm.report.figures``) are named ``<dataset>_<kind>`` with ``kind`` one of :data:`sdfm.report.kinds.KINDS`;
the tables are built by :mod:`sdfm.report.tables` (re-exported here).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import yaml

from sdfm.artifacts import auto_epsilons, read_metrics
from sdfm.io import atomic_write_text
from sdfm.provenance import git_state
from sdfm.report import figures
from sdfm.report.figures import choose_nfes, higher_is_better, variant_key, variant_label
from sdfm.report.kinds import FIGURE_KINDS, applicable_kinds, split_figure_name
from sdfm.report.tables import (GUIDANCE_NFE, METRIC_NAMES, chi2_table, cost_table, epsilon_study,  # noqa: F401
                                format_paper_table, guidance_scale, guidance_study, guidance_table, metric_name,
                                pairing_table, paper_table, read_auto_epsilons, read_benchmark, shared_costs,
                                summarise)

__all__ = [
    "FIGURE_KINDS", "GUIDANCE_NFE", "cost_table", "epsilon_study", "format_paper_table", "git_state",
    "guidance_scale", "guidance_study", "guidance_table", "pairing_table",
    "paper_table", "plot_chi2_curves", "plot_metric_vs_nfe", "read_benchmark", "sample_grid_files", "shared_costs",
    "split_figure_name", "summarise", "trajectory_panels", "variant_label", "write_report",
    "read_auto_epsilons",
]

#: Euler NFE of the trajectory figure, and how many paths it draws.
TRAJECTORY_NFE, TRAJECTORY_PATHS = 16, 32


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
            extra = chi2_table(own_pot)
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
