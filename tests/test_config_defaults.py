"""One source per default: the schema's prose quotes the code, and the config's stage defaults are the library's.

Every ``default X`` in a description of ``workflow/schemas/config.schema.yaml`` (X a YAML flow value:
a number, true / false / null, a word, a ``[list]`` or a ``{mapping}``) is read and compared with the
value the code applies when the key is unset: :func:`sdfm.config.validate_config` and
:func:`sdfm.config.dataset_settings` on a minimal config, then the library default the job falls back
to (``SolverConfig``, ``TrainConfig``, ...), a study's ``STUDY.defaults`` or ``AUTO_EPSILON_DEFAULTS``.
A change on either side fails here.
"""

from __future__ import annotations

import re

import pytest
import yaml

from sdfm.config import DEFAULT_SCHEMA, dataset_settings, validate_config
from sdfm.config_defaults import BUILTIN_DEFAULTS, LIBRARY_SOURCES, WORKFLOW_CHOICES, library_defaults
from sdfm.fm.train import TrainConfig
from sdfm.jobs.evaluate import CURVATURE_SAMPLES
from sdfm.models import MLPVelocity, UNetVelocity
from sdfm.ot.auto_epsilon import AUTO_EPSILON_DEFAULTS
from sdfm.ot.solver_config import SolverConfig
from sdfm.studies import registry

#: A default statement: ``default``, ``Default for MeanFlow``, an optional colon, then one YAML flow value.
#: A backquoted `default` (the convergence study's solver of that name) is a name, not a statement.
CLAIM = re.compile(r"(?<![`\w])[Dd]efault(?: for MeanFlow)?:?\s+(\{[^}]*\}|\[[^\]]*\]|[^\s,;:)]+)")
#: Any mention of a default (the plural "defaults" is prose about where they live, never a value).
MENTION = re.compile(r"(?<![`\w])[Dd]efault\b(?!`)")
#: Structural keys of the schema that are not config keys.
_STRUCTURE = {"properties", "definitions", "additionalProperties", "allOf", "items", "anyOf"}

CONFIG = validate_config({
    "datasets": {"points": {"source": "moons"}, "images": {"source": "digits"},
                 "mean_flow": {"source": "moons", "train": {"objective": "meanflow"}}},
    "methods": {"otfm": {}, "sdfm": {"epsilons": [0.0]}},
})
POINTS, IMAGES, MEAN_FLOW = (dataset_settings(CONFIG, name) for name in ("points", "images", "mean_flow"))
SOLVER, TRAIN = SolverConfig(), TrainConfig(steps=1, batch_size=2)


def descriptions(node, path=()) -> list[tuple[str, str]]:
    """``(dotted config key, description)`` of every description in the schema (definitions by their name)."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                found.append((".".join(path), value))
            elif key not in ("default", "enum"):
                found += descriptions(value, path if key in _STRUCTURE or key.startswith("$") else (*path, key))
    elif isinstance(node, list):
        for item in node:
            found += descriptions(item, path)
    return found


def quoted_defaults() -> dict[str, object]:
    """``{config key: the value its description quotes}``; fails on a mention that quotes no value."""
    schema = yaml.safe_load(DEFAULT_SCHEMA.read_text())
    claims = {}
    for key, text in descriptions(schema):
        values = CLAIM.findall(text)
        assert len(values) == len(MENTION.findall(text)), f"{key}: a default that names no value: {text!r}"
        assert len(values) <= 1, f"{key}: more than one default quoted: {text!r}"
        for value in values:
            parsed = yaml.safe_load(value)
            if isinstance(parsed, str):  # YAML 1.1 reads 1e-5 as a string
                try:
                    parsed = float(parsed)
                except ValueError:
                    pass
            claims[key] = parsed
    return claims


def _solver(key):
    """A potential setting the workflow leaves unset: the job's SolverConfig default."""
    return POINTS["potential"].get(key, getattr(SOLVER, key))


def _label_dropout():
    """Unset, TrainConfig's None defers to the model: UNetVelocity's class_dropout; an MLP has none (0)."""
    assert "label_dropout" not in IMAGES["train"] and TRAIN.label_dropout is None
    assert not hasattr(MLPVelocity(2), "class_dropout")
    return library_defaults(UNetVelocity, ["class_dropout"])["class_dropout"]


