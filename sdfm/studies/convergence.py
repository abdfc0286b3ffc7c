"""The convergence study (``studies.convergence``): chi^2 of the fitted potential after K SGD steps, and its rate.

Jobs ``convergence-study`` (the measurements) and ``convergence-report`` (the fitted exponents as
a CSV, the log-log figure of chi^2 against K with the K^(-1/2) reference, and a markdown section
with the table of exponents); both are declared in :data:`STUDY`.

For one data set, each setting (N points, batch size B, relative epsilon, solver settings) and
seed, the potential of the first N points of a fixed permutation of the training set is fitted
by :func:`sdfm.ot.fit_potential`, and the unbiased chi^2 of its averaged iterate
(:mod:`sdfm.ot.chi2`, M source samples) is recorded at log-spaced step counts
``K_1 < ... < K_max``. One fit runs through all of them: it is stopped at ``K_i`` (the solver
evaluates chi^2 at its last step), checkpointed, and resumed up to ``K_{i+1}``; the solver treats
``steps`` as a setting a resumption may change, and with the averages used here (EMA, or a
Polyak mean from step 1) the iterates do not depend on it, so the K_i are points of one run.

The rate: over the window of K where the curve is measured (``K >= fit_from`` and the seed-mean
chi^2 above ``floor_factor`` times the noise floor), least squares

    log chi^2 = a + b log K

per seed; b is the mean of the per-seed slopes, with a Student-t 95% interval over seeds (with
one seed: the regression's standard error). The rate quoted for SGD on the semi-dual is
chi^2 ~ K^(-1/2) up to constants, for plain SGD with steps decaying like t^(-1/2) and the
average of the iterates: the ``theory`` solver settings below. The project's defaults
(Nesterov momentum, EMA 0.999) are measured beside them.

Noise floor. At the optimum (m = b, uniform b) and hard assignments, the estimate is a
degenerate U-statistic of M samples with kernel ``h(x, x') = N 1[same cell] - 1``, mean 0 and
variance N - 1, so its standard deviation is

    sd_0 = sqrt(2 (N - 1) / (M (M - 1))),

about sqrt(2N) / M; soft assignments (eps > 0) give a smaller one. Points below
``floor_factor * sd_0`` are left out of the fit (they are noise).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from itertools import product
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from sdfm.cli_args import job_context, json_object  # noqa: E402
from sdfm.config_values import check_unique_seeds  # noqa: E402
from sdfm.data import load_prepared  # noqa: E402
from sdfm.data.registry import dataset_options  # noqa: E402
from sdfm.errors import ConfigError  # noqa: E402
from sdfm.io import atomic_path, atomic_write_text  # noqa: E402
from sdfm.ot import fit_potential  # noqa: E402
from sdfm.ot.problem import REFERENCE_BATCH, absolute_epsilon  # noqa: E402
from sdfm.report.figures import STYLE, save_figure  # noqa: E402
from sdfm.runtime import pick_device  # noqa: E402
from sdfm.studies import Study  # noqa: E402

__all__ = ["STUDY", "STUDY_DEFAULTS", "THEORY_SOLVER", "chi2_noise_floor", "convergence_section", "convergence_study",
           "fit_exponent", "fit_exponents", "log_spaced_steps", "plot_convergence", "study_settings",
           "write_convergence_report"]

#: The solver settings the K^(-1/2) rate refers to: plain SGD, steps lr0 (1 + t / t0)^(-1/2), the
#: uniform average of all iterates (Polyak, from step 1). lr_scale 0.5 is the effective step
#: lr_scale / (1 - momentum) of the project's defaults (0.05, Nesterov 0.9).
THEORY_SOLVER = {"optimizer": "sgd", "momentum": 0.0, "averaging": "polyak", "lr_scale": 0.5, "decay_power": 0.5}

#: Settings of the study unless its config entry says otherwise.
STUDY_DEFAULTS = {"n_points": [1000, 4000], "batch_sizes": [256], "epsilons": [0.0], "centre": None,
                  "steps": 1024, "first_eval": 16, "eval_points": 7, "eval_batch": 16384, "seeds": [0, 1, 2],
                  "fit_from": 64, "floor_factor": 5.0, "reference_batch": REFERENCE_BATCH,
                  "solvers": {"theory": THEORY_SOLVER, "default": {}}}

#: Solver settings a study may vary (steps, batch size, evaluations and averaging burn-in are the study's).
SOLVER_KEYS = ("optimizer", "momentum", "averaging", "lr_scale", "decay_power", "decay_steps", "ema_decay", "init",
               "epsilon_schedule")


def log_spaced_steps(first: int, last: int, count: int) -> list[int]:
    """``count`` step counts from ``first`` to ``last`` spaced evenly in log K (fewer if they round together)."""
    if not 1 <= first <= last or count < 1:
        raise ValueError(f"need 1 <= first <= last and count >= 1, got {first}, {last}, {count}")
    if count == 1:
        return [last]
    return sorted({int(round(k)) for k in np.geomspace(first, last, count)})


def chi2_noise_floor(n_points: int, eval_batch: int) -> float:
    """Standard deviation of the unbiased chi^2 estimate at the optimum, hard assignments, uniform b."""
    return math.sqrt(2.0 * (n_points - 1) / (eval_batch * (eval_batch - 1)))


def study_settings(settings: dict) -> list[tuple[int, int]]:
    """The (N, B) pairs measured: the full grid, or with ``centre`` each list varied around it."""
    grid = list(product(settings["n_points"], settings["batch_sizes"]))
    centre = settings.get("centre")
    if not centre:
        return grid
    n0, b0 = centre["n_points"], centre["batch_size"]
    return [(n, b) for n, b in grid if n == n0 or b == b0]


def _curve(y, eps_abs, batch_size, seed, ks, settings, solver, device, workdir) -> list[tuple[int, float, float]]:
    """(K, chi^2 at K, seconds up to K) for each K of ``ks``, all from one fit (stop, checkpoint, resume)."""
    checkpoint = Path(workdir) / f"fit-{batch_size}-{seed}.ckpt"
    checkpoint.unlink(missing_ok=True)
    rows, seconds = [], 0.0
    for k in ks:
        start = time.perf_counter()
        potential = fit_potential(y, epsilon=eps_abs, steps=k, batch_size=batch_size, seed=seed, device=device,
                                  eval_every=ks[-1], eval_batch=settings["eval_batch"], burn_in=0.0,
                                  checkpoint=checkpoint, progress=False, **solver)
        seconds += time.perf_counter() - start
        assert potential.history["step"][-1] == k
        rows.append((k, float(potential.history["chi2"][-1]), seconds))
    checkpoint.unlink(missing_ok=True)
    return rows


def convergence_study(data_path: str | Path, name: str, settings: dict, out: str | Path, device: str | None = None,
                      progress: bool = True) -> pd.DataFrame:
    """Measure chi^2 at log-spaced K for every setting and seed; write the tidy CSV ``out``.

    Columns: dataset, solver, n_points, batch_size, epsilon (relative), epsilon_abs, seed, step (K),
    chi2, seconds (wall time of the fit up to K, its evaluations included), eval_batch, chi2_floor.
    """
    settings = {**STUDY_DEFAULTS, **settings}
    data = load_prepared(data_path)
    y_all = data.flat_train()
    if max(settings["n_points"]) > y_all.shape[0]:
        raise ConfigError(f"config key 'studies.convergence.n_points': {max(settings['n_points'])} exceeds the "
                          f"{y_all.shape[0]} training points of '{name}'; use smaller N or a larger data set")
    order = torch.randperm(y_all.shape[0], generator=torch.Generator().manual_seed(0))  # nested subsamples
    ks = log_spaced_steps(settings["first_eval"], settings["steps"], settings["eval_points"])
    unknown = sorted({k for s in settings["solvers"].values() for k in s} - set(SOLVER_KEYS))
    if unknown:
        raise ConfigError(f"config key 'studies.convergence.solvers': '{unknown[0]}' cannot be varied; "
                          f"use {', '.join(SOLVER_KEYS)}")
    device = pick_device(device)
    jobs = list(product(study_settings(settings), settings["epsilons"], settings["solvers"].items(),
                        settings["seeds"]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sdfm-convergence-") as workdir:
        for (n, batch), eps_rel, (solver_name, solver), seed in tqdm(jobs, desc="convergence", disable=not progress):
            y = y_all[order[:n]].to(device)
            eps_abs = absolute_epsilon(eps_rel, y.cpu(), settings["reference_batch"])
            floor = chi2_noise_floor(n, settings["eval_batch"])
            for k, chi2, seconds in _curve(y, eps_abs, batch, seed, ks, settings, solver, device, workdir):
                rows.append({"dataset": name, "solver": solver_name, "n_points": n, "batch_size": batch,
                             "epsilon": float(eps_rel), "epsilon_abs": eps_abs, "seed": seed, "step": k, "chi2": chi2,
                             "seconds": seconds, "eval_batch": settings["eval_batch"], "chi2_floor": floor})
    table = pd.DataFrame(rows)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return table


def fit_exponent(steps, chi2, seeds=None) -> dict:
    """Fit ``log chi2 = a + b log K``; return b, its 95% interval, a, and what the fit used.

    With ``seeds`` (one label per point) each seed gets its own least-squares line and b is the mean
    of their slopes, with a Student-t interval over seeds (their spread is the run-to-run noise; the
    points of one run are correlated, so a pooled regression would understate it). With one seed the
    interval comes from the regression's standard error. Points with chi2 <= 0 are dropped.
    """
    from scipy import stats

    frame = pd.DataFrame({"k": np.asarray(steps, float), "chi2": np.asarray(chi2, float),
                          "seed": np.zeros(len(steps)) if seeds is None else np.asarray(seeds)})
    frame = frame[frame.chi2 > 0]
    slopes, intercepts, ses = [], [], []
    for _, part in frame.groupby("seed"):
        if part.k.nunique() < 2:
            continue
        fit = stats.linregress(np.log(part.k), np.log(part.chi2))
        slopes.append(fit.slope)
        intercepts.append(fit.intercept)
        ses.append(fit.stderr if len(part) > 2 else float("nan"))
    if not slopes:
        return {"b": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "a": float("nan"), "se": float("nan"),
                "n_seeds": 0, "n_obs": int(len(frame))}
    b = float(np.mean(slopes))
    if len(slopes) > 1:
        se = float(np.std(slopes, ddof=1) / math.sqrt(len(slopes)))
        half = float(stats.t.ppf(0.975, len(slopes) - 1)) * se
    else:
        se = float(ses[0])
        half = float(stats.t.ppf(0.975, max(len(frame) - 2, 1))) * se
    return {"b": b, "ci_low": b - half, "ci_high": b + half, "a": float(np.mean(intercepts)), "se": se,
            "n_seeds": len(slopes), "n_obs": int(len(frame))}


def fit_exponents(table: pd.DataFrame, fit_from: int = 1, floor_factor: float = 5.0) -> pd.DataFrame:
    """One :func:`fit_exponent` per (solver, N, B, epsilon) over its measured window of K.

    The window: ``K >= fit_from`` and the seed-mean chi^2 above ``floor_factor`` times the noise floor
    (the same K for every seed). Adds the window's ends, the number of K and the last seed-mean chi^2.
    """
    keys = ["dataset", "solver", "n_points", "batch_size", "epsilon"]
    rows = []
    for key, part in table.groupby(keys, sort=True):
        mean = part.groupby("step").chi2.mean()
        floor = float(part.chi2_floor.iloc[0])
        window = [k for k, v in mean.items() if k >= fit_from and v > floor_factor * floor]
        used = part[part.step.isin(window)]
        fit = fit_exponent(used.step, used.chi2, used.seed) if len(window) >= 3 else fit_exponent([], [], [])
        rows.append({**dict(zip(keys, key)), **fit, "k_min": min(window, default=np.nan),
                     "k_max": max(window, default=np.nan), "n_steps": len(window),
                     "final_chi2": float(mean.iloc[-1]), "chi2_floor": floor, "floor_factor": floor_factor})
    return pd.DataFrame(rows)


#: The exponent of the rate chi^2 ~ K^(-1/2) quoted for SGD with decaying steps and averaging.
REFERENCE_EXPONENT = -0.5


def _label(n: int, batch: int) -> str:
    return f"N={n}, B={batch}"


def plot_convergence(table: pd.DataFrame, fits: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Panels solver x epsilon; per (N, B) the seed mean of chi^2 vs K (band: min-max over seeds),
    the fitted line over its window, exponents in the legend, and a K^(-1/2) reference line."""
    solvers = list(dict.fromkeys(table.solver))
    epsilons = sorted(table.epsilon.unique())
    pairs = sorted({(int(n), int(b)) for n, b in zip(table.n_points, table.batch_size)})
    colors = plt.get_cmap("tab10").colors
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(solvers), len(epsilons), figsize=(4.6 * len(epsilons), 3.6 * len(solvers)),
                                 squeeze=False, sharex=True)
        for (i, solver), (j, eps) in ((a, b) for a in enumerate(solvers) for b in enumerate(epsilons)):
            ax, anchors = axes[i][j], []
            for c, (n, batch) in enumerate(pairs):
                part = table[(table.solver == solver) & (table.epsilon == eps) & (table.n_points == n)
                             & (table.batch_size == batch)]
                if part.empty:
                    continue
                color = colors[c % len(colors)]
                stats = part.groupby("step").chi2.agg(["mean", "min", "max"])
                shown = stats[stats["mean"] > 0]
                fit = fits[(fits.solver == solver) & (fits.epsilon == eps) & (fits.n_points == n)
                           & (fits.batch_size == batch)].iloc[0]
                text = (f"b={fit.b:.2f} [{fit.ci_low:.2f}, {fit.ci_high:.2f}]" if math.isfinite(fit.b)
                        else "b: <3 points above floor")
                ax.plot(shown.index, shown["mean"], "o-", color=color, ms=3.5, lw=1.2, label=f"{_label(n, batch)}: {text}")
                ax.fill_between(shown.index, shown["min"].clip(lower=shown["mean"].min() * 1e-2), shown["max"],
                                color=color, alpha=0.15, lw=0)
                ax.axhline(fit.floor_factor * fit.chi2_floor, color=color, ls=":", lw=0.8)
                if math.isfinite(fit.b):
                    k = np.geomspace(fit.k_min, fit.k_max, 20)
                    ax.plot(k, np.exp(fit.a) * k ** fit.b, "--", color=color, lw=0.9)
                    anchors.append((fit.k_min, float(stats["mean"][fit.k_min])))
            if anchors:  # the reference rate through the geometric mean of the windows' first points
                k0 = math.exp(np.mean([math.log(k) for k, _ in anchors]))
                c0 = math.exp(np.mean([math.log(v) for _, v in anchors]))
                k = np.geomspace(k0, table.step.max(), 20)
                ax.plot(k, c0 * (k / k0) ** REFERENCE_EXPONENT, color="black", lw=2.0, alpha=0.35,
                        label="K^(-1/2) reference")
            ax.set(xscale="log", yscale="log", title=f"{solver} solver, ε={eps:g}")
            ax.set_xlabel("SGD steps K")
            ax.set_ylabel("χ²(m(g), b)")
            ax.legend(fontsize=6.5, frameon=False, loc="best")
        fig.suptitle(f"{table.dataset.iloc[0]}: potential convergence (seed mean, band min–max; dashed: fit; "
                     "dotted: the fit's floor cut)", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, stem)


