"""Workflow configuration: schema validation, one-line errors, defaults and the job grid.

The Snakefile hands its ``config`` dict to :func:`validate_config` before any job starts;
``sdfm validate-config FILE`` does the same from the shell. No module of the library reads
``config.yaml`` itself: jobs get their settings as command-line arguments.
"""

from __future__ import annotations

import copy
import functools
import inspect
from itertools import product
from pathlib import Path

import jsonschema
import yaml

from sdfm.artifacts import epsilon_label
from sdfm.data.toy import TOY_DATASETS
from sdfm.config_checks import check_pca as _check_pca
from sdfm.config_checks import check_superres as _check_superres
from sdfm.config_checks import data_dimension  # noqa: F401 (sdfm.config.data_dimension: the PCA study's rules)
from sdfm.config_checks import setting_key as _where
from sdfm.config_defaults import BUILTIN_DEFAULTS, DEFAULT_RESOURCES, MEANFLOW_TRAIN_DEFAULTS
from sdfm.config_values import (check_data_options, check_finite, check_output_dirs, check_readable_file,
                                check_unique_seeds, integral_floats_to_int, strict_integer_validator, type_hint)
from sdfm.config_yaml import read_config_file
from sdfm.errors import ConfigError
from sdfm.studies import check_studies, study_resources

__all__ = [
    "BUILTIN_DEFAULTS",
    "DEFAULT_RESOURCES",
    "DEFAULT_SCHEMA",
    "MEANFLOW_TRAIN_DEFAULTS",
    "conditional_sdfm_supported",
    "dataset_settings",
    "job_grid",
    "layer_configs",
    "load_config_file",
    "needs_feature_net",
    "typed_overrides",
    "validate_config",
]

DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"

#: Sources of vectors (kind ``points``); every other source holds images.
POINT_SOURCES = (*TOY_DATASETS, "arrays")
#: Stages whose built-in defaults depend on the kind of data (points or images).
_KIND_STAGES = ("model", "evaluate")
_STAGES = ("potential", "model", "train", "evaluate", "feature_net")
_STAGES_PER_SOLVER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
#: Solvers that choose their own NFE: dopri5 (adaptive) and meanflow (always 1 and 2 steps).
_OWN_NFE_SOLVERS = ("dopri5", "meanflow")
_IMAGE_METRICS = ("fd", "fid", "kid", "precision", "recall")
#: Image metrics computed in the feature space of fd (FeatureNet) or fid (Inception).
_FEATURE_SPACE_METRICS = ("kid", "precision", "recall")
_MODEL_KEYS = {
    "mlp": {"kind", "hidden", "depth", "time_embed_dim"},
    "unet": {"kind", "base_channels", "channel_mults", "num_res_blocks", "attention_resolutions", "dropout"},
}


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def load_config_file(path: str | Path) -> dict:
    """Read a YAML config file strictly (:mod:`sdfm.config_yaml`: errors name the line and column)."""
    return read_config_file(path).data


def layer_configs(layers: list[dict]) -> dict:
    """Combine config layers, later ones winning: each top-level key comes whole from the last layer setting it.

    The Snakefile passes the embedded ``config.yaml``, each ``--configfile`` in order, then the
    ``--config key=value`` pairs; so ``--config 'seeds=[0]'`` changes the seeds only, and a config
    file with its own ``datasets`` runs those data sets alone (not merged with the defaults').
    """
    merged = {}
    for layer in layers:
        merged.update(copy.deepcopy(dict(layer or {})))
    return merged


