"""Studies beyond the main FM / OT-FM / SD-FM grid: one module per study, found by :func:`registry`.

A study is configured by its ``studies.<name>`` key (its keys in the schema), runs through its own
rules in ``workflow/rules/studies/<name>.smk`` and writes its figure and report section under
``reports/``. Its module ``sdfm/studies/<name>.py`` holds everything else and declares it with a
module-level ``STUDY = Study(...)``: its defaults, its cross-field config check, its subcommands,
its rules' default resources and its toy scale for smoke runs. :mod:`sdfm.config` and :mod:`sdfm.cli` loop over :func:`registry`;
neither names a study.

* :mod:`sdfm.studies.convergence`: chi^2 of the potential vs solver steps, against the theory's rate;
* :mod:`sdfm.studies.pca`: potentials fitted in a k-dim PCA subspace, their pairing quality and speed;
* :mod:`sdfm.studies.adaptive_epsilon`: epsilon ``auto`` against the fixed epsilons.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Study", "check_studies", "registry", "study_resources"]


@dataclass(frozen=True)
class Study:
    """One study's declaration (the module-level ``STUDY`` of ``sdfm/studies/<name>.py``).

    Attributes:
        name: its key under ``studies:`` in the config.
        defaults: its settings unless its config entry says otherwise (the one source of them).
        check: ``check(config, settings)``, the cross-field checks the schema cannot express (``settings``:
            the entry over ``defaults``); raises :class:`sdfm.errors.ConfigError`. Called only when the
            config has the study's key.
        register: ``register(commands)`` adds its subcommands to the parser (:class:`sdfm.cli_args.Commands`).
        resources: ``{rule: {"mem_mb", "runtime", "gpus"}}``, the default resources of its rules
            (config key ``resources.<rule>`` overrides them, as for the grid's rules).
        shrink: ``shrink(entry) -> entry``, its config entry at toy scale for ``sdfm smoke-config``
            (:mod:`sdfm.smoke.shrink`), every variant kept; None: the entry runs as it is.
    """

    name: str
    defaults: dict = field(default_factory=dict)
    check: Callable[[dict, dict], None] | None = None
    register: Callable[[object], None] | None = None
    resources: dict = field(default_factory=dict)
    shrink: Callable[[dict], dict] | None = None


@functools.lru_cache(maxsize=1)
def registry() -> dict[str, Study]:
    """``{name: Study}`` of every module of this package that declares a ``STUDY``, sorted by name.

    Raises:
        RuntimeError: two modules declare the same study name, or two studies the same rule.
    """
    found: dict[str, Study] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        study = getattr(importlib.import_module(f"{__name__}.{info.name}"), "STUDY", None)
        if not isinstance(study, Study):
            continue
        if study.name in found:
            raise RuntimeError(f"study '{study.name}' is declared twice (sdfm.studies.{info.name} and another module)")
        found[study.name] = study
    rules = [rule for study in found.values() for rule in study.resources]
    if len(rules) != len(set(rules)):
        raise RuntimeError(f"two studies declare resources of the same rule: {sorted(rules)}")
    return dict(sorted(found.items()))


def check_studies(config: dict) -> None:
    """Run the check of every study the config has a ``studies.<name>`` key for (after schema validation)."""
    for name, entry in (config.get("studies") or {}).items():
        study = registry().get(name)
        if study is not None and study.check is not None:
            study.check(config, {**study.defaults, **entry})


def study_resources() -> dict[str, dict]:
    """``{rule: default resources}`` of every study's rules."""
    return {rule: dict(spec) for study in registry().values() for rule, spec in study.resources.items()}
