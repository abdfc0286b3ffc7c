"""The workflow's built-in defaults: one source per setting.

A stage setting that the library also has (a field of :class:`sdfm.ot.SolverConfig` or
:class:`sdfm.fm.train.TrainConfig`, a keyword of a model's constructor or of
:func:`sdfm.metrics.train_feature_net`) takes the library's default, read here by
:func:`library_defaults`: change it there and the config follows. The settings the library has no
default for, or where the workflow chooses otherwise on purpose, are :data:`WORKFLOW_CHOICES`.
Solver, training and evaluation settings the workflow does not fill in keep the library's default
in the job (``potential.eval_fraction``: ``SolverConfig.eval_fraction``). Each study's own defaults
are its ``STUDY.defaults`` (:mod:`sdfm.studies`); ``auto_epsilon``'s are
:data:`sdfm.ot.auto_epsilon.AUTO_EPSILON_DEFAULTS`. The schema's descriptions quote these values and
``tests/test_config_defaults.py`` holds each quote to the code.
"""

from __future__ import annotations

import dataclasses
import inspect

from sdfm.fm.sampling import DOPRI5_TOL
from sdfm.fm.train import TrainConfig
from sdfm.metrics.feature_net import train_feature_net
from sdfm.models import MLPVelocity, UNetVelocity
from sdfm.ot.problem import REFERENCE_BATCH
from sdfm.ot.solver_config import SolverConfig

__all__ = ["BUILTIN_DEFAULTS", "DEFAULT_RESOURCES", "LIBRARY_SOURCES", "MEANFLOW_TRAIN_DEFAULTS", "WORKFLOW_CHOICES",
           "library_defaults"]


def library_defaults(owner, names) -> dict:
    """``{name: default}`` of the fields of dataclass ``owner`` or the parameters of callable ``owner``
    (a class: its constructor); tuples become lists, as the config spells them.

    Raises:
        KeyError: ``owner`` has no such field or parameter, or it has no default.
    """
    if dataclasses.is_dataclass(owner):
        found = {f.name: f.default for f in dataclasses.fields(owner) if f.default is not dataclasses.MISSING}
    else:
        found = {p.name: p.default for p in inspect.signature(owner).parameters.values()
                 if p.default is not inspect.Parameter.empty}
    missing = [name for name in names if name not in found]
    if missing:
        raise KeyError(f"{owner.__qualname__} has no default for {', '.join(missing)}")
    return {name: list(found[name]) if isinstance(found[name], tuple) else found[name] for name in names}


#: Which library object each stage's shared settings come from, and which settings.
LIBRARY_SOURCES = {
    "potential": (SolverConfig, ("steps", "batch_size", "eval_every", "eval_batch", "chi2_threshold")),
    "model.points": (MLPVelocity, ("hidden", "depth", "time_embed_dim")),
    "model.images": (UNetVelocity, ("base_channels", "channel_mults", "num_res_blocks", "attention_resolutions",
                                    "dropout")),
    "train": (TrainConfig, ("lr", "grad_clip", "ema_decay", "objective", "log_every")),
    "feature_net": (train_feature_net, ("batch_size", "lr", "feature_dim", "width")),
}
#: The workflow's own stage defaults: the library has none (TrainConfig's steps and batch_size,
#: train_feature_net's epochs), or the workflow differs on purpose: TrainConfig has warmup_steps 0 and
#: checkpoint_every 0 (only at the end), the workflow warms up 100 steps and keeps a checkpoint every
#: 500 so that a killed job resumes.
WORKFLOW_CHOICES = {
    "train": {"steps": 3000, "batch_size": 256, "warmup_steps": 100, "checkpoint_every": 500},
    "feature_net": {"epochs": 20},
}


def _from_library(stage: str) -> dict:
    owner, names = LIBRARY_SOURCES[stage]
    return library_defaults(owner, names)


#: Settings a dataset entry inherits unless the config's top level or the entry says otherwise, in the
#: order the stages list them (the order of the job's settings and of the run's MLflow parameters).
BUILTIN_DEFAULTS = {
    # eval_every / eval_batch None: the solver's cost-aware cadence and N-sized, pooled evaluations
    "potential": {**_from_library("potential"), "reference_batch": REFERENCE_BATCH},
    "model": {
        "points": {"kind": "mlp", **_from_library("model.points")},
        "images": {"kind": "unet", **_from_library("model.images")},
    },
    "train": {key: {**_from_library("train"), **WORKFLOW_CHOICES["train"]}[key]
              for key in ("steps", "batch_size", "lr", "warmup_steps", "grad_clip", "ema_decay", "objective",
                          "checkpoint_every", "log_every")},
    "evaluate": {
        "points": {"solvers": ["euler"], "nfe": [1, 2, 4, 8, 16], "n_samples": 2000, "metrics": ["w2", "energy"],
                   "dopri5_tol": DOPRI5_TOL},
        "images": {"solvers": ["euler"], "nfe": [1, 2, 4, 8, 16], "n_samples": 2000, "metrics": ["fd"],
                   "guidance": [1.0], "inception_weights": None, "inception_sha256": None, "save_samples": False,
                   "dopri5_tol": DOPRI5_TOL},
    },
    "feature_net": {**WORKFLOW_CHOICES["feature_net"], **_from_library("feature_net")},
}
#: Train settings of MeanFlow models (``train.objective: meanflow``) unless given: Geng et al. 2025's
#: logit-normal times (mean -0.4 in their time, data at 0, is +0.4 in this package's) and adaptive power.
#: The workflow's own choice: TrainConfig's defaults are uniform times (mean_flow_time None) and
#: adaptive_power 0 (plain squared error).
MEANFLOW_TRAIN_DEFAULTS = {"meanflow_time": {"distribution": "logit_normal", "mean": 0.4, "std": 1.0},
                           "meanflow_adaptive_power": 1.0}
#: What each rule's jobs ask the scheduler for: memory (MB), wall time (minutes), GPUs (with ``gpu: true``;
#: None: one per rank of the fit, ``potential.processes``). Config key ``resources.<rule>`` overrides them.
#: A study's rules declare theirs in its module (``Study.resources``, :mod:`sdfm.studies`).
DEFAULT_RESOURCES = {
    "prepare_data": {"mem_mb": 2000, "runtime": 30, "gpus": 0},
    "fit_potential": {"mem_mb": 4000, "runtime": 120, "gpus": None},
    "train": {"mem_mb": 4000, "runtime": 240, "gpus": 1},
    "train_feature_net": {"mem_mb": 4000, "runtime": 60, "gpus": 1},
    "fid_reference": {"mem_mb": 4000, "runtime": 60, "gpus": 1},
    "evaluate": {"mem_mb": 4000, "runtime": 120, "gpus": 1},
}