def convergence_section(table: pd.DataFrame, fits: pd.DataFrame, figure: str, solvers: dict | None = None) -> str:
    """Markdown: what was run, the figure, and the table of fitted exponents."""
    seeds = sorted(table.seed.unique())
    eval_batch = int(table.eval_batch.iloc[0])
    lines = [f"### Convergence rate of the potential ({table.dataset.iloc[0]})", "",
             f"chi² of the averaged potential after K SGD steps (K = {', '.join(str(k) for k in sorted(table.step.unique()))}; "
             f"seeds {', '.join(str(s) for s in seeds)}; unbiased estimate on {eval_batch} source samples, noise floor "
             "sd₀ = sqrt(2(N−1)/(M(M−1))) at the optimum). Fitted log χ² = a + b log K per seed over the K ≥ fit_from "
             f"whose seed-mean χ² exceeds {fits.floor_factor.iloc[0]:g} sd₀; b is the mean slope, with a 95% Student-t interval over seeds. "
             f"The reference is b = {REFERENCE_EXPONENT}, the rate quoted for SGD with decaying steps and iterate averaging. "
             "K·B/N: source samples per data point seen by the end of the window. fit s: wall seconds of one fit up to "
             "K max, its evaluations included (max over seeds).", ""]
    if solvers:
        lines += ["Solver settings: " + "; ".join(f"`{name}` {settings or '(project defaults)'}"
                                                 for name, settings in solvers.items()) + ".", ""]
    lines += [f"![convergence]({figure})", "",
              "| solver | ε | N | B | b | 95% CI | K window (count) | K·B/N at its end | χ² at K max | floor cut | fit s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    wall = table.groupby(["solver", "n_points", "batch_size", "epsilon"]).seconds.max()
    for r in fits.itertuples():
        b = f"**{r.b:.2f}**" if math.isfinite(r.b) else "—"
        ci = f"[{r.ci_low:.2f}, {r.ci_high:.2f}]" if math.isfinite(r.ci_low) else "—"
        window = f"{int(r.k_min)}–{int(r.k_max)} ({r.n_steps})" if r.n_steps else "none"
        per_point = f"{r.k_max * r.batch_size / r.n_points:.3g}" if r.n_steps else "—"
        lines.append(f"| {r.solver} | {r.epsilon:g} | {r.n_points} | {r.batch_size} | {b} | {ci} | {window} | "
                     f"{per_point} | {r.final_chi2:.3g} | {r.floor_factor * r.chi2_floor:.2g} | {wall[(r.solver, r.n_points, r.batch_size, r.epsilon)]:.1f} |")
    return "\n".join(lines) + "\n"


def write_convergence_report(inputs: str | Path, figure: str | Path, section: str | Path, fits_out: str | Path,
                             reports_dir: str | Path, fit_from: int = 1, floor_factor: float = 5.0,
                             solvers: dict | None = None) -> Path:
    """Fit the exponents, draw ``figure`` (PNG, and a PDF beside it), write ``section`` and ``fits_out``."""
    table = pd.read_csv(inputs)
    fits = fit_exponents(table, fit_from=fit_from, floor_factor=floor_factor)
    with atomic_path(fits_out) as tmp:
        fits.to_csv(tmp, index=False)
    plot_convergence(table, fits, Path(figure).with_suffix(""))
    link = os.path.relpath(Path(figure), Path(reports_dir))
    atomic_write_text(section, convergence_section(table, fits, link, solvers))
    return Path(section)


def check_config(config: dict, study: dict) -> None:
    """``studies.convergence`` (``study``: over the defaults): a data set of the config, a centre on the grid,
    K windows within the steps, distinct seeds."""
    key = "studies.convergence"
    check_unique_seeds(study["seeds"], f"{key}.seeds")
    if study["dataset"] not in config["datasets"]:
        raise ConfigError(f"config key '{key}.dataset': {study['dataset']!r} is not a data set of this config; "
                          f"choose one of {', '.join(config['datasets'])}")
    for name in ("first_eval", "fit_from"):
        if study[name] > study["steps"]:
            raise ConfigError(f"config key '{key}.{name}': {study[name]} exceeds {key}.steps = {study['steps']}; "
                              f"lower it or raise steps")
    for name, values in (("n_points", "n_points"), ("batch_size", "batch_sizes")):
        centre = (study["centre"] or {}).get(name)
        if centre is not None and centre not in study[values]:
            raise ConfigError(f"config key '{key}.centre.{name}': {centre} is not in {key}.{values}; add it there")
    entry = config["datasets"][study["dataset"]]
    n_train = entry.get("options", {}).get("n_train", dataset_options(entry["source"]).get("n_train"))
    largest = max(study["n_points"])
    if isinstance(n_train, int) and largest > n_train:
        raise ConfigError(f"config key '{key}.n_points': {largest} exceeds the {n_train} training points of "
                          f"'{study['dataset']}' (datasets.{study['dataset']}.options.n_train); use smaller N")


def _cmd_study(args) -> None:
    job_context(args)
    table = convergence_study(args.data, args.dataset, args.settings, args.out, device=args.device,
                              progress=not args.no_progress)
    print(f"{args.out}: {len(table)} rows")


def _cmd_report(args) -> None:
    settings = {**STUDY_DEFAULTS, **args.settings}
    path = write_convergence_report(args.input, args.figure, args.section, args.fits, args.reports_dir,
                                    fit_from=settings["fit_from"], floor_factor=settings["floor_factor"],
                                    solvers=settings["solvers"])
    print(f"{path}: written")


def register(commands) -> None:
    """The subcommands ``convergence-study`` and ``convergence-report``."""
    p = commands.job("convergence-study", _cmd_study, "chi^2 of the potential after K SGD steps, over N, B, eps")
    p.add_argument("--settings", type=json_object, default={}, help="the studies.convergence config entry as JSON")
    p.add_argument("--out", required=True, help="the tidy CSV, one row per setting, seed and K")

    p = commands.plain("convergence-report", _cmd_report, "the convergence study's exponents, figure and report section")
    p.add_argument("--input", required=True, help="the convergence-study CSV")
    p.add_argument("--settings", type=json_object, default={}, help="fit_from, floor_factor, solvers (as in the study)")
    p.add_argument("--figure", required=True, help="the PNG to draw (a PDF beside it)")
    p.add_argument("--section", required=True, help="the markdown section to write")
    p.add_argument("--fits", required=True, help="the CSV of fitted exponents")
    p.add_argument("--reports-dir", required=True, help="figure links are relative to it")


def shrink(entry: dict) -> dict:
    """The entry at toy scale (``sdfm smoke-config``): two N and B, 64 steps, three K, two seeds."""
    study = {**entry, "n_points": [200, 400], "batch_sizes": [32, 64], "steps": 64, "first_eval": 16,
             "eval_points": 3, "eval_batch": 1024, "seeds": [0, 1], "fit_from": 16, "reference_batch": 256}
    if study.get("centre") is not None:
        study["centre"] = {"n_points": 400, "batch_size": 64}
    return study


STUDY = Study(name="convergence", defaults=STUDY_DEFAULTS, check=check_config, register=register, shrink=shrink,
              resources={"convergence_study": {"mem_mb": 4000, "runtime": 120, "gpus": 1}})
