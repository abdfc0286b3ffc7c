"""YAML mistakes in a config file: one line with the file, line and column, and what to write instead."""

from __future__ import annotations

import re

import pytest

from sdfm.config_files import validate_config_file
from sdfm.config_yaml import read_config_file
from sdfm.errors import ConfigError

BASE = "datasets:\n  moons: {source: moons, options: {n_train: 200, n_test: 50}}\n"

CASES = {
    "tab": ("datasets:\n\tmoons: {source: moons}\n",
            "2:1: a tab character in the indentation; YAML indents with spaces only: replace the tab with spaces"),
    "tab_after_spaces": ("datasets:\n  moons:\n  \tsource: moons\n",
                         "3:3: a tab character in the indentation; YAML indents with spaces only: replace the tab "
                         "with spaces"),
    "unclosed_brace": ("datasets: {moons: {source: moons}\nseeds: [0]\n",
                       "1:11: the '{' here is never closed (YAML still looks for ',' or '}' on line 2); close it "
                       "with '}' on its line"),
    "unclosed_bracket": (BASE + "seeds: [0, 1\n",
                         "3:8: the '[' here is never closed (YAML still looks for ',' or ']' on line 4); close it "
                         "with ']' on its line"),
    "missing_comma": (BASE + "seeds: {a: 1 b: 2}\n",
                      "3:15: inside the '{' opened at column 8, expected ',' or '}' here; separate its items with "
                      "', ' and close it with '}'"),
    "glued_last": (BASE + "seeds:[0, 1]\n",
                   "3:7: 'seeds:[0, 1]' needs a space after the ':' to be a key and a value; write 'seeds: [0, 1]'"),
    "glued_first": ("seeds:[0, 1]\n" + BASE,
                    "1:7: 'seeds:[0, 1]' needs a space after the ':' to be a key and a value; write 'seeds: [0, 1]'"),
    "indent_less": (BASE + "train:\n    steps: 100\n  lr: 0.001\n",
                    "5:3: misaligned indentation: 'lr' starts at column 3, the column of no key above it; indent it "
                    "with spaces to column 5 (like 'steps', line 4) or 1 (like 'train', line 3)"),
    "indent_more": (BASE + "train:\n  steps: 100\n   lr: 0.001\n",
                    "5:4: misaligned indentation: 'lr' starts at column 4, the column of no key above it; indent it "
                    "with spaces to column 3 (like 'steps', line 4) or 1 (like 'train', line 3)"),
    "indent_nested": ("datasets:\n  moons:\n    source: moons\n      options: {n_train: 10}\n",
                      "4:7: misaligned indentation: 'options' starts at column 7, the column of no key above it; "
                      "indent it with spaces to column 5 (like 'source', line 3), 3 (like 'moons', line 2) or 1 "
                      "(like 'datasets', line 1)"),
    "second_colon": (BASE + "train:\n  lr: a: b\n",
                     "4:8: a second ': ' on one line; quote a value that holds ': ' (key: 'a: b') or put the nested "
                     "key on its own line"),
    "unclosed_quote": ("datasets:\n  moons: {source: 'moons}\n",
                       "2:19: the quote here is never closed; close it with the same quote on its line"),
    "duplicate_dataset": (BASE + "  moons: {source: spiral}\n",
                          "3:3: config key 'datasets.moons' is given twice (first at 2:3); YAML would keep only the "
                          "last one: merge them or rename one"),
    "duplicate_nested": (BASE + "train: {steps: 1, steps: 2}\n",
                         "3:19: config key 'train.steps' is given twice (first at 3:9); YAML would keep only the last "
                         "one: merge them or rename one"),
}


@pytest.mark.parametrize("name", CASES)
def test_yaml_mistake_is_one_line_with_line_and_column(tmp_path, name):
    text, message = CASES[name]
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        read_config_file(path)
    assert str(error.value) == f"{path}:{message}"


@pytest.mark.parametrize("text, message", [
    ("", "holds nothing, not a mapping of keys; write e.g. 'datasets: ...'"),
    ("- a\n- b\n", "holds a list, not a mapping of keys; write e.g. 'datasets: ...'"),
    ("seeds:[0, 1]\n", "holds a str, not a mapping of keys; write e.g. 'datasets: ...'; 'seeds:[0, 1]' needs a space "
                       "after the ':' to be a key and a value; write 'seeds: [0, 1]'"),
])
def test_a_file_without_a_mapping(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: {message}") + "$"):
        read_config_file(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="is a folder, not a file"):
        read_config_file(tmp_path)
    (tmp_path / "latin.yaml").write_bytes(b"datasets: {caf\xe9: {source: moons}}\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml: byte 14 is not UTF-8 text; save the config as UTF-8"):
        read_config_file(tmp_path / "latin.yaml")


def test_merge_keys_are_no_duplicates_and_keys_keep_their_place(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("datasets:\n  a: &a {source: moons}\n  b:\n    <<: *a\n    source: spiral\n")
    read = read_config_file(path)
    assert read.data["datasets"]["b"] == {"source": "spiral"}
    assert read.where("datasets.b.source") == f"{path}:5:5"
    assert read.where("datasets.b.options.n_train") == f"{path}:3:3"  # the deepest key the file has


@pytest.mark.parametrize("text, key, message", [
    (BASE + "train: {lr: 1e-4}\n", "3:9", "config key 'train.lr': '1e-4' is not of type number; PyYAML reads 1e-4 "
                                          "as a string (YAML 1.1 floats need a dot and a signed exponent); write "
                                          "1.0e-4"),
    (BASE + "train:\n  steps:100\n", "3:1", "config key 'train': 'steps:100' is not of type object; 'steps:100' "
                                            "is one string: YAML needs a space after the ':'; write 'steps: 100'"),
])
def test_value_errors_point_at_the_key(tmp_path, text, key, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        validate_config_file(path)
    assert str(error.value) == f"{path}:{key}: {message}"
