"""Job ``pca-study``: what the PCA cost buys in speed and costs in pairing quality, as k varies.

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

The result is one CSV row per k; :mod:`sdfm.studies.pca_report` draws and describes it.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from sdfm.data import load_prepared
from sdfm.errors import ConfigError
from sdfm.io import atomic_path
from sdfm.ot import fit_potential
from sdfm.ot.kernel import augment_queries, reduce_scores
from sdfm.ot.pca import ProjectedPotential, fit_pca, pairing_quality, project_keys
from sdfm.runtime import pick_device

__all__ = ["STUDY_DEFAULTS", "pca_study"]

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
