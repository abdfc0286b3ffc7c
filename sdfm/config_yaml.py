"""Reading a YAML config file strictly: syntax errors and duplicate keys as ``FILE:LINE:COLUMN: ...``.

PyYAML's messages name a parser state ("expected <block end>, but found '<block mapping
start>'"); a user needs the place and the fix. :func:`read_config_file` turns the mistakes
people make into one line each:

- a tab in the indentation (YAML indents with spaces only);
- a ``{`` or ``[`` never closed (the line and column of the opening bracket);
- a key glued to its value (``seeds:[0, 1]``: YAML needs a space after the ``:``);
- a line whose indentation matches no open mapping (the columns it could take);
- a key given twice in one mapping (PyYAML silently keeps the last one).

Values are read exactly as Snakemake reads them (PyYAML's safe loader), so what
``sdfm validate-config`` accepts is what the workflow sees. The line and column of every key
are kept, so that value errors can point at them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sdfm.errors import ConfigError

__all__ = ["ConfigFile", "read_config_file"]

#: A plain key glued to its value, e.g. ``seeds:[0, 1]`` or ``lr:0.1`` (not ``http://``).
_GLUED = re.compile(r"^\s*(?:-\s+)?([A-Za-z_][\w.-]*):(?=[^\s:/])(\S.*)$")
_CONFIG_KEY = re.compile(r"config key '([^']+)'")


@dataclass
class ConfigFile:
    """A config file's mapping and the 1-based (line, column) of each key path in it."""

    path: Path
    data: dict
    positions: dict[tuple, tuple[int, int]] = field(default_factory=dict)

    def where(self, key: str | tuple) -> str:
        """``FILE:LINE:COLUMN`` of ``key`` (a dotted path or a tuple), or of its deepest ancestor in the file."""
        parts = tuple(key.split(".")) if isinstance(key, str) else tuple(key)
        for depth in range(len(parts), 0, -1):
            position = self.positions.get(tuple(str(p) for p in parts[:depth]))
            if position is not None:
                return f"{self.path}:{position[0]}:{position[1]}"
        return str(self.path)

    def locate(self, error: ConfigError) -> ConfigError:
        """``error`` prefixed with the file and the line and column of the config key it names."""
        match = _CONFIG_KEY.search(str(error))
        return ConfigError(f"{self.where(match.group(1)) if match else self.path}: {error}")


def read_config_file(path: str | Path) -> ConfigFile:
    """Read the YAML mapping in ``path``.

    Raises:
        ConfigError: one line ``FILE[:LINE:COLUMN]: what is wrong; what to write instead``.
    """
    path = Path(path)
    text = _read_text(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        positions: dict[tuple, tuple[int, int]] = {}
        if node is not None:
            _walk(path, node, (), positions)
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as error:
        raise ConfigError(_syntax_message(path, text, error)) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        hint = _glued_hint(text.splitlines(), 0, len(text.splitlines()))
        raise ConfigError(f"{path}: holds {found}, not a mapping of keys; write e.g. 'datasets: ...'"
                          f"{'; ' + hint[1] if hint else ''}")
    return ConfigFile(path, data, positions)


def _read_text(path: Path) -> str:
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist: give the path of a YAML config")
    if not path.is_file():
        raise ConfigError(f"config file {path} is a folder, not a file: give the path of a YAML config")
    try:
        return path.read_text(encoding="utf-8")
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable: allow reading it (chmod u+r {path})") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: byte {error.start} is not UTF-8 text; save the config as UTF-8") from None


