"""One command for a GPU lease: kernel ratios, pairing vs an FM step, time to chi^2 vs POT, DDP scaling.

Four sections, each a CSV ``<section>_<device type>.csv`` in ``--out-dir`` (default
``reports/bench``), drawn together in ``gpu_<device type>.png``:

* ``kernel``: one SGD step of the solver / a bare ``x @ y.T`` of the same shape (as
  ``bench_kernel.py``), over N, d and eps, for the torch path and the fused Triton path
  (``reduce_scores(fused=...)``; on CPU only the torch path). Targets: eps = 0 <= 1.3 at
  d >= 784 and <= 2 at d = 64; eps > 0 <= 2 at d >= 784 and <= 3 at d = 64.
* ``pairing``: at ImageNet-32 scale (N = 1,281,167 keys of d = 3072, the UNet of
  ``workflow/configs/imagenet32.yaml``, batch 256 and 1024) the time of one FM update (loss,
  backward, Adam) in fp32 and under ``torch.autocast(bfloat16)``, and of the pairing of a batch,
  exact float32 and screened (:class:`sdfm.ot.pairing.ScreenedPairing`), at eps = 0 and 0.1
  (relative); ``share_of_bf16_step`` is the target (< 0.10), ``identical`` the fraction of
  screened assignments equal to the float32 path's (eps = 0), ``fallback_rows`` the rows the
  screen could not verify. The keys are uniform in [-1, 1] with the nearest-neighbour potential
  ``-|y|^2 / 2`` (the pairing time does not depend on the fit; its fallback rate may).
* ``peers``: time to chi^2 <= 0.05 (one scorer: hard-assignment chi^2 on fresh samples), sdfm's
  ``fit_potential(chi2_threshold=0.05)`` (its own evaluations and stopping rule included) vs POT's
  ``solve_semidiscrete`` on torch tensors of the same device (B = 1024, rerun at growing
  ``max_iter`` within a time budget); N = 20k, d = 64 and N = 50k, d = 784 (100 clusters of
  unequal spread). Target: POT / sdfm >= 3.
* ``ddp``: per-step time of the sharded fit (``fit_potential_sharded``) on 1..K processes, one
  per GPU present (NCCL), gloo ranks on CPU.
* ``train_ddp``: per-step time of data-parallel SD-FM training (``train.processes: K``,
  ``train.precision: bf16`` on GPUs) on 1..K ranks at one global batch, and its speedup
  (``bench_train_ddp.py``).

The ``pairing`` section's FM updates run under :func:`sdfm.fm.train.precision_scope`, i.e. exactly
as ``train.precision: fp32 | tf32 | bf16`` trains (``fm_step_{fp32,tf32,bf16}_s``).

Usage (one GPU, under 8 minutes): ``python benchmarks/bench_gpu.py --device cuda``;
toy sizes on CPU (the test runs this): ``python benchmarks/bench_gpu.py --quick --device cpu``.
``--sections kernel,pairing`` runs a subset.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from bench_kernel import StepState
from bench_train_ddp import train_ddp_rows
from common import (BENCH_DIR, ROOT, bench_style, interleaved_medians, machine_note, rank_counts, save_figure,
                    spawned_step_seconds, sync, write_csv)
from sdfm.models import build_model
from sdfm.ot import chi2_unbiased, fit_potential
from sdfm.ot.kernel import augment_keys, augment_queries, reduce_scores
from sdfm.ot.pairing import ScreenedPairing
from sdfm.fm.train import precision_scope

SECTIONS = ("kernel", "pairing", "peers", "ddp", "train_ddp")
FULL = {
    "kernel": {"n": [10**5, 10**6], "d": [64, 784, 3072], "batch": [1024], "eps": [0.0, 0.1], "repeats": 5},
    "pairing": {"n": 1_281_167, "side": 32, "batches": [256, 1024], "eps": [0.0, 0.1], "repeats": 5,
                "model": None},
    "peers": {"problems": ["gauss_n20000_d64", "mixture_n50000_d784"], "pot_steps": [500, 1000, 2000, 4000, 8000],
              "pot_budget": 60.0, "eval": 1 << 20, "batch": 1024},
    "ddp": {"n": 200_000, "d": 784, "batch": 4096, "steps": (10, 30)},
    "train_ddp": {"n": 200_000, "side": 32, "batch": 256, "steps": (3, 13), "precision": "bf16", "model": None},
}
QUICK = {
    "kernel": {"n": [3000], "d": [16], "batch": [64], "eps": [0.0, 0.1], "repeats": 2},
    "pairing": {"n": 2000, "side": 4, "batches": [8], "eps": [0.0, 0.1], "repeats": 1,
                "model": {"kind": "unet", "base_channels": 4, "channel_mults": [1], "num_res_blocks": 1}},
    "peers": {"problems": ["gauss_n1000_d16"], "pot_steps": [50, 100], "pot_budget": 5.0, "eval": 1 << 14,
              "batch": 1024},
    "ddp": {"n": 2000, "d": 8, "batch": 64, "steps": (2, 6)},
    "train_ddp": {"n": 500, "side": 4, "batch": 8, "steps": (2, 12), "precision": "fp32",
                  "model": {"kind": "unet", "base_channels": 4, "channel_mults": [1], "num_res_blocks": 1}},
}
TARGET = 0.05


def _row_text(row: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


# ------------------------------------------------------------------------------------------ kernel
def kernel_rows(grid: dict, device: str, log=print) -> list[dict]:
    """SGD step / bare matmul, torch and fused paths side by side (fused on CUDA only)."""
    paths = [False, True] if torch.device(device).type == "cuda" else [False]
    rows = []
    for n in grid["n"]:
        for d in grid["d"]:
            y = torch.randn(n, d, generator=torch.Generator().manual_seed(n + d)).to(device)
            for batch in grid["batch"]:
                for eps in grid["eps"]:
                    states = [StepState(y, eps, batch, "torch", fused=f) for f in paths]
                    x = states[0].sample(batch)
                    out = torch.empty(batch, n, device=device)
                    fns = [s.step for s in states] + [lambda: torch.matmul(x, y.T, out=out)]
                    times = interleaved_medians(fns, repeats=grid["repeats"], device=device)
                    for fused, step_s in zip(paths, times[:-1]):
                        row = dict(n=n, d=d, batch=batch, epsilon=eps, path="fused" if fused else "torch",
                                   step_s=step_s, matmul_s=times[-1], ratio=step_s / times[-1],
                                   target=(1.3 if d >= 784 else 2.0) if eps == 0 else (2.0 if d >= 784 else 3.0))
                        row["target_met"] = bool(row["ratio"] <= row["target"])
                        log(_row_text(row))
                        rows.append(row)
                    del states, out
            del y
    return rows


# ----------------------------------------------------------------------------------------- pairing
def _unet(settings: dict | None, side: int, device):
    if settings is None:
        settings = yaml.safe_load(open(ROOT / "workflow" / "configs" / "imagenet32.yaml"))["model"]
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in settings.items() if k != "kind"}
    torch.manual_seed(0)
    return build_model(settings["kind"], (3, side, side), **kwargs).to(device)


def fm_step_fn(net, data: torch.Tensor, batch: int, side: int, precision: str):
    """One FM update (loss, backward, Adam) on a batch of the data, in ``train.precision`` ``precision``."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    device = data.device
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        x1 = data[torch.randint(data.shape[0], (batch,), generator=gen, device=device)].view(batch, 3, side, side)
        x0 = torch.randn(x1.shape, generator=gen, device=device)
        t = torch.rand(batch, generator=gen, device=device)
        xt = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * x1
        with precision_scope(precision, device) as autocast:
            with autocast():
                loss = (net(xt, t) - (x1 - x0)).float().square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return step


