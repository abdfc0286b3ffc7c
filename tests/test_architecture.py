"""The package's layering (ARCHITECTURE.md): imports only go down, and no module imports itself back.

Every ``import`` of every module under ``sdfm/`` counts, function-local ones included, since a
local import is as much a dependency as a top-level one (it only runs later). The graph is read
with :mod:`ast` from the source files, so nothing here is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "sdfm"

#: The library: no config, no DAG files, no MLflow; it never imports the application layer.
LIBRARY = ("sdfm.errors", "sdfm.io", "sdfm.progress", "sdfm.data", "sdfm.models", "sdfm.metrics", "sdfm.ot", "sdfm.fm")

#: The leaves every part may import: errors, atomic writes, progress lines.
LEAVES = ("sdfm.errors", "sdfm.io", "sdfm.progress")
#: What each part of the library may import from ``sdfm`` (besides itself): the order of the layers.
LIBRARY_MAY_IMPORT = {
    "sdfm.errors": (),
    "sdfm.io": (),
    "sdfm.progress": (),
    "sdfm.data": LEAVES,
    "sdfm.models": LEAVES,
    "sdfm.metrics": (*LEAVES, "sdfm.data", "sdfm.models"),
    "sdfm.ot": (*LEAVES, "sdfm.data"),
    "sdfm.fm": (*LEAVES, "sdfm.data", "sdfm.models", "sdfm.metrics", "sdfm.ot"),
}


def module_name(path: Path, root: Path) -> str:
    """``sdfm/ot/kernel.py`` -> ``sdfm.ot.kernel``; ``sdfm/ot/__init__.py`` -> ``sdfm.ot``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: the package's modules it imports}`` for every module under ``root`` (a package folder).

    ``from a.b import c`` is an import of module ``a.b.c`` when that module exists, else of ``a.b``.
    Relative imports are resolved against the importing module's package.
    """
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    top = root.name
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    child = f"{source}.{alias.name}"
                    targets.add(child if child in files else source)
        graph[name] = {t for t in targets if (t == top or t.startswith(top + ".")) and t in files and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]`` of the graph, or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def part_of(module: str) -> str | None:
    """The library part (``sdfm.ot``, ...) a module belongs to, or None for the application layer."""
    return next((p for p in LIBRARY if module == p or module.startswith(p + ".")), None)


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"importer -> imported"`` for every library import of the application or of a higher library part."""
    bad = []
    for module, targets in sorted(graph.items()):
        part = part_of(module)
        if part is None:
            continue
        for target in sorted(targets):
            other = part_of(target)
            if other != part and other not in LIBRARY_MAY_IMPORT[part]:
                bad.append(f"{module} -> {target}")
    return bad


GRAPH = import_graph(ROOT)


def test_the_graph_sees_function_local_imports():
    # sdfm.cli imports its jobs inside the subcommands only
    assert "sdfm.jobs.train" in GRAPH["sdfm.cli"]
    assert set(part_of(m) for m in GRAPH if part_of(m)) == set(LIBRARY)


def test_no_import_cycle():
    assert find_cycle(GRAPH) is None, " -> ".join(find_cycle(GRAPH))


def test_library_never_imports_the_application_nor_a_higher_layer():
    assert layering_violations(GRAPH) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "sdfm"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_function_local_cycle_and_a_library_import_of_the_application_are_found(tmp_path):
    root = _package(tmp_path, {
        "__init__.py": "",
        "config.py": "from sdfm.errors import ConfigError\n",
        "errors.py": "",
        "jobs/__init__.py": "",
        "jobs/a.py": "def f():\n    from sdfm.jobs import b\n",
        "jobs/b.py": "from . import a\n",
        "ot/__init__.py": "",
        "ot/kernel.py": "def g():\n    import sdfm.config\n",
        "fm/__init__.py": "",
        "fm/couplings.py": "from sdfm.ot import kernel\n",
    })
    graph = import_graph(root)
    assert graph["sdfm.jobs.a"] == {"sdfm.jobs.b"} and graph["sdfm.jobs.b"] == {"sdfm.jobs.a"}
    assert find_cycle(graph) == ["sdfm.jobs.a", "sdfm.jobs.b", "sdfm.jobs.a"]
    assert layering_violations(graph) == ["sdfm.ot.kernel -> sdfm.config"]
    graph["sdfm.ot.kernel"] = {"sdfm.fm.couplings"}  # ot below fm: a violation (and a cycle)
    assert layering_violations(graph) == ["sdfm.ot.kernel -> sdfm.fm.couplings"]
    assert find_cycle(graph) == ["sdfm.fm.couplings", "sdfm.ot.kernel", "sdfm.fm.couplings"]


