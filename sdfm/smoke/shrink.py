"""A workflow config rewritten to toy scale, keeping every variant it runs.

What stays: every data set (source, conditioning, super-resolution, MeanFlow objective, PCA cost,
sharding, guidance scales, solvers, metrics), every method, SD-FM's smallest and largest epsilon
(and ``auto``), OT-FM's smallest, and every study. What shrinks: the seeds (the first), steps, batch sizes,
samples, models (narrow UNets of two levels, small MLPs), NFE lists (the first one or two), sharded
fits (at most 2 ranks, gloo on the CPU), PCA dimensions, the studies' grids; toy point sets get
fewer points; ``gpu: false``; image sets also save their sample arrays (``evaluate.save_samples``). Data paths and the Inception weights are replaced by the caller's
stand-ins (:mod:`sdfm.smoke.standins`, :mod:`sdfm.smoke.inception`).
"""

from __future__ import annotations

import copy

from sdfm.config import BUILTIN_DEFAULTS, POINT_SOURCES
from sdfm.data.toy import TOY_DATASETS

__all__ = ["shrink_config", "TOY"]

#: Toy values of the stage settings: an int caps the value, a callable maps it.
TOY = {
    "potential": {"steps": 20, "batch_size": 64, "eval_every": 10, "eval_batch": 512, "reference_batch": 256,
                  "processes": 2, "pca_dim": 16},
    "train": {"steps": 4, "batch_size": 16, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2},
    "evaluate": {"nfe": lambda nfe: list(nfe)[:2], "guidance": lambda scales: list(scales)[:2],
                 "dopri5_tol": lambda tol: max(float(tol), 1e-2)},
    "feature_net": {"epochs": 1, "batch_size": 64, "width": 8, "feature_dim": 8},
    "model": {"base_channels": 8, "channel_mults": lambda mults: list(mults)[:2], "num_res_blocks": 1,
              "hidden": 32, "depth": 2},
}
#: Samples per (solver, NFE): images (Inception at 299 px costs ~0.3 s an image on a CPU), points.
IMAGE_SAMPLES, POINT_SAMPLES = 4, 200
#: Noise paths of the curvature metric (512 Euler-32 paths through an attention UNet: minutes on a CPU;
#: 16 still took 63% of a toy ImageNet-64 evaluate job, ~18 s of its 28).
CURVATURE_PATHS = 4
TOY_POINTS = {"n_train": 1000, "n_test": 300}


def _shrunk(values: dict, stage: str) -> dict:
    out = dict(values)
    for key, toy in TOY[stage].items():
        if key in out and out[key] is not None:
            out[key] = toy(out[key]) if callable(toy) else min(out[key], toy)
    return out


def _shrink_evaluate(config: dict, name: str, entry: dict) -> None:
    """Fewer samples and NFE; image sets with fid sample at one NFE (Inception dominates their cost)."""
    kind = "points" if entry["source"] in POINT_SOURCES else "images"
    merged = {**BUILTIN_DEFAULTS["evaluate"][kind], **config.get("evaluate", {}), **entry.get("evaluate", {})}
    own = _shrunk(entry.get("evaluate", {}), "evaluate")
    own["nfe"] = list(merged["nfe"])[: 1 if "fid" in merged["metrics"] else 2]
    own["n_samples"] = min(merged["n_samples"], IMAGE_SAMPLES if kind == "images" else POINT_SAMPLES)
    if "curvature" in merged["metrics"]:
        own["curvature_samples"] = min(merged.get("curvature_samples", CURVATURE_PATHS), CURVATURE_PATHS)
    if "dopri5" in merged["solvers"]:  # an untrained field at rtol 1e-5 takes hundreds of steps
        own["dopri5_tol"] = max(float(merged["dopri5_tol"]), 1e-2)
    if kind == "images":
        own["save_samples"] = True  # the sample arrays FID tools read: a path of the job to run too
    if merged.get("inception_weights") is not None:
        own["inception_weights"] = config["_smoke_inception"][0]
        own["inception_sha256"] = config["_smoke_inception"][1]
    entry["evaluate"] = own