def typed_overrides(values) -> dict:
    """The ``--config key=value`` pairs with the numbers, booleans and nulls inside lists and mappings typed.

    Snakemake reads a top-level value as an int, a float, a bool, else YAML with every scalar left a
    string (``seeds=[0]`` gives ``["0"]``); each such nested string is read again as a YAML scalar, and
    kept as written unless it is a number, true / false or null.
    """
    def scalar(text: str):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            return text
        return value if value is None or isinstance(value, (bool, int, float)) else text

    def typed(value, nested: bool):
        if isinstance(value, dict):
            return {key: typed(item, True) for key, item in value.items()}
        if isinstance(value, list):
            return [typed(item, True) for item in value]
        return scalar(value) if nested and isinstance(value, str) else value

    return {key: typed(value, False) for key, value in dict(values or {}).items()}


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    key = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {}))) or "none"
        where = f" under '{key}'" if err.absolute_path else ""
        return ConfigError(f"config key '{_key([*err.absolute_path, extra[0]])}' is unknown{where}: allowed keys are {allowed}")
    if err.validator == "required":
        return ConfigError(f"config key '{key}' misses a required entry: {err.message}")
    if err.validator == "enum":
        return ConfigError(f"config key '{key}': {err.instance!r} is not allowed; choose one of {err.validator_value}")
    hint = type_hint(err.instance) or "fix its value"
    if err.validator == "type":
        return ConfigError(f"config key '{key}': {err.instance!r} is not of type {err.validator_value}; {hint}")
    return ConfigError(f"config key '{key}': {err.message}; {hint}")


@functools.lru_cache(maxsize=4)
def _schema(path: str, mtime_ns: int) -> tuple[dict, object]:
    """The schema at ``path`` (read once per version of the file) and its validator; both are only read."""
    schema = yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return schema, strict_integer_validator(schema)