#: Markdown files the workflow writes (each report and study section), cited as outputs, not as sources.
GENERATED_MARKDOWN = {"report.md", "section.md"}


def test_every_cited_markdown_file_is_in_the_repository():
    """The project stands alone: a docstring, rule or README may cite only documents it ships (or writes)."""
    repo = ROOT.parent
    files = [*ROOT.rglob("*.py"), *(repo / "benchmarks").rglob("*.py"), *(repo / "workflow").rglob("*.smk"),
             repo / "Snakefile", repo / "README.md", repo / "benchmarks" / "README.md"]
    shipped = {p.name for p in repo.rglob("*.md") if ".venv" not in p.parts} | GENERATED_MARKDOWN
    citing = sorted({f"{p.relative_to(repo)}: {name}" for p in files
                     for name in re.findall(r"[\w.-]+\.md\b", p.read_text()) if name not in shipped})
    assert citing == []


#: The size limits of ARCHITECTURE.md: a module over MODULE_LINES lines or a function over FUNCTION_LINES lines
#: carries its reason beside it, a comment ``# Long (<size>): <reason>`` directly above the ``def`` (or its
#: decorators), or ``# Long module (<size>): <reason>`` at the top level of the module.
MODULE_LINES, FUNCTION_LINES = 400, 80
_MARKER = re.compile(r"^\s*# Long( module)?\b[^:]*:\s*(.{20,})$")


def _marker(lines: list[str], index: int) -> tuple[bool, bool]:
    """``(function marker, module marker)`` in the comment block ending just above line ``index`` (0-based)."""
    found = [False, False]
    while index > 0 and lines[index - 1].lstrip().startswith("#"):
        index -= 1
        match = _MARKER.match(lines[index])
        if match:
            found[bool(match.group(1))] = True
    return found[0], found[1]


def size_problems(root: Path) -> list[str]:
    """Every module or function over its limit without a reason, and every reason on one within its limit."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        name = path.relative_to(root.parent).as_posix()
        module_marked = any(_MARKER.match(line) and _MARKER.match(line).group(1) for line in lines
                            if not line.startswith((" ", "\t")))
        if len(lines) > MODULE_LINES and not module_marked:
            problems.append(f"{name}: {len(lines)} lines, no '# Long module (...): <reason>'")
        elif module_marked and len(lines) <= MODULE_LINES:
            problems.append(f"{name}: {len(lines)} lines, a stale '# Long module' reason")
        for node in ast.walk(ast.parse(text, filename=str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size, (marked, _) = node.end_lineno - node.lineno + 1, _marker(lines, first - 1)
            if size > FUNCTION_LINES and not marked:
                problems.append(f"{name}:{node.lineno} {node.name}: {size} lines, no '# Long (...): <reason>' above it")
            elif marked and size <= FUNCTION_LINES:
                problems.append(f"{name}:{node.lineno} {node.name}: {size} lines, a stale '# Long' reason above it")
    return problems


def test_no_module_or_function_over_its_size_without_a_reason():
    assert size_problems(ROOT) == []


def test_the_size_check_finds_long_code_and_stale_reasons(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(FUNCTION_LINES))
    long_module = "".join(f"y{i} = {i}\n" for i in range(MODULE_LINES))
    root = _package(tmp_path, {
        "__init__.py": "",
        "a.py": f"def long():\n{body}\n\n# Long (81 lines): one table of constants, read as a whole\ndef ok():\n{body}",
        "b.py": "class C:\n    @staticmethod\n    def long():\n" + body.replace("    ", "        "),
        "c.py": f"# Long (2 lines): a reason for nothing at all here\ndef short():\n    pass\n",
        "d.py": long_module + "z = 0\n",
        "e.py": "# Long module (401 lines): one registry of constants, read as a whole\n" + long_module,
        "f.py": "# Long module (2 lines): a reason for nothing at all here\n",
        "g.py": f"# Long: too short\ndef long():\n{body}",
    })
    assert size_problems(root) == [
        "sdfm/a.py:1 long: 81 lines, no '# Long (...): <reason>' above it",
        "sdfm/b.py:3 long: 81 lines, no '# Long (...): <reason>' above it",
        "sdfm/c.py:2 short: 2 lines, a stale '# Long' reason above it",
        "sdfm/d.py: 401 lines, no '# Long module (...): <reason>'",
        "sdfm/f.py: 1 lines, a stale '# Long module' reason",
        "sdfm/g.py:2 long: 81 lines, no '# Long (...): <reason>' above it",
    ]
