"""Architecture rules of the packages, checked on the source (ast; nothing is imported): no import cycle between
modules, layers point one way (body/geometry <- icon/avatar <- flows; icon and avatar never import each other),
files and functions stay readable, and bench/ and scripts/ use the installed package, not tests/ or sys.path."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("body", "geometry", "icon", "avatar", "flows")
LAYER = {"body": 0, "geometry": 0, "icon": 1, "avatar": 1, "flows": 2}
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 100
# Functions over the limit that another change is rewriting; the lead empties this list when that change merges.
FUNCTION_LENGTH_ALLOWED: set[str] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


MODULES = {_module_name(p): p for p in _package_files()}


def _resolve(name: str) -> str | None:
    """The package module ``name`` refers to: itself, else its closest enclosing module (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str) -> set[str]:
    """Package modules ``module`` imports anywhere in its file (module level, functions, TYPE_CHECKING blocks)."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_pkg else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names]  # `from pkg import sub` imports pkg.sub (a module)
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                out.add(target)
    return out


GRAPH = {m: imports_of(m) for m in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_import_walker_sees_function_level_imports() -> None:
    assert "flows.resources" in GRAPH["flows.avatar_flow"]  # a function-level import in avatar_flow
    assert "body.model" in GRAPH["body"]  # the package's __init__ imports its modules


def test_no_import_cycle() -> None:
    assert _cycles(GRAPH) == [], "import cycles between modules (restructure so the dependency points one way)"


def test_layers_point_one_way() -> None:
    bad = []
    for module, targets in GRAPH.items():
        top = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if LAYER[other] > LAYER[top] or (LAYER[other] == LAYER[top] == 1 and other != top):
                bad.append(f"{module} imports {target}")
    assert bad == [], "lower layer imports a higher one (body/geometry <- icon/avatar <- flows)"


def test_files_are_short() -> None:
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in _package_files()}
    long = {rel: n for rel, n in sizes.items() if n > MAX_FILE_LINES}
    assert long == {}, f"files over {MAX_FILE_LINES} lines; split them by concern"


def _long_functions(path: Path, root: Path = ROOT) -> dict[str, int]:
    rel = path.relative_to(root).as_posix()
    out = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out[f"{rel}:{node.name}"] = n
    return out


def test_functions_are_short() -> None:
    long: dict[str, int] = {}
    for path in _package_files():
        long.update(_long_functions(path))
    stale = FUNCTION_LENGTH_ALLOWED - set(long)
    long = {k: v for k, v in long.items() if k not in FUNCTION_LENGTH_ALLOWED}
    assert long == {}, f"functions over {MAX_FUNCTION_LINES} lines; split them into named stage functions"
    assert not stale, f"{sorted(stale)} are short now: remove them from FUNCTION_LENGTH_ALLOWED"


def test_long_function_finder_counts_lines(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    src = tmp_path / "m.py"
    src.write_text(f"def long():\n{body}\n\n\ndef short():\n    return 1\n")
    assert _long_functions(src, tmp_path) == {"m.py:long": MAX_FUNCTION_LINES + 1}


SYS_PATH = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*[+]?=|PYTHONPATH")
TESTS_IMPORT = re.compile(r"^\s*(from\s+tests(\.|\s)|import\s+tests\b)", re.MULTILINE)


@pytest.mark.parametrize("folder", ["bench", "scripts"])
def test_bench_and_scripts_use_the_installed_package(folder: str) -> None:
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        bad += [f"{rel}: sys.path manipulation" for _ in SYS_PATH.finditer(text)]
        bad += [f"{rel}: imports tests/" for _ in TESTS_IMPORT.finditer(text)]
    assert bad == [], "bench/ and scripts/ import the installed package (move shared helpers into the package)"


@pytest.mark.parametrize("folder", ["bench", "scripts"])
def test_no_script_shadows_a_package(folder: str) -> None:
    """``python bench/x.py`` puts bench/ first on sys.path: a script named like a package would be imported instead."""
    names = {p.stem for p in (ROOT / folder).glob("*.py")}
    assert names.isdisjoint(PACKAGES), f"rename {sorted(names & set(PACKAGES))} in {folder}/"
