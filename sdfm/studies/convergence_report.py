"""Job ``convergence-report``: the convergence study's fitted exponents, figure and report section.

Input: the tidy CSV of :mod:`sdfm.studies.convergence`. Output: the fitted exponents
(one row per solver, N, B, epsilon; :func:`sdfm.studies.convergence.fit_exponents`) as a CSV,
the log-log figure of chi^2 against K with the K^(-1/2) reference, and a markdown section with
the table of exponents.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.io import atomic_path, atomic_write_text  # noqa: E402
from sdfm.report.figures import STYLE, save_figure  # noqa: E402
from sdfm.studies.convergence import fit_exponents  # noqa: E402

__all__ = ["convergence_section", "plot_convergence", "write_convergence_report"]

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
