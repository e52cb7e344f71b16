"""The package's imports run one way, down its layers (docs/architecture.md), and a module's
layer is the first folder of its path: nothing to register when a module is added. Read from the
source with ``ast``, every import counted, those inside functions too (a lazy import is still a
dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "memorization"

# the layers, lowest first: each the folders that make it. A module may import its own layer
# and those below, never one above; the package root holds the ``python -m`` commands alone.
LAYERS = (
    ("base", ("base",)),
    ("parts", ("config", "data", "loggers", "metrics", "models", "noise")),
    ("engine", ("engine",)),
    ("jobs", ("jobs", "studies")),
    ("commands", ("cli",)),
    ("root", ("",)),
)
NAMES = tuple(name for name, _ in LAYERS)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _target(name: str, mods: dict[str, Path]) -> str | None:
    """The package module ``name`` (``memorization.a.b.c``) refers to: the longest existing."""
    if name != "memorization" and not name.startswith("memorization."):
        return None
    rel = name.removeprefix("memorization").lstrip(".")
    while rel and rel not in mods:
        rel = rel.rpartition(".")[0]
    return rel or None


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(["memorization", *pkg, *([base] if base else [])])
                names = [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = _target(name, mods)
                if target is not None and target != mod:
                    edges[mod].add(target)
    return edges


def layer(mod: str) -> int:
    """The layer of ``mod`` (``a.b.c``, relative to the package): its first folder's."""
    top = mod.split(".")[0] if "." in mod or (PACKAGE / mod).is_dir() else ""
    for n, (_, folders) in enumerate(LAYERS):
        if top in folders:
            return n
    raise AssertionError(f"memorization/{top}/ is in no layer: add the folder to LAYERS here "
                         "and to docs/architecture.md")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_reader_sees_relative_and_lazy_imports(tmp_path):
    """The reader itself, on the real package: a known lazy import (inside a function) and a
    known top-level one are edges."""
    edges = import_graph()
    assert "base.launch" in edges["jobs.validate"]  # a top-level import
    assert "jobs.folder" in edges["cli.report.data"]  # inside a function
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_import_circle_between_folders():
    """Folders, not only modules: two folders that import each other are one piece."""
    edges = import_graph()
    folders: dict[str, set[str]] = {}

    def folder(m: str) -> str:  # a package's __init__ belongs to its own folder
        if (PACKAGE / m.replace(".", "/")).is_dir():
            return m
        return m.rpartition(".")[0]

    for m, targets in edges.items():
        folders.setdefault(folder(m), set()).update(
            f for f in map(folder, targets) if f != folder(m)
            and not folder(m).startswith(f + ".") and not f.startswith(folder(m) + "."))
    for f in list(folders.values()):
        for g in f:
            folders.setdefault(g, set())
    assert cycles(folders) == []


def test_imports_only_go_down_the_layers():
    edges = import_graph()
    up = [f"{m} ({NAMES[layer(m)]}) imports {t} ({NAMES[layer(t)]})"
          for m in sorted(edges) for t in sorted(edges[m]) if layer(t) > layer(m)]
    assert up == []


def test_the_root_holds_only_commands():
    """Every module at the package root is a ``python -m memorization.<name>`` command of a few
    lines that hands over to cli/ (or a study's job)."""
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        assert 'if __name__ == "__main__":' in text and len(text.splitlines()) <= 15, path


def test_every_package_says_what_it_owns_and_its_layer():
    """Each package opens with a docstring of what it owns, with a ``Layer:`` line that names
    the layer of its folder (so the docs and this test cannot drift apart)."""
    for init in sorted(PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        lines = [x for x in doc.splitlines() if x.startswith("Layer: ")]
        assert len(doc) > 40 and lines, f"{init} opens with no docstring of what it owns"
        mod = ".".join(init.parent.relative_to(PACKAGE).parts)
        if mod:
            assert lines[0].startswith(f"Layer: {NAMES[layer(mod)]}"), (init, lines[0])


def test_the_wheel_lists_every_package():
    """pyproject.toml names the packages one by one (conf/ ships inside the package): a folder
    missing there would be missing from a wheel."""
    import tomllib

    listed = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())
    listed = set(listed["tool"]["setuptools"]["packages"]) - {"memorization.conf"}
    found = {".".join(("memorization", *p.parent.relative_to(PACKAGE).parts))
             for p in PACKAGE.rglob("__init__.py")}
    assert listed == found


def test_the_tests_mirror_the_package():
    """The test of ``memorization/<folder>/<module>.py`` is ``tests/<folder>/test_<module>.py``
    (or a test of a feature of that folder, named after it); end-to-end tests are apart, in
    tests/e2e/; the whole package's are at the top."""
    tests = PACKAGE.parent / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders - {"e2e"} <= packages, folders - packages
    modules = {p.stem for p in PACKAGE.rglob("*.py")}
    named = [t for t in tests.glob("*/test_*.py") if t.stem.removeprefix("test_") in modules]
    assert len(named) >= 20  # most test files are named after their module