def _walk(path: Path, node: yaml.Node, prefix: tuple, positions: dict) -> None:
    """Record the position of every key and list item; refuse a key given twice in one mapping."""
    if isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            here = (*prefix, key)
            mark = key_node.start_mark
            if key in first:
                dotted = ".".join(str(p) for p in here)
                raise ConfigError(
                    f"{path}:{mark.line + 1}:{mark.column + 1}: config key '{dotted}' is given twice (first at "
                    f"{first[key].start_mark.line + 1}:{first[key].start_mark.column + 1}); YAML would keep only the last one: merge them or rename one")
            first[key] = key_node
            positions[here] = (mark.line + 1, mark.column + 1)
            _walk(path, value_node, here, positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            here = (*prefix, str(index))
            positions[here] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _walk(path, item, here, positions)


def _syntax_message(path: Path, text: str, error: yaml.MarkedYAMLError) -> str:
    """One line for a YAML syntax error: where, what, and the fix."""
    lines = text.splitlines()
    mark = error.problem_mark or error.context_mark
    line, column = mark.line + 1, mark.column + 1
    problem, context = error.problem or "", error.context or ""
    if "'\\t'" in problem:
        return (f"{path}:{line}:{column}: a tab character in the indentation; YAML indents with spaces only: "
                f"replace the tab with spaces")
    start = error.context_mark.line if error.context_mark else mark.line
    glued = _glued_hint(lines, max(0, min(start, mark.line) - 1), mark.line + 1)
    if glued:
        return f"{path}:{glued[0]}: {glued[1]}"
    if context.startswith("while parsing a flow") and error.context_mark:
        opener, closer = ("{", "}") if "mapping" in context else ("[", "]")
        opened = f"{error.context_mark.line + 1}:{error.context_mark.column + 1}"
        if mark.line != error.context_mark.line:
            return (f"{path}:{opened}: the '{opener}' here is never closed (YAML still looks for ',' or "
                    f"'{closer}' on line {line}); close it with '{closer}' on its line")
        return (f"{path}:{line}:{column}: inside the '{opener}' opened at column {error.context_mark.column + 1}, "
                f"expected ',' or '{closer}' here; separate its items with ', ' and close it with '{closer}'")
    if "mapping values are not allowed" in problem or "expected <block end>" in problem:
        message = _indentation_message(path, lines, mark.line)
        if message:
            return message
        if "mapping values are not allowed" in problem:
            return (f"{path}:{line}:{column}: a second ': ' on one line; quote a value that holds ': ' "
                    f"(key: 'a: b') or put the nested key on its own line")
    if context.startswith("while scanning a quoted scalar") and error.context_mark:
        opened = f"{error.context_mark.line + 1}:{error.context_mark.column + 1}"
        return f"{path}:{opened}: the quote here is never closed; close it with the same quote on its line"
    what = f"{problem} ({context})" if context else problem
    return f"{path}:{line}:{column}: not valid YAML: {what}; fix the file there"


def _glued_hint(lines: list[str], first: int, last: int) -> tuple[str, str] | None:
    """``(LINE:COLUMN, hint)`` for the first ``key:value`` without a space in ``lines[first:last]``."""
    for index in range(first, min(last, len(lines))):
        match = _GLUED.match(lines[index])
        if match:
            key, value = match.groups()
            column = match.start(1) + len(key) + 2
            return (f"{index + 1}:{column}", f"'{key}:{value}' needs a space after the ':' to be a key and a "
                                             f"value; write '{key}: {value}'")
    return None


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _indentation_message(path: Path, lines: list[str], index: int) -> str | None:
    """The line at ``index`` is indented like no mapping that is open there: say which columns are (None if it is)."""
    bad = lines[index] if index < len(lines) else ""
    key = bad.strip().split(":")[0].lstrip("- ") or bad.strip()
    column = _indent(bad)
    open_columns: list[tuple[int, int, str]] = []  # (column, line, key) of the mappings open above
    for above in range(index - 1, -1, -1):
        text = lines[above]
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        indent = _indent(text)
        if not open_columns or indent < open_columns[-1][0]:
            open_columns.append((indent, above + 1, text.strip().split(":")[0].lstrip("- ")))
        if indent == 0:
            break
    parent = open_columns[0] if open_columns else None
    opens_mapping = parent is not None and lines[parent[1] - 1].rstrip().endswith(":") and column > parent[0]
    if opens_mapping or any(c == column for c, _, _ in open_columns):
        return None
    choices = [f"{c + 1} (like '{k}', line {n})" for c, n, k in open_columns]
    listed = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
    return (f"{path}:{index + 1}:{column + 1}: misaligned indentation: '{key}' starts at column {column + 1}, "
            f"the column of no key above it; indent it with spaces to column {listed}")
