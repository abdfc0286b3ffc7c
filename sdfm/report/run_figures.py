"""Figures of the runs themselves: where the time goes, the sampling paths of 2-D data, sample grids.

Drawn in the style of :mod:`sdfm.report.style`; re-exported by :mod:`sdfm.report.figures`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sdfm.report.style import (METHOD_COLORS, STAGE_COLORS, STAGE_HATCHES, STAGE_NAMES, _style,  # noqa: E402
                               save_figure, short_label, variant_key)

__all__ = ["plot_cost", "plot_sample_grids", "plot_trajectories"]


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
