"""Random mutations of every shipped config never give a traceback; what validate-config accepts, Snakemake runs.

Each mutant is one shipped config (data paths pointed at small fakes of the real formats) with one
change: a key deleted, a value retyped or out of range (NaN, inf, 1e30, 2^70, -1, '1e-4', ...), a key
moved into the wrong mapping, a value wrapped in a list or a mapping, an unknown key, or a text-level
mistake in its YAML (a key line duplicated, a tab, a closing bracket or the space after a ':' dropped).
The property: ``sdfm validate-config`` (in process) either accepts the mutant or raises a one-line
ConfigError that starts with the file; any other exception is a bug. ``make test`` runs 300
mutants; the slow part runs thousands and dry-runs a sample of the accepted ones through Snakemake.
The counts (tried / accepted / refused) are printed.
"""

from __future__ import annotations

import copy
import math
import random
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO, snakemake
from sdfm.config import job_grid
from sdfm.config_files import validate_config_file
from sdfm.errors import ConfigError
from test_configs_dry_run import CONFIGS, patched

SHIPPED = [*CONFIGS, REPO / "config.yaml"]
#: Values a mutation may put anywhere: other types, out of range, non-finite, YAML 1.1 traps.
ODD_VALUES = ["abc", "", "1e-4", "5k", "auto", 0, -1, 3, 2.5, 256.0, 1.0e30, -1.0e30, 2**70, math.nan, math.inf,
              -math.inf, None, True, False, [], {}, [1, 2], [1.0, 1.0], {"x": 1}, "seeds:[0, 1]"]
MUTATIONS = ("delete", "retype", "nest_into_sibling", "move_up", "wrap_list", "wrap_dict", "unknown_key",
             "duplicate_line", "tab", "drop_bracket", "glue_colon")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Every shipped config as a dict, its data paths and Inception weights pointed at fakes."""
    configs = {}
    for path in SHIPPED:
        root = tmp_path_factory.mktemp(f"fakes-{path.stem}")
        configs[path.name] = patched(yaml.safe_load(path.read_text()), root)
    return configs


def _paths(value, prefix=()):
    """Every key path (mapping keys and list indices) under ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from _paths(item, (*prefix, index))


def _parent(config, path):
    target = config
    for part in path[:-1]:
        target = target[part]
    return target


def _applies(config: dict, kind: str, path: tuple) -> bool:
    """Whether mutation ``kind`` changes ``config`` at ``path`` (so that no mutant is the config itself)."""
    parent, last = _parent(config, path), path[-1]
    if kind == "unknown_key":
        return isinstance(parent[last], dict)
    if kind == "nest_into_sibling":
        return isinstance(parent, dict) and any(k != last and isinstance(v, dict) for k, v in parent.items())
    if kind == "move_up":
        return len(path) >= 2 and isinstance(parent, dict) and isinstance(_parent(config, path[:-1]), dict)
    return True


def _tree_mutation(config: dict, kind: str, path: tuple, value) -> None:
    """Apply a structural mutation to ``config`` in place at ``path``."""
    parent, last = _parent(config, path), path[-1]
    if kind == "delete":
        del parent[last]
    elif kind == "retype":
        parent[last] = copy.deepcopy(value)
    elif kind == "wrap_list":
        parent[last] = [parent[last]]
    elif kind == "wrap_dict":
        parent[last] = {"value": parent[last]}
    elif kind == "unknown_key":
        parent[last]["colour"] = copy.deepcopy(value)
    elif kind == "nest_into_sibling":
        sibling = next(k for k, v in parent.items() if k != last and isinstance(v, dict))
        parent[sibling][last] = parent.pop(last)
    elif kind == "move_up":
        _parent(config, path[:-1])[last] = parent.pop(last)