def effective_defaults() -> dict[str, object]:
    """``{config key: the value the code applies when it is unset}`` for every key the schema quotes."""
    studies = registry()
    effective = {f"potential.{key}": _solver(key) for key in
                 ("eval_fraction", "eval_growth", "chi2_z", "drag_eps0", "drag_exponent", "drag_hard_below")}
    effective.update({
        "train.label_dropout": _label_dropout(),
        "train.precision": IMAGES["train"].get("precision", TRAIN.precision),
        "train.meanflow_time": MEAN_FLOW["train"]["meanflow_time"],
        "train.meanflow_time.mean": MEAN_FLOW["train"]["meanflow_time"]["mean"],
        "train.meanflow_time.std": MEAN_FLOW["train"]["meanflow_time"]["std"],
        "train.meanflow_adaptive_power": MEAN_FLOW["train"]["meanflow_adaptive_power"],
        "evaluate.dopri5_tol": POINTS["evaluate"]["dopri5_tol"],
        "evaluate.curvature_samples": POINTS["evaluate"].get("curvature_samples", CURVATURE_SAMPLES),
        "evaluate.save_samples": IMAGES["evaluate"]["save_samples"],
        "mlflow.log_model": CONFIG["mlflow"]["log_model"],
        "resources": CONFIG["resources"]["fit_potential"]["gpus"],
        "methods.otfm.ot_batch_size": POINTS["ot_batch_size"],
        **{f"methods.sdfm.auto_epsilon.{key}": value for key, value in AUTO_EPSILON_DEFAULTS.items()},
        **{f"studies.chi2_quality.{key}": value for key, value in studies["chi2_quality"].defaults.items()},
        **{f"studies.convergence.{key}": value for key, value in studies["convergence"].defaults.items()
           if key not in ("centre", "solvers")},
        **{f"studies.pca.{key}": value for key, value in studies["pca"].defaults.items()
           if key in ("steps", "batch_size", "pairing_batch", "repeats")},
    })
    assert POINTS["evaluate"]["dopri5_tol"] == IMAGES["evaluate"]["dopri5_tol"]
    return effective


def test_every_default_the_schema_quotes_is_the_one_the_code_applies():
    claims, effective = quoted_defaults(), effective_defaults()
    assert sorted(claims) == sorted(effective)  # a quote without a check, or a check whose quote went
    wrong = {key: (claims[key], effective[key]) for key in claims
             if claims[key] != effective[key] or type(claims[key]) is bool is not type(effective[key])}
    assert wrong == {}, "schema quotes (prose, code): " + repr(wrong)


def test_the_quotes_are_read_as_values():
    claims = quoted_defaults()
    assert claims["potential.eval_growth"] == 1.25 and claims["evaluate.dopri5_tol"] == 1e-5
    assert claims["studies.convergence.n_points"] == [1000, 4000] and claims["studies.chi2_quality.steps"] is None
    assert claims["train.meanflow_time"] == {"distribution": "logit_normal", "mean": 0.4, "std": 1.0}
    assert claims["methods.sdfm.auto_epsilon.criterion"] == "semidiscrete" and claims["train.precision"] == "fp32"


@pytest.mark.parametrize("text, value", [("(default 25)", 25), ("N (default [1000, 4000])", [1000, 4000]),
                                         ("x; default false; y", False), ("Default for MeanFlow 1.0", 1.0),
                                         ("(default null: the steps)", None), ("of `default`, the project's", None)])
def test_the_claim_pattern(text, value):
    found = [yaml.safe_load(v) for v in CLAIM.findall(text)]
    assert found == ([value] if "`default`" not in text else [])


def test_a_mention_without_a_value_is_refused(monkeypatch, tmp_path):
    schema = tmp_path / "schema.yaml"
    schema.write_text("properties:\n  a: {description: 'semidiscrete (default); sinkhorn'}\n")
    monkeypatch.setattr(f"{__name__}.DEFAULT_SCHEMA", schema)
    with pytest.raises(AssertionError, match="names no value"):
        quoted_defaults()


def test_stage_defaults_shared_with_the_library_are_the_library_defaults():
    """Each stage setting the library also has is its default, unless the workflow chooses otherwise on purpose."""
    for where, (owner, names) in LIBRARY_SOURCES.items():
        stage, _, kind = where.partition(".")
        ours = BUILTIN_DEFAULTS[stage][kind] if kind else BUILTIN_DEFAULTS[stage]
        assert {name: ours[name] for name in names} == library_defaults(owner, names), where
    assert BUILTIN_DEFAULTS["potential"]["steps"] == SOLVER.steps == 5000
    assert BUILTIN_DEFAULTS["potential"]["batch_size"] == SOLVER.batch_size == 1024
    assert BUILTIN_DEFAULTS["train"]["ema_decay"] == TRAIN.ema_decay
    for stage, choices in WORKFLOW_CHOICES.items():
        assert {key: BUILTIN_DEFAULTS[stage][key] for key in choices} == choices
    # the workflow's deliberate differences from TrainConfig (see WORKFLOW_CHOICES)
    assert (TRAIN.warmup_steps, TRAIN.checkpoint_every) == (0, 0)
    assert (POINTS["train"]["warmup_steps"], POINTS["train"]["checkpoint_every"]) == (100, 500)


def test_library_defaults_refuses_a_setting_without_a_default():
    assert library_defaults(UNetVelocity, ["channel_mults"]) == {"channel_mults": [1, 2]}
    with pytest.raises(KeyError, match="steps"):
        library_defaults(TrainConfig, ["steps"])
