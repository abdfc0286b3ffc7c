"""The report's super-resolution figure and table (data sets trained with ``superres``).

The evaluate job of a super-resolution run leaves ``<run dir>/superres/``: ``reference.npz`` (the
first test images ``truth``, their ``low_res`` inputs and the ``nearest`` / ``bicubic``
upsamplings), ``baselines.json`` (PSNR / SSIM of the two upsamplings over the evaluated test
images) and ``<solver>_nfe<k>.npy`` (the first samples at each solver and NFE, from the same
noise for every method). The figure has a row per test image and the columns low-res input,
bicubic, each method (first seed) at one Euler NFE, and the truth; its table gives PSNR / SSIM
(mean ± std over seeds) per method at that NFE next to the baselines.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sdfm.report import figures
from sdfm.report.figures import METHOD_COLORS, short_label, variant_key, variant_label

__all__ = ["SUPERRES_NFE", "has_superres", "plot_superres", "superres_section"]

#: The NFE of the figure: the Euler NFE nearest to it (on a log scale) among those evaluated.
SUPERRES_NFE = 4
#: Test images (rows) drawn.
ROWS = 6


def has_superres(dataset: str, trained: list) -> bool:
    """Whether a run of ``dataset`` left super-resolution panels beside its ``model.json``."""
    return any(s["dataset"] == dataset and (p.parent / "superres" / "reference.npz").is_file() for p, s in trained)


def _pick_nfe(available: list[int], wanted: int = SUPERRES_NFE) -> int:
    return min(available, key=lambda v: (abs(np.log(v) - np.log(wanted)), v))


def _scores(table: pd.DataFrame, dataset: str, solver: str, nfe: int) -> pd.DataFrame:
    """PSNR / SSIM mean and std over seeds per (method, epsilon) at one solver and NFE."""
    sub = table[(table.dataset == dataset) & (table.solver == solver) & (table.nfe == nfe)
                & table.metric.isin(["psnr", "ssim"])]
    return sub.groupby(["method", "epsilon", "metric"])["value"].agg(["mean", "std"]).reset_index()


def superres_section(dataset: str, table: pd.DataFrame, run_dirs: dict, fig_dir: Path) -> tuple[str | None, list[str]]:
    """Draw ``<dataset>_superres`` and return ``(reason it could not be drawn or None, markdown lines)``.

    Args:
        run_dirs: ``{(method, epsilon): run directory}`` of the first seed of each variant.
    """
    dirs = {v: Path(d) / "superres" for v, d in run_dirs.items() if (Path(d) / "superres" / "reference.npz").is_file()}
    if not dirs:
        return "no super-resolution panels under the runs' superres/ folders", []
    euler = sorted({int(p.stem.split("_nfe")[1]) for d in dirs.values() for p in d.glob("euler_nfe*.npy")})
    if not euler:
        return "no Euler super-resolution samples", []
    nfe = _pick_nfe(euler)
    first = next(iter(dirs.values()))
    reference = dict(np.load(first / "reference.npz"))
    baselines = json.loads((first / "baselines.json").read_text())
    samples = {v: np.load(d / f"euler_nfe{nfe}.npy") for v, d in sorted(dirs.items(), key=lambda kv: variant_key(kv[0]))
               if (d / f"euler_nfe{nfe}.npy").is_file()}
    scores = _scores(table, dataset, "euler", nfe)
    plot_superres(reference, samples, scores, baselines, dataset, fig_dir, nfe)
    lines = [f"PSNR (dB) and SSIM of one sample per test image against the image, given its {baselines['factor']}x "
             f"average-pooled version, at Euler NFE {nfe} ({baselines['n_images']} test images; mean ± std over "
             "seeds; higher is better, best method in bold). The upsampling rows need no model.", "",
             "| method | PSNR (dB) | SSIM |", "|---|---|---|"]
    best = {m: scores[scores.metric == m]["mean"].max() for m in ("psnr", "ssim")}
    for (method, epsilon), group in sorted(scores.groupby(["method", "epsilon"]), key=lambda kv: variant_key(kv[0])):
        cells = []
        for metric in ("psnr", "ssim"):
            row = group[group.metric == metric]
            if row.empty:
                cells.append("–")
                continue
            mean, std = float(row["mean"].iloc[0]), row["std"].iloc[0]
            text = f"{mean:.4g}" + (f" ± {std:.2g}" if pd.notna(std) else "")
            cells.append(f"**{text}**" if mean == best[metric] else text)
        lines.append(f"| {variant_label(method, epsilon)} | {cells[0]} | {cells[1]} |")
    for mode in ("nearest", "bicubic"):
        if mode in baselines:
            lines.append(f"| {mode} upsampling | {baselines[mode]['psnr']:.4g} | {baselines[mode]['ssim']:.4g} |")
    return None, lines


def _show(ax, image: np.ndarray) -> None:
    """Draw one (C, H, W) image in [-1, 1] (grey for one channel), without ticks or frame."""
    picture = np.clip((image + 1) / 2, 0, 1)
    if picture.shape[0] == 1:
        ax.imshow(picture[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.transpose(picture, (1, 2, 0)), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_superres(reference: dict, samples: dict, scores: pd.DataFrame, baselines: dict, dataset: str,
                  out_dir: str | Path, nfe: int) -> list[Path]:
    """Rows: test images. Columns: low-res input, bicubic, each method's sample, truth (titles carry PSNR / SSIM).

    Args:
        reference: ``truth``, ``low_res``, ``bicubic`` arrays from ``reference.npz``.
        samples: ``{(method, epsilon): (k, C, H, W) array}`` at Euler ``nfe``, same noise for every method.
        scores: mean PSNR / SSIM per (method, epsilon, metric) at that NFE.
        baselines: ``baselines.json`` (PSNR / SSIM of the upsamplings).
    """
    import matplotlib.pyplot as plt

    rows = min(ROWS, len(reference["truth"]), *(len(s) for s in samples.values()))

    def title(name, values):
        return f"{name}\n{values['psnr']:.1f} dB / {values['ssim']:.2f}" if values else name

    def method_scores(variant):
        sub = scores[(scores.method == variant[0]) & (scores.epsilon == variant[1])].set_index("metric")["mean"]
        return {m: float(sub[m]) for m in ("psnr", "ssim")} if {"psnr", "ssim"} <= set(sub.index) else None

    columns = [("low-res input", reference["low_res"], None, "black"),
               (title("bicubic", baselines.get("bicubic")), reference["bicubic"], None, "grey")]
    for variant, images in samples.items():
        columns.append((title(short_label(*variant), method_scores(variant)), images, variant,
                        METHOD_COLORS.get(variant[0], "black")))
    columns.append(("truth", reference["truth"], None, "black"))
    with figures._style():
        fig, axes = plt.subplots(rows, len(columns), figsize=(1.15 * len(columns) + 0.3, 1.15 * rows + 0.9),
                                 squeeze=False, layout="constrained")
        for c, (name, images, _, color) in enumerate(columns):
            for r in range(rows):
                _show(axes[r][c], images[r])
            axes[0][c].set_title(name, color=color, fontsize=8)
        factor = baselines.get("factor", "?")
        fig.suptitle(f"{dataset}: {factor}x super-resolution, Euler NFE {nfe} (PSNR dB / SSIM over all test images)")
        return figures.save_figure(fig, Path(out_dir) / f"{dataset}_superres")
