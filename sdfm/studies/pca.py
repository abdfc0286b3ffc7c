"""The PCA study (``studies.pca``): what the PCA cost buys in speed and costs in pairing quality, as k varies.

Jobs ``pca-study`` (the measurements of one data set, below) and ``pca-study-report`` (the figure and
the markdown section of report.md, from the CSVs of every set and, optionally, the run's ``metrics.csv``
with the potential summaries of the data sets fitted with ``potential.pca_dim`` and of their
full-space references, which add a table of sample quality ``fd_<dataset>`` per k); both are declared
in :data:`STUDY`.

For one data set (N points in D dims) and each k of a list, the potential of the PCA cost
``|P x - P y|^2`` (:mod:`sdfm.ot.pca`) is fitted with the same solver settings and number of SGD
steps, and the full space (k = D, no projection) is fitted the same way as the reference. Measured
per k, all in one process:

* speed, timed side by side: after every fit, ``repeats`` rounds that each time, for every k in
  turn, one SGD step's kernel (the column masses of a source batch of ``batch_size`` k-dim
  samples against the N keys: what an SGD step spends its time on) and the pairing of one training
  batch of ``pairing_batch`` full-space noise vectors (projection ``B D k`` plus the k-dim MIPS);
  the medians are reported, with the fit's wall time per step (its chi^2 evaluation included);
* quality: the final chi^2 of the marginal (``chi2_samples`` k-dim samples: the marginal error, the
  same whichever space the queries are drawn in), and the full-space cost of the pairs on
  ``quality_samples`` noise vectors against the full-space SD-FM pairs and independent pairs
  (:func:`sdfm.ot.pca.pairing_quality`).

The result is one CSV row per k; :func:`write_pca_study_report` draws and describes it.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from sdfm.cli_args import job_context, json_object  # noqa: E402
from sdfm.config_values import check_data_options  # noqa: E402
from sdfm.data import load_prepared  # noqa: E402
from sdfm.errors import ConfigError  # noqa: E402
from sdfm.io import atomic_path, atomic_write_text  # noqa: E402
from sdfm.ot import fit_potential  # noqa: E402
from sdfm.ot.kernel import augment_queries, reduce_scores  # noqa: E402
from sdfm.ot.pca import ProjectedPotential, fit_pca, pairing_quality, project_keys  # noqa: E402
from sdfm.report.figures import STYLE, save_figure  # noqa: E402
from sdfm.runtime import pick_device  # noqa: E402
from sdfm.studies import Study  # noqa: E402

__all__ = ["STUDY", "STUDY_DEFAULTS", "pca_section", "pca_study", "plot_pca_study", "write_pca_study_report"]

#: Settings of the study unless its config entry says otherwise.
STUDY_DEFAULTS = {"steps": 1000, "batch_size": 256, "pairing_batch": 256, "repeats": 20, "chi2_samples": 65536,
                  "quality_samples": 16384, "seed": 0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def pca_study(data_path: str | Path, name: str, dims: list[int], settings: dict, out: str | Path,
              device: str | None = None, progress: bool = False) -> pd.DataFrame:
    """Fit at every k of ``dims`` and at k = D, time and score them; write the CSV ``out``.

    Raises:
        ConfigError: a k above the data dimension D.
    """
    cfg = {**STUDY_DEFAULTS, **settings}
    device = pick_device(device)
    data = load_prepared(data_path)
    y = data.flat_train()
    n, d = y.shape
    bad = [k for k in dims if not 1 <= k <= d]
    if bad:
        raise ConfigError(f"config key 'studies.pca.sets.{name}.dims': {bad[0]} is not in 1..{d}, the data dimension")
    dims = sorted(set(dims) | {d})
    fits, rows = {}, []
    for k in reversed(dims):  # the full space first: it is the reference of the others
        start = time.perf_counter()
        basis = fit_pca(y, k) if k < d else None
        keys = (project_keys(basis, y) if basis is not None else y).to(device)
        pca_seconds = time.perf_counter() - start
        start = time.perf_counter()
        inner = fit_potential(keys, epsilon=0.0, steps=cfg["steps"], batch_size=cfg["batch_size"],
                              eval_every=cfg["steps"], eval_batch=4096, seed=cfg["seed"], progress=progress)
        _sync(device)
        fit_seconds = time.perf_counter() - start
        potential = ProjectedPotential(basis, inner) if basis is not None else inner
        fits[k] = potential
        chi2 = inner.chi2(torch.randn(cfg["chi2_samples"], k, generator=torch.Generator().manual_seed(cfg["seed"] + 1)))
        x = torch.randn(cfg["quality_samples"], d, generator=torch.Generator().manual_seed(cfg["seed"] + 3))  # every k
        quality = pairing_quality(potential, y, x, reference=fits[d] if k < d else None, generator_seed=cfg["seed"])
        rows.append({"set": name, "n_points": n, "input_dim": d, "k": k,
                     "explained_variance_ratio": basis.explained_variance_ratio if basis is not None else 1.0,
                     "steps": cfg["steps"], "batch_size": cfg["batch_size"], "pca_seconds": pca_seconds,
                     "fit_seconds": fit_seconds, "fit_seconds_per_step": fit_seconds / cfg["steps"],
                     "final_chi2": chi2, "cost": quality["cost"], "cost_independent": quality["cost_independent"],
                     "cost_reference": quality.get("cost_reference", quality["cost"]),
                     "agreement": quality.get("agreement", 1.0), "gain_retained": quality.get("gain_retained", 1.0)})
    step_times, pair_times = _time_side_by_side(fits, d, cfg, device)
    table = pd.DataFrame(rows).sort_values("k").reset_index(drop=True)
    table["step_seconds"] = table.k.map(step_times)
    table["pairing_batch"] = cfg["pairing_batch"]
    table["pairing_seconds"] = table.k.map(pair_times)
    full = table[table.k == d].iloc[0]
    table["excess_cost"] = table.cost - table.cost_reference
    table["relative_excess_cost"] = table.excess_cost / table.cost_reference
    table["step_speedup"] = full.step_seconds / table.step_seconds
    table["pairing_speedup"] = full.pairing_seconds / table.pairing_seconds
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table


def _time_side_by_side(fits: dict, d: int, cfg: dict, device) -> tuple[dict, dict]:
    """Median seconds of one SGD step's kernel and of one batch's pairing per k, in interleaved rounds."""
    gen = torch.Generator(device=device).manual_seed(cfg["seed"] + 2)
    steps, pairs = {k: [] for k in fits}, {k: [] for k in fits}
    for _ in range(cfg["repeats"] + 1):  # the first round warms up and is dropped
        for k, potential in fits.items():
            inner = potential.inner if isinstance(potential, ProjectedPotential) else potential
            src = torch.randn(cfg["batch_size"], k, generator=gen, device=device)
            steps[k].append(_timed(lambda: reduce_scores(augment_queries(src), inner.keys, 0.0, need_mass_sq=False,
                                                         block_elems=inner.block_elems), device))
            noise = torch.randn(cfg["pairing_batch"], d, generator=gen, device=device)
            pairs[k].append(_timed(lambda: potential.assign(noise), device))
    return ({k: statistics.median(v[1:]) for k, v in steps.items()},
            {k: statistics.median(v[1:]) for k, v in pairs.items()})


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


def check_config(config: dict, study: dict) -> None:
    """``studies.pca.sets``: each names a data set of the config or brings a source whose options pass its checks."""
    for name, entry in study.get("sets", {}).items():
        where = f"studies.pca.sets.{name}"
        if "source" in entry:
            check_data_options(where, entry["source"], entry.get("options", {}))
        elif name not in config["datasets"]:
            raise ConfigError(f"config key '{where}' names no data set of 'datasets' and has no 'source'; add one")
        elif "options" in entry:
            raise ConfigError(f"config key '{where}.options' applies only with a 'source'; the data set '{name}' of "
                              f"'datasets' brings its own options: drop it or add a source")


def _cmd_study(args) -> None:
    job_context(args)
    table = pca_study(args.data, args.dataset, args.dims, args.settings, args.out, device=args.device,
                      progress=not args.no_progress)
    print(f"{args.out}: {len(table)} rows (k = {', '.join(str(k) for k in table.k)})")


def _cmd_report(args) -> None:
    path = write_pca_study_report(args.inputs, args.figure, args.section, args.reports_dir, metrics=args.metrics,
                                  summaries=args.summaries)
    print(f"{path}: written")


def register(commands) -> None:
    """The subcommands ``pca-study`` and ``pca-study-report``."""
    p = commands.job("pca-study", _cmd_study, "PCA cost study: fit and pairing speed and pairing quality vs k")
    p.add_argument("--dims", type=int, nargs="+", required=True, help="the PCA dimensions k (the full D is added)")
    p.add_argument("--settings", type=json_object, default={})
    p.add_argument("--out", required=True, help="the CSV, one row per k")

    p = commands.plain("pca-study-report", _cmd_report, "the PCA study's figure and report section")
    p.add_argument("--inputs", nargs="+", required=True, help="the pca-study CSVs")
    p.add_argument("--metrics", default=None, help="the run's metrics.csv (fd per k of the PCA data sets)")
    p.add_argument("--summaries", nargs="*", default=[], help="potential summaries of the PCA data sets and references")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")


def shrink(entry: dict) -> dict:
    """The entry at toy scale (``sdfm smoke-config``): the two smallest k of each set, 50 steps, small batches."""
    study = copy.deepcopy(entry)
    for spec in study["sets"].values():
        spec["dims"] = sorted(spec["dims"])[:2]
    study.update(steps=50, batch_size=64, pairing_batch=64, repeats=2, chi2_samples=1024, quality_samples=512)
    return study


STUDY = Study(name="pca", defaults=STUDY_DEFAULTS, check=check_config, register=register, shrink=shrink,
              resources={"pca_study_data": {"mem_mb": 2000, "runtime": 30, "gpus": 0},
                         "pca_study": {"mem_mb": 4000, "runtime": 120, "gpus": 1}})
