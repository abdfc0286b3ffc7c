"""Label agreement of exact OT pairs vs beta, for the class-conditional cost c_X + beta c_Z.

Conditional OT-FM and SD-FM pair a noise-and-label ``[x, sqrt(beta) e_z]`` with a data point
``[y, sqrt(beta) e_z']``; the inner product is ``<x, y> + beta [z = z']``. A pair whose labels differ
teaches the model to ignore the label, so beta must be large against the spread of ``<x, y>``
between candidates: about ``|y_j - y_k|``, ~ sqrt(D) times the pixel spread, which grows with the
image size. This script measures the share of exact OT pairs that share their label, against beta,
on synthetic images of the dimension of a config, and picks the beta a config uses.

Data (per setting: D = 3 R^2, K classes): images in [-1, 1] built like natural ones, a smooth
global mean image, a smooth class-mean field (std 0.15: ~10% of the pixel variance between
classes), a smooth per-image field (std 0.4) and pixel noise (std 0.15), clipped; smooth fields
are 8 x 8 Gaussian fields upsampled bilinearly. Pixel std ~0.45, ImageNet's is ~0.5 on this scale.

Pairs: n noise draws x ~ N(0, I_D) with labels z_i, n images, the exact OT assignment (scipy's
``linear_sum_assignment``) for the cost ``-<x_i, y_j> - beta [z_i = z'_j]`` (the squared-distance
cost gives the same permutation: its other terms are separable). Two label draws:

- ``matched``: the images' labels are a permutation of the noise labels. Every label can be
  matched, as in the semidiscrete coupling of SD-FM (the whole data set, every class in
  proportion). With n = 1024 and K = 1000 a class has ~1 candidate, against ~2,500 in the 2.56M
  images of ImageNet-32: the within-class candidate is farther from the best one here, so the
  agreement measured is a LOWER bound for SD-FM's at the same beta.
- ``independent``: independent labels, as in an OT-FM training batch; at most the label overlap
  of the two batches (``cap`` in the CSV) can agree.

Chance is ``sum_k p_k^2`` (beta = 0, labels ignored). Columns: setting, dim, classes, n, draw,
beta, seed, agreement, cap, chance.

Usage: ``python benchmarks/conditional_beta.py [--quick] [--out reports/bench/conditional_beta.csv]``
(full: ImageNet-32 (D = 3072, K = 1000) and PetFace-64 (D = 12288, K = 13) at n = 1024, 11 betas,
3 seeds, a few minutes on 2 cores; quick: 1 seed, 6 betas).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from common import BENCH_DIR, bench_style, machine_note, save_figure, write_csv

#: (name, image side R, classes K): the configs with a conditional data set.
SETTINGS = (("imagenet32", 32, 1000), ("petface64", 64, 13))
BETAS = (0.0, 1.0, 3.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 300.0, 1000.0)
QUICK_BETAS = (0.0, 1.0, 10.0, 30.0, 100.0, 300.0)
#: the agreement the chosen beta must reach in the matched draw
TARGET = 0.99


def smooth_fields(gen: torch.Generator, count: int, side: int, std: float) -> torch.Tensor:
    """(count, 3, R, R) fields: 8 x 8 Gaussian noise upsampled bilinearly, scaled to std ``std``."""
    coarse = torch.randn(count, 3, 8, 8, generator=gen, dtype=torch.float64)
    fine = F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    return fine * (std / fine.std())


def class_images(gen: torch.Generator, labels: torch.Tensor, side: int, num_classes: int) -> torch.Tensor:
    """(n, 3 R^2) images with the module's class structure (class means drawn from ``gen`` first)."""
    state = torch.Generator().manual_seed(12345)  # the same class means for every draw of a setting
    mean = smooth_fields(state, 1, side, 0.2) - 0.1
    class_means = smooth_fields(state, num_classes, side, 0.15)
    own = smooth_fields(gen, len(labels), side, 0.4)
    noise = 0.15 * torch.randn(len(labels), 3, side, side, generator=gen, dtype=torch.float64)
    return (mean + class_means[labels] + own + noise).clamp(-1, 1).flatten(1)


def label_overlap(a: np.ndarray, b: np.ndarray, num_classes: int) -> float:
    """The largest share of pairs that can share labels: sum_k min(count_a(k), count_b(k)) / n."""
    return float(np.minimum(np.bincount(a, minlength=num_classes), np.bincount(b, minlength=num_classes)).sum()
                 / len(a))