def pairing_rows(grid: dict, device: str, log=print) -> list[dict]:
    side, n = grid["side"], grid["n"]
    d = 3 * side * side
    gen = torch.Generator(device=device).manual_seed(0)
    data = torch.rand(n, d, generator=gen, device=device).mul_(2).sub_(1)
    keys = augment_keys(data, -0.5 * data.double().square().sum(dim=1))
    net = _unet(grid["model"], side, device)
    ref = torch.randn(1024, d, generator=gen, device=device)
    score_std = float((ref @ data[:4096].T).std())
    rows = []
    for batch in grid["batches"]:
        fp32_s, tf32_s, bf16_s = interleaved_medians([fm_step_fn(net, data, batch, side, p)
                                                      for p in ("fp32", "tf32", "bf16")],
                                                     repeats=grid["repeats"], device=device)
        x = torch.randn(batch, d, generator=gen, device=device)
        for eps_rel in grid["eps"]:
            eps = eps_rel * score_std
            eps_keys = keys if eps == 0 else augment_keys(data, keys[:, -1].double(), eps,
                                                          torch.full((n,), -math.log(n), dtype=torch.float64,
                                                                     device=device))
            screened = ScreenedPairing(eps_keys)
            draw = torch.Generator(device=device).manual_seed(1)
            exact = lambda: _exact_pairing(x, eps_keys, eps, draw)  # noqa: E731
            fast = lambda: screened(x, eps, draw)  # noqa: E731
            exact_s, fast_s = interleaved_medians([exact, fast], repeats=grid["repeats"], device=device)
            identical = float((exact() == fast()).double().mean()) if eps == 0 else math.nan
            for method, seconds in (("exact-fp32", exact_s), ("screened-bf16", fast_s)):
                row = dict(n=n, d=d, batch=batch, epsilon_rel=eps_rel, method=method, pairing_s=seconds,
                           fm_step_fp32_s=fp32_s, fm_step_tf32_s=tf32_s, fm_step_bf16_s=bf16_s, share_of_fp32_step=seconds / fp32_s,
                           share_of_bf16_step=seconds / bf16_s, identical=identical if method != "exact-fp32" else 1.0,
                           fallback_rows=screened.last_stats.fallback_rows if method != "exact-fp32" else 0)
                row["target_met"] = bool(row["share_of_bf16_step"] < 0.10)
                log(_row_text(row))
                rows.append(row)
            del screened, eps_keys
    return rows