def _shrink_epsilons(methods: dict) -> dict:
    """SD-FM keeps its smallest and largest epsilon (the epsilon figure, hard and soft pairing) and ``auto``;
    OT-FM its smallest (the configs' grids hold exact and Sinkhorn ones between them)."""
    out = copy.deepcopy(methods)
    for method, spec in out.items():
        if "epsilons" in spec:
            numbers = sorted({float(e) for e in spec["epsilons"] if e != "auto"})
            keep = sorted({numbers[0], numbers[-1]} if method == "sdfm" else {numbers[0]}) if numbers else []
            spec["epsilons"] = keep + (["auto"] if "auto" in spec["epsilons"] else [])
        if "auto_epsilon" in spec:
            spec["auto_epsilon"] = {**spec["auto_epsilon"], "reference_batch": 64, "potential_steps": 50}
    return out


def _shrink_ot_batch(config: dict, entry: dict) -> None:
    """A data set's OT-FM plan (its or ``methods.otfm``'s ``ot_batch_size``): two toy training batches."""
    otfm = config["methods"].get("otfm", {})
    if entry.get("ot_batch_size", otfm.get("ot_batch_size")) is None:
        return
    entry["ot_batch_size"] = 2 * entry.get("train", {}).get("batch_size", config["train"].get("batch_size", 16))


def _shrink_studies(studies: dict) -> dict:
    """Each study's entry at toy scale, as its module says (``STUDY.shrink``, :mod:`sdfm.studies`); kept without one."""
    from sdfm.studies import registry

    out = copy.deepcopy(studies)
    for name, entry in out.items():
        study = registry().get(name)
        if study is not None and study.shrink is not None:
            out[name] = study.shrink(entry)
    return out


def shrink_config(config: dict, data_paths: dict[str, str], inception: tuple[str, str] | None = None) -> dict:
    """The toy-scale copy of ``config`` (a plain YAML mapping, not yet validated).

    Args:
        data_paths: ``{original options.path: stand-in folder}`` for the file-based sources.
        inception: ``(weights file, its sha256)`` replacing ``evaluate.inception_weights``.
    """
    config = copy.deepcopy(config)
    config["_smoke_inception"] = inception
    config["gpu"] = False
    config["seeds"] = sorted(config.get("seeds", [0]))[:1]
    config["methods"] = _shrink_epsilons(config.get("methods", {"fm": {}, "otfm": {}, "sdfm": {}}))
    for stage in ("potential", "train", "feature_net", "model"):
        top = config.get(stage, {})
        defaults = BUILTIN_DEFAULTS[stage] if stage not in ("model",) else {}
        # the built-in defaults are full scale: cap them at the top level, so every data set inherits toy values
        config[stage] = _shrunk({**{k: v for k, v in defaults.items() if k in TOY[stage]}, **top}, stage)
    for name, entry in config["datasets"].items():
        for stage in ("potential", "train", "feature_net", "model"):
            if stage in entry:
                entry[stage] = _shrunk(entry[stage], stage)
        _shrink_evaluate(config, name, entry)
        _shrink_ot_batch(config, entry)
        options = entry.setdefault("options", {})
        if entry["source"] in TOY_DATASETS:
            options.update({k: min(options.get(k, v), v) for k, v in TOY_POINTS.items()})
        if "path" in options:
            options["path"] = data_paths[str(options["path"])]
            if "test_fraction" in options:
                options["test_fraction"] = max(float(options["test_fraction"]), 0.25)  # enough test images
    config.pop("evaluate", None) if not config.get("evaluate") else None
    if "evaluate" in config:
        config["evaluate"] = _shrunk(config["evaluate"], "evaluate")
        config["evaluate"].pop("inception_weights", None)  # each data set carries the stand-in
        config["evaluate"].pop("inception_sha256", None)
    if "studies" in config:
        config["studies"] = _shrink_studies(config["studies"])
    del config["_smoke_inception"]
    return config