def _text_mutation(text: str, kind: str, rng: random.Random) -> str:
    """Apply a text-level YAML mistake at a random place."""
    lines = text.splitlines()
    if kind == "duplicate_line":
        keys = [i for i, line in enumerate(lines) if re.match(r"^\s*[\w-]+:", line)]
        i = rng.choice(keys)
        lines.insert(i + 1, lines[i])
    elif kind == "tab":
        i = rng.randrange(len(lines))
        lines[i] = "\t" + lines[i]
    elif kind == "drop_bracket":
        closers = [(i, m.start()) for i, line in enumerate(lines) for m in re.finditer(r"[\]}]", line)]
        if closers:
            i, col = rng.choice(closers)
            lines[i] = lines[i][:col] + lines[i][col + 1:]
    elif kind == "glue_colon":
        glued = [i for i, line in enumerate(lines) if re.match(r"^\s*[\w-]+: \S", line)]
        if glued:
            i = rng.choice(glued)
            lines[i] = lines[i].replace(": ", ":", 1)
    return "\n".join(lines) + "\n"


@st.composite
def mutants(draw, shipped: dict):
    """(config name, YAML text, mutation kind) of one random mutant."""
    name = draw(st.sampled_from(sorted(shipped)))
    config = copy.deepcopy(shipped[name])
    kind = draw(st.sampled_from(MUTATIONS))
    if kind in ("duplicate_line", "tab", "drop_bracket", "glue_colon"):
        rng = random.Random(draw(st.integers(0, 2**32 - 1)))
        return name, _text_mutation(yaml.safe_dump(config, default_flow_style=None, sort_keys=False), kind, rng), kind
    paths = [path for path in _paths(config) if _applies(config, kind, path)]
    path = draw(st.sampled_from(paths))
    _tree_mutation(config, kind, path, draw(st.sampled_from(ODD_VALUES)))
    return name, yaml.safe_dump(config, default_flow_style=None, sort_keys=False), kind


def _check_mutants(shipped, folder: Path, examples: int, seed_label: str) -> tuple[Counter, list[str]]:
    """Validate ``examples`` mutants; return the counts and the accepted mutants' texts."""
    counts, accepted = Counter(), []

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(mutants(shipped))
    def check(mutant):
        name, text, kind = mutant
        path = folder / f"{Path(name).stem}-{seed_label}.yaml"
        path.write_text(text)
        counts["tried"] += 1
        try:
            config = validate_config_file(path)
        except ConfigError as error:
            message = str(error)
            assert "\n" not in message and message.startswith(str(path)), message
            counts["refused"] += 1
            counts[f"refused {kind}"] += 1
            return
        assert job_grid(config)
        counts["accepted"] += 1
        counts[f"accepted {kind}"] += 1
        accepted.append(text)

    check()
    print(f"\nconfig mutants: {counts['tried']} tried, {counts['accepted']} accepted, {counts['refused']} refused; "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if " " in k))
    assert counts["accepted"] + counts["refused"] == counts["tried"]
    assert counts["accepted"] and counts["refused"]
    return counts, accepted


def test_mutants_of_shipped_configs_never_give_a_traceback(shipped, tmp_path, capsys):
    with capsys.disabled():
        _check_mutants(shipped, tmp_path, examples=300, seed_label="fast")


@pytest.mark.slow
def test_many_mutants_and_accepted_ones_dry_run(shipped, tmp_path, capsys):
    """3000 mutants; 8 of the accepted ones (seeded sample) also pass `snakemake -n`."""
    with capsys.disabled():
        _, accepted = _check_mutants(shipped, tmp_path, examples=3000, seed_label="slow")
    for index, text in enumerate(random.Random(0).sample(accepted, min(8, len(accepted)))):
        workdir = tmp_path / f"dry{index}"
        workdir.mkdir()
        (workdir / "config.yaml").write_text(text)
        result = snakemake(workdir, "--cores", "1", "-n")
        assert result.returncode == 0, (text, (result.stdout + result.stderr)[-3000:])
