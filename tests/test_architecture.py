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