def _exact_pairing(x, keys, eps, generator):
    from sdfm.ot.kernel import sample_assignment

    return sample_assignment(augment_queries(x), keys, eps, generator=generator)


# ------------------------------------------------------------------------------------------- peers
def make_problem(name: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    if name == "gauss_n1000_d16":
        return torch.randn(1000, 16, generator=torch.Generator().manual_seed(5)) * (0.5 + 1.5 * torch.rand(16))
    if name == "gauss_n20000_d64":
        return 1.5 * torch.randn(20000, 64, generator=gen)
    if name == "mixture_n50000_d784":  # 100 Gaussian clusters of unequal spread
        centres = torch.randn(100, 784, generator=gen)
        spread = 0.1 + 0.5 * torch.rand(100, 1, generator=gen)
        owner = torch.randint(100, (50000,), generator=gen)
        return centres[owner] + spread[owner] * torch.randn(50000, 784, generator=gen)
    raise ValueError(f"unknown problem {name!r}")


def _scorer(y: torch.Tensor, n_eval: int):
    x = torch.randn(n_eval, y.shape[1], generator=torch.Generator(device=y.device).manual_seed(2024), device=y.device)
    b = torch.full((y.shape[0],), 1.0 / y.shape[0], dtype=torch.float64, device=y.device)

    def score(g: torch.Tensor) -> float:
        red = reduce_scores(augment_queries(x), augment_keys(y, g.to(y.device, torch.float64)), 0.0)
        return chi2_unbiased(red.mass, red.mass_sq, n_eval, b)

    return score


def peers_rows(grid: dict, device: str, log=print) -> list[dict]:
    rows = []
    for name in grid["problems"]:
        y = make_problem(name).to(device)
        score = _scorer(y, grid["eval"])
        sync(device)
        start = time.perf_counter()
        pot = fit_potential(y, chi2_threshold=TARGET, batch_size=grid["batch"], progress=False)
        sync(device)
        sdfm_s = time.perf_counter() - start
        rows.append(dict(problem=name, method="sdfm", steps=pot.history["steps_run"], seconds=sdfm_s,
                         chi2=score(pot.g), own_estimate=pot.history["chi2"][-1]))
        log(_row_text(rows[-1]))
        spent = 0.0
        for steps in grid["pot_steps"]:
            if spent > grid["pot_budget"]:
                break
            seconds, g = _run_pot(y, steps, grid["batch"])
            spent += seconds
            rows.append(dict(problem=name, method="pot", steps=steps, seconds=seconds, chi2=score(g),
                             own_estimate=math.nan))
            log(_row_text(rows[-1]))
            if rows[-1]["chi2"] <= TARGET:
                break
    return rows


def _run_pot(y: torch.Tensor, steps: int, batch: int):
    from ot.semidiscrete import solve_semidiscrete

    gen = torch.Generator(device=y.device).manual_seed(0)
    d = y.shape[1]
    sync(y.device)
    start = time.perf_counter()
    g = solve_semidiscrete(y, lambda b: torch.randn(b, d, generator=gen, device=y.device),
                           metric=lambda x, yy: -(x @ yy.T), max_iter=steps, batch_size=batch)
    sync(y.device)
    return time.perf_counter() - start, torch.as_tensor(g).double()


def time_to_target(frame: pd.DataFrame) -> list[dict]:
    """Per problem: sdfm's and POT's first time at chi^2 <= 0.05 and their ratio (POT / sdfm)."""
    out = []
    for problem, part in frame.groupby("problem"):
        first = {}
        for method, rows in part.groupby("method"):
            hit = rows[rows["chi2"] <= TARGET]
            first[method] = float(hit["seconds"].min()) if len(hit) else math.inf
        ratio = first.get("pot", math.inf) / first.get("sdfm", math.inf) if math.isfinite(first.get("sdfm", math.inf)) \
            else math.nan
        out.append(dict(problem=problem, sdfm_s=first.get("sdfm"), pot_s=first.get("pot"), ratio=ratio))
    return out


# --------------------------------------------------------------------------------------------- ddp
def _ddp_setup(grid: dict, rank: int, world: int, device: torch.device):
    """This rank's shard of the points; returns the ``prepare`` of :func:`common.per_step_seconds`: a sharded
    fit of the given steps (one evaluation, at the end)."""
    from sdfm.ot.distributed import fit_potential_sharded, shard_bounds

    y = torch.randn(grid["n"], grid["d"], generator=torch.Generator().manual_seed(0))
    start, stop = shard_bounds(grid["n"], world, rank)
    shard = y[start:stop].to(device)

    def prepare(steps: int):
        return lambda: fit_potential_sharded(shard, steps=steps, batch_size=grid["batch"], eval_every=steps,
                                             eval_batch=1024, progress=False)

    return prepare


def ddp_rows(grid: dict, device: str, log=print) -> list[dict]:
    device_type = torch.device(device).type
    rows = []
    for world in rank_counts(device_type):
        step_s = spawned_step_seconds(_ddp_setup, world, grid, device_type)
        rows.append(dict(ranks=world, n=grid["n"], d=grid["d"], batch=grid["batch"], step_s=step_s))
        rows[-1]["speedup"] = rows[0]["step_s"] / step_s
        log(_row_text(rows[-1]))
    return rows


# -------------------------------------------------------------------------------------------- plot
def plot(frames: dict, path, device: str) -> None:
    plt = bench_style()
    fig, axes = plt.subplots(1, 5, figsize=(21, 3.8))
    if "kernel" in frames:
        for (d, eps, p), part in frames["kernel"].groupby(["d", "epsilon", "path"]):
            part = part.sort_values("n")
            axes[0].plot(part["n"], part["ratio"], "o-" if p == "torch" else "s--", label=f"d={d} eps={eps:g} {p}")
        axes[0].axhline(1.3, color="green", ls=":", lw=1)
        axes[0].axhline(3.0, color="red", ls=":", lw=1)
        axes[0].set(xscale="log", yscale="log", xlabel="N", ylabel="SGD step / matmul", title="kernel")
        axes[0].legend(fontsize=6)
    if "pairing" in frames:
        part = frames["pairing"]
        labels = [f"B={b}\n{m}\neps={e:g}" for b, m, e in zip(part["batch"], part["method"], part["epsilon_rel"])]
        axes[1].bar(range(len(part)), 100 * part["share_of_bf16_step"], color="C3")
        axes[1].axhline(10, color="green", ls=":", lw=1, label="target 10%")
        axes[1].set(xticks=range(len(part)), ylabel="pairing, % of a bf16 FM step", title="pairing vs FM step")
        axes[1].set_xticklabels(labels, fontsize=5)
        axes[1].legend()
    if "peers" in frames:
        for (problem, method), part in frames["peers"].groupby(["problem", "method"]):
            axes[2].plot(part["seconds"], part["chi2"].clip(lower=1e-4), "o-", label=f"{problem} {method}")
        axes[2].axhline(TARGET, color="gray", ls="--", lw=1)
        axes[2].set(xscale="log", yscale="log", xlabel="wall time (s)", ylabel="chi2 (common scorer)",
                    title="time to chi2 <= 0.05")
        axes[2].legend(fontsize=6)
    if "ddp" in frames:
        part = frames["ddp"]
        axes[3].plot(part["ranks"], part["step_s"] * 1e3, "o-")
        axes[3].set(xlabel="ranks (one device each)", ylabel="ms per SGD step", title="sharded fit")
    if "train_ddp" in frames:
        part = frames["train_ddp"]
        axes[4].plot(part["ranks"], part["speedup"], "o-", label="measured")
        axes[4].plot(part["ranks"], part["ranks"], ":", color="gray", label="linear")
        axes[4].set(xlabel="ranks (one device each)", ylabel="speedup of a training step",
                    title=f"data-parallel SD-FM training ({part['precision'].iloc[0]})")
        axes[4].legend()
    fig.suptitle(machine_note(device), fontsize=9)
    save_figure(fig, path)


RUNNERS = {"kernel": kernel_rows, "pairing": pairing_rows, "peers": peers_rows, "ddp": ddp_rows,
           "train_ddp": train_ddp_rows}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="toy sizes (CPU, about a minute)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset of " + ",".join(SECTIONS))
    parser.add_argument("--out-dir", default=str(BENCH_DIR))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU visible; use --quick --device cpu for the toy run")
    grid = QUICK if args.quick else FULL
    out_dir, suffix = Path(args.out_dir), device.type
    frames = {}
    began = time.perf_counter()
    for section in args.sections.split(","):
        if section not in RUNNERS:
            parser.error(f"--sections: unknown {section!r}; choose from {','.join(SECTIONS)}")
        print(f"== {section} ({time.perf_counter() - began:.0f} s so far)", flush=True)
        frames[section] = write_csv(RUNNERS[section](grid[section], str(device)), out_dir / f"{section}_{suffix}.csv")
        if section == "peers":
            summary = write_csv(time_to_target(frames[section]), out_dir / f"peers_ratio_{suffix}.csv")
            print(summary.to_string(index=False))
    plot(frames, out_dir / f"gpu_{suffix}.png", str(device))
    print(f"wrote {len(frames)} CSVs and gpu_{suffix}.png to {out_dir} in {time.perf_counter() - began:.0f} s")
    return frames


if __name__ == "__main__":
    main()