def measure(side: int, num_classes: int, n: int, betas, seed: int, draw: str) -> list[dict]:
    """Agreement of the exact OT pairs at each beta, for one draw of noise, labels and images."""
    gen = torch.Generator().manual_seed(seed)
    dim = 3 * side * side
    z = torch.randint(num_classes, (n,), generator=gen)
    z_data = z[torch.randperm(n, generator=gen)] if draw == "matched" else torch.randint(num_classes, (n,),
                                                                                           generator=gen)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    y = class_images(gen, z_data, side, num_classes)
    scores = (x @ y.T).numpy()
    same = (z[:, None] == z_data[None, :]).numpy()
    cap = label_overlap(z.numpy(), z_data.numpy(), num_classes)
    chance = float(same.mean())
    rows = []
    for beta in betas:
        rows_idx, cols = linear_sum_assignment(scores + beta * same, maximize=True)
        agreement = float(same[rows_idx, cols].mean())
        rows.append({"dim": dim, "classes": num_classes, "n": n, "draw": draw, "beta": beta, "seed": seed,
                     "agreement": agreement, "cap": cap, "chance": chance})
    return rows


def chosen_beta(frame, setting: str) -> float:
    """The smallest beta whose mean matched agreement reaches :data:`TARGET` (NaN if none on the grid)."""
    part = frame[(frame.setting == setting) & (frame.draw == "matched")].groupby("beta").agreement.mean()
    passing = part[part >= TARGET]
    return float(passing.index.min()) if len(passing) else float("nan")


def plot(frame, path) -> None:
    plt = bench_style()
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(4.2 * len(SETTINGS), 3.4), squeeze=False)
    for ax, (name, side, classes) in zip(axes[0], SETTINGS):
        part = frame[frame.setting == name]
        for draw, style in (("matched", "o-"), ("independent", "s--")):
            stats = part[part.draw == draw].groupby("beta").agreement.agg(["mean", "min", "max"])
            shown = stats.index.to_numpy().clip(min=0.3)  # beta = 0 drawn at 0.3 on the log axis
            ax.errorbar(shown, stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                        fmt=style, ms=3, capsize=2, label=f"{draw} labels")
        cap = part[part.draw == "independent"].cap.mean()
        ax.axhline(cap, color="grey", ls=":", lw=1, label=f"label overlap of independent batches ({cap:.2f})")
        ax.axhline(part.chance.mean(), color="black", ls=":", lw=0.8, label="chance")
        beta = chosen_beta(frame, name)
        if np.isfinite(beta):
            ax.axvline(beta, color="tab:red", lw=1, alpha=0.6, label=f"chosen beta = {beta:g}")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("beta (0 drawn at 0.3)")
        ax.set_ylabel("share of OT pairs with the same label")
        ax.set_title(f"{name}: D = {3 * side * side}, K = {classes}, n = {int(part.n.iloc[0])}")
        ax.legend(loc="center right")
    fig.text(0.01, 0.005, machine_note(), fontsize=6, color="grey")
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 6 betas")
    parser.add_argument("--n", type=int, default=1024, help="pairs per exact OT problem (default 1024)")
    parser.add_argument("--out", default=str(BENCH_DIR / "conditional_beta.csv"))
    args = parser.parse_args()
    betas, seeds = (QUICK_BETAS, (0,)) if args.quick else (BETAS, (0, 1, 2))
    rows = []
    for name, side, classes in SETTINGS:
        for draw in ("matched", "independent"):
            for seed in seeds:
                rows += [{"setting": name, **row} for row in measure(side, classes, args.n, betas, seed, draw)]
                last = rows[-1]
                print(f"{name} {draw} seed {seed}: agreement at beta {last['beta']:g} = {last['agreement']:.3f}",
                      flush=True)
    frame = write_csv(rows, args.out)
    plot(frame, args.out.replace(".csv", ".png"))
    for name, _, _ in SETTINGS:
        table = frame[frame.setting == name].groupby(["draw", "beta"]).agreement.mean().unstack(0)
        print(f"\n{name}: mean agreement (chosen beta: {chosen_beta(frame, name):g})\n{table.to_string()}")


if __name__ == "__main__":
    main()
