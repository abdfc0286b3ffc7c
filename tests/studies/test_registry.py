"""The studies registry: a study is its module (+ rule file + schema keys); the CLI and the config loop over it."""

from __future__ import annotations

import pkgutil
import re
import sys
from pathlib import Path

import pytest
import yaml

import sdfm.studies
from sdfm.cli import _parser, main
from sdfm.config import DEFAULT_SCHEMA, load_config_file, validate_config
from sdfm.errors import ConfigError
from sdfm.smoke.shrink import shrink_config
from sdfm.studies import Study, registry

REPO = Path(__file__).resolve().parents[2]

DUMMY = '''
from sdfm.errors import ConfigError
from sdfm.studies import Study


def check(config, study):
    if study["size"] > len(config["datasets"]):
        raise ConfigError(f"config key 'studies.dummy_study.size': {study['size']} exceeds the data sets")


def _run(args):
    print(f"dummy study of size {args.size}")


def register(commands):
    p = commands.plain("dummy-study", _run, "a study that only prints")
    p.add_argument("--size", type=int, required=True)
    p = commands.job("dummy-study-job", _run, "the same as a job")
    p.add_argument("--size", type=int, required=True)


STUDY = Study(name="dummy_study", defaults={"size": 1}, check=check, register=register,
              resources={"dummy_study_rule": {"mem_mb": 123, "runtime": 4, "gpus": 0}},
              shrink=lambda entry: {**entry, "size": 1})
'''


@pytest.fixture
def dummy_study(tmp_path, monkeypatch):
    """A study module ``dummy_study.py`` in a folder added to the package's path (no file of sdfm/ edited)."""
    folder = tmp_path / "more_studies"
    folder.mkdir()
    (folder / "dummy_study.py").write_text(DUMMY)
    monkeypatch.setattr(sdfm.studies, "__path__", [*sdfm.studies.__path__, str(folder)])
    registry.cache_clear()
    yield
    registry.cache_clear()
    sys.modules.pop("sdfm.studies.dummy_study", None)


def _schema_with_dummy(tmp_path) -> Path:
    schema = yaml.safe_load(DEFAULT_SCHEMA.read_text())
    schema["properties"]["studies"]["properties"]["dummy_study"] = {
        "type": "object", "additionalProperties": False, "properties": {"size": {"type": "integer"}}}
    schema["properties"]["resources"]["properties"]["dummy_study_rule"] = {"$ref": "#/definitions/rule_resources"}
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    return path


def test_the_shipped_studies_are_registered_with_their_subcommands():
    studies = registry()
    assert list(studies) == ["adaptive_epsilon", "chi2_quality", "convergence", "pca"]
    commands = _parser()._subparsers._group_actions[0].choices
    for name in ("adaptive-epsilon-study", "chi2-quality-study", "convergence-study", "convergence-report", "pca-study", "pca-study-report"):
        assert name in commands
    assert studies["convergence"].defaults["fit_from"] == 64


def test_every_study_rule_can_be_given_resources_in_the_config():
    """A study's rules are keys of the schema's ``resources`` (a validated config validates again)."""
    schema = yaml.safe_load(DEFAULT_SCHEMA.read_text())
    rules = {rule for study in registry().values() for rule in study.resources}
    assert rules and rules <= set(schema["properties"]["resources"]["properties"])
    config = validate_config({**load_config_file(REPO / "config.yaml"), "studies": {}})
    assert validate_config(config)["resources"] == config["resources"]


def test_a_new_study_gets_its_subcommands_check_defaults_resources_and_toy_scale(dummy_study, tmp_path, capsys):
    assert "dummy_study" in registry()
    assert main(["dummy-study", "--size", "2"]) == 0
    assert capsys.readouterr().out == "dummy study of size 2\n"
    assert main(["dummy-study-job", "--data", "x.npz", "--dataset", "moons", "--size", "3"]) == 0
    schema = _schema_with_dummy(tmp_path)
    config = load_config_file(REPO / "config.yaml")
    checked = validate_config({**config, "studies": {"dummy_study": {}}}, schema)
    assert checked["resources"]["dummy_study_rule"] == {"mem_mb": 123, "runtime": 4, "gpus": 0}
    with pytest.raises(ConfigError, match="'studies.dummy_study.size': 99 exceeds"):
        validate_config({**config, "studies": {"dummy_study": {"size": 99}}}, schema)
    # the study's key is still the schema's to allow
    with pytest.raises(ConfigError, match="studies.dummy_study"):
        validate_config({**config, "studies": {"dummy_study": {}}})
    toy = shrink_config({**config, "studies": {"dummy_study": {"size": 3}, "unknown": {"size": 3}}}, {})
    assert toy["studies"] == {"dummy_study": {"size": 1}, "unknown": {"size": 3}}


def test_a_study_name_declared_twice_is_refused(dummy_study, tmp_path):
    folder = Path(sdfm.studies.__path__[-1])
    (folder / "dummy_twin.py").write_text(DUMMY)
    try:
        with pytest.raises(RuntimeError, match="'dummy_study' is declared twice"):
            registry()
    finally:
        sys.modules.pop("sdfm.studies.dummy_twin", None)


@pytest.mark.parametrize("module", ["cli.py", "config.py", "config_checks.py", "config_values.py", "smoke/shrink.py"])
def test_cli_config_and_smoke_name_no_study(module):
    """None of these names a study, its subcommands or its modules: they only loop over the registry."""
    text = (REPO / "sdfm" / module).read_text()
    spellings = [f"{q}{name}{q}" for name in registry() for q in ('"', "'")]
    spellings += [f"studies.{name}" for name in registry()] + ["pca-study", "convergence-", "adaptive-epsilon"]
    assert [n for n in spellings if n in text] == []
    modules = {info.name for info in pkgutil.iter_modules(sdfm.studies.__path__)}
    assert [m for m in re.findall(r"sdfm\.studies\.(\w+)", text) if m in modules] == []