def validate_config(config: dict, schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    """Check ``config`` against the schema and the registries; return it with defaults filled in.

    Raises:
        ConfigError: one line naming the offending key and what to do.
    """
    config = copy.deepcopy(config or {})
    schema, validator = _schema(str(Path(schema_path).resolve()), Path(schema_path).stat().st_mtime_ns)
    check_finite(config)
    integral_floats_to_int(config, validator)
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        raise _schema_error(jsonschema.exceptions.best_match(errors))
    for key, spec in schema["properties"].items():
        if "default" in spec and key not in config:
            config[key] = copy.deepcopy(spec["default"])
    config["resources"] = {rule: {**defaults, **config["resources"].get(rule, {})}
                           for rule, defaults in {**DEFAULT_RESOURCES, **study_resources()}.items()}
    check_unique_seeds(config["seeds"], "seeds")
    check_output_dirs(config)
    check_studies(config)  # each study's own checks (sdfm.studies: STUDY.check)
    for name, entry in config["datasets"].items():
        check_data_options(f"datasets.{name}", entry["source"], entry.get("options", {}))
        merged = dataset_settings(config, name)
        model = merged["model"]
        stray = sorted(set(model) - _MODEL_KEYS[model["kind"]])
        if stray:
            raise ConfigError(
                f"config key 'datasets.{name}.model.{stray[0]}' does not apply to a {model['kind']} model; "
                f"its keys are {', '.join(sorted(_MODEL_KEYS[model['kind']]))}"
            )
        _check_image_track(config, name, merged)
        train = merged["train"]
        if train.get("batch_size", 0) % train.get("processes", 1):
            raise ConfigError(
                f"config key '{_where(config, name, 'train', 'batch_size')}': the global batch {train['batch_size']} "
                f"must be a multiple of train.processes = {train['processes']} (each rank trains on an equal share)"
            )
        _check_otfm_and_meanflow(config, name, merged)
        potential = merged["potential"]
        if potential.get("processes", 1) > 1 and potential.get("init") == "multiscale":
            raise ConfigError(
                f"config key '{_where(config, name, 'potential', 'init')}': 'multiscale' cannot be sharded over "
                f"potential.processes = {potential['processes']} ranks; use init 'gaussian' or processes 1"
            )
        if potential.get("processes", 1) > 1 and "auto" in config["methods"].get("sdfm", {}).get("epsilons", []):
            raise ConfigError(
                f"config key 'methods.sdfm.epsilons': 'auto' is chosen by the one-process potential job, and "
                f"'{name}' shards it over potential.processes = {potential['processes']} ranks; give numbers or processes 1"
            )
        _check_pca(config, name, merged)
        for solver in merged["evaluate"]["solvers"]:
            if solver in _OWN_NFE_SOLVERS:
                continue
            for nfe in merged["evaluate"]["nfe"]:
                stages = _STAGES_PER_SOLVER.get(solver, 1)
                if nfe % stages:
                    raise ConfigError(
                        f"config key 'datasets.{name}.evaluate.nfe': {nfe} is not a multiple of {stages}, "
                        f"the evaluations per step of solver '{solver}'; use multiples of {stages}"
                    )
    return config


def _check_otfm_and_meanflow(config: dict, name: str, merged: dict) -> None:
    """``methods.otfm.ot_batch_size`` a multiple of the training batch; MeanFlow keys on MeanFlow models;
    ``epsilon_reference: sq_euclidean`` without SD-FM epsilon ``auto``."""
    train, n = merged["train"], merged["ot_batch_size"]
    for method in config["datasets"][name].get("methods", []):
        if method not in config["methods"]:
            raise ConfigError(f"config key 'datasets.{name}.methods': '{method}' is not in the config's methods "
                              f"({', '.join(config['methods'])}); add it there or drop it here")
    where = f"datasets.{name}.ot_batch_size" if "ot_batch_size" in config["datasets"][name] else \
        "methods.otfm.ot_batch_size"
    if n is not None and n % train["batch_size"]:
        raise ConfigError(f"config key '{where}': {n} is not a multiple of "
                          f"{_where(config, name, 'train', 'batch_size')} = {train['batch_size']}; use "
                          f"{max(n // train['batch_size'], 1) * train['batch_size']}")
    for key in MEANFLOW_TRAIN_DEFAULTS:
        if key in train and train["objective"] != "meanflow":
            raise ConfigError(f"config key '{_where(config, name, 'train', key)}' applies to MeanFlow models; "
                              f"set train.objective 'meanflow' or drop it")
    time = train.get("meanflow_time", {})
    if time.get("distribution") == "uniform" and {"mean", "std"} & set(time):
        raise ConfigError(f"config key '{_where(config, name, 'train', 'meanflow_time')}': mean and std belong "
                          f"to distribution 'logit_normal'; drop them for 'uniform'")
    if config.get("epsilon_reference") == "sq_euclidean" and "auto" in config["methods"].get("sdfm", {}).get(
            "epsilons", []):
        raise ConfigError("config key 'epsilon_reference': SD-FM epsilon 'auto' is chosen in the inner_product "
                          "convention; use inner_product or give methods.sdfm.epsilons as numbers")


def conditional_sdfm_supported() -> bool:
    """Whether ``sdfm.ot.fit_potential`` takes a ``source`` sampler (needed by conditional SD-FM)."""
    from sdfm.ot import fit_potential

    return "source" in inspect.signature(fit_potential).parameters


def _check_image_track(config: dict, name: str, merged: dict) -> None:
    """Image metrics, Inception weights, MeanFlow sampling and conditional settings of one data set."""
    evaluate, images = merged["evaluate"], merged["kind"] == "images"
    metrics = evaluate["metrics"]
    for metric in metrics:
        if metric in _IMAGE_METRICS and not images:
            raise ConfigError(
                f"config key '{_where(config, name, 'evaluate', 'metrics')}': '{metric}' is for image data sets, "
                f"and '{name}' holds points; use w2, energy or curvature"
            )
    for metric in _FEATURE_SPACE_METRICS:
        if metric in metrics and not {"fd", "fid"} & set(metrics):
            raise ConfigError(
                f"config key '{_where(config, name, 'evaluate', 'metrics')}': '{metric}' is computed in the feature "
                f"space of 'fd' or 'fid'; add one of them"
            )
    weights = evaluate.get("inception_weights")
    if weights is not None:
        check_readable_file(_where(config, name, "evaluate", "inception_weights"), weights,
                            "point it at a local copy of torch-fidelity's weights-inception-2015-12-05-6726825d.pth")
    if "fid" in metrics and weights is None:
        raise ConfigError(
            f"config key '{_where(config, name, 'evaluate', 'inception_weights')}' is required by metric 'fid': "
            f"give a local Inception weights file, or use 'fd' (the data set's FeatureNet)"
        )
    if "meanflow" in evaluate["solvers"] and merged["train"]["objective"] != "meanflow":
        raise ConfigError(
            f"config key '{_where(config, name, 'evaluate', 'solvers')}': solver 'meanflow' needs "
            f"train.objective 'meanflow'; drop it or train a MeanFlow model"
        )
    if merged["conditional"] is not None:
        if not images and merged["options"].get("label_column") is None:
            raise ConfigError(
                f"config key 'datasets.{name}.conditional': '{name}' holds unlabelled points; conditional "
                f"generation needs labels (source arrays: options.label_column) or a labelled image set"
            )
        if "sdfm" in config["methods"] and not conditional_sdfm_supported():
            raise ConfigError(
                f"config key 'datasets.{name}.conditional': conditional SD-FM is not implemented yet "
                f"(sdfm.ot.fit_potential has no source-sampler hook); drop 'conditional' or method 'sdfm'"
            )
    _check_superres(config, name, merged)


def dataset_settings(config: dict, name: str) -> dict:
    """Merged settings of one dataset: built-in defaults < top level < the dataset's own entry.

    Besides the stages, the result holds ``ot_batch_size`` (the entry's, else ``methods.otfm``'s), ``source``,
    ``options``, ``kind`` (points or images) and
    ``conditional`` (the entry's ``{"beta": ...}`` or None), ``superres`` (``{"factor", "beta"}`` or
    None). A MeanFlow model
    (``train.objective: meanflow``) is always evaluated with solver ``meanflow`` too, and gets the
    :data:`MEANFLOW_TRAIN_DEFAULTS` it does not set (a logit-normal ``meanflow_time`` its missing mean / std).
    """
    entry = config["datasets"][name]
    kind = "points" if entry["source"] in POINT_SOURCES else "images"
    merged = {"source": entry["source"], "options": dict(entry.get("options", {})), "kind": kind,
              "conditional": copy.deepcopy(entry.get("conditional")), "superres": copy.deepcopy(entry.get("superres")),
              "ot_batch_size": entry["ot_batch_size"] if "ot_batch_size" in entry else
              config.get("methods", {}).get("otfm", {}).get("ot_batch_size")}
    for stage in _STAGES:
        base = BUILTIN_DEFAULTS[stage][kind] if stage in _KIND_STAGES else BUILTIN_DEFAULTS[stage]
        merged[stage] = copy.deepcopy({**base, **config.get(stage, {}), **entry.get(stage, {})})
    if merged["train"]["objective"] == "meanflow":  # Geng et al.'s times and weighting unless given
        time = merged["train"].get("meanflow_time")
        if time is not None and time["distribution"] == "logit_normal":
            time = {**MEANFLOW_TRAIN_DEFAULTS["meanflow_time"], **time}
        merged["train"] = {**copy.deepcopy(MEANFLOW_TRAIN_DEFAULTS), **merged["train"],
                           **({"meanflow_time": time} if time is not None else {})}
    solvers = merged["evaluate"]["solvers"]
    if merged["train"]["objective"] == "meanflow" and "meanflow" not in solvers:
        merged["evaluate"]["solvers"] = ["meanflow", *solvers]
    return merged


def needs_feature_net(config: dict, name: str) -> bool:
    """Whether the evaluation of data set ``name`` needs its FeatureNet (metric ``fd``)."""
    merged = dataset_settings(config, name)
    return merged["kind"] == "images" and "fd" in merged["evaluate"]["metrics"]


def job_grid(config: dict) -> list[dict]:
    """Every training job as ``{dataset, method, epsilon, seed}`` (epsilon as its wildcard label)."""
    jobs = []
    for dataset, (method, spec), seed in product(config["datasets"], config["methods"].items(), config["seeds"]):
        if method not in config["datasets"][dataset].get("methods", config["methods"]):  # the entry's subset
            continue
        epsilons = spec.get("epsilons", [0.0]) if method != "fm" else [0.0]
        for epsilon in dict.fromkeys(epsilon_label(e) for e in epsilons):
            jobs.append({"dataset": dataset, "method": method, "epsilon": epsilon, "seed": seed})
    return jobs
