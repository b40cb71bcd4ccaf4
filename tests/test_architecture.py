"""The package's shape, checked: no import cycles, short functions, one meaning per public name,
and no path of a particular machine anywhere in the repository."""

from __future__ import annotations

import ast
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "liftkit"
MAX_FUNCTION_LINES = 60  # body lines, docstring excluded


def _modules() -> dict[str, ast.Module]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        mods[name] = ast.parse(path.read_text(), filename=str(path))
    return mods


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> set[str]:
    """liftkit modules imported by ``name`` at any depth of its body (lazy imports count)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("liftkit"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("liftkit"))
    return {m for m in out if m in MODULES and m != name}


def _graph(skip_packages: bool) -> dict[str, set[str]]:
    # A package __init__ re-exports its modules; an edge into it is an edge into what it
    # re-exports, so cycles through __init__ files are checked via their members instead.
    inits = {n for n in MODULES if (PACKAGE.parent / n.replace(".", "/") / "__init__.py").exists()}
    graph = {}
    for name, tree in MODULES.items():
        if skip_packages and name in inits:
            continue
        graph[name] = {m for m in _imports(name, tree) if not (skip_packages and m in inits)}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _find_cycle(_graph(skip_packages=True))
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = fn.body[0]
    doc = (
        first.end_lineno - first.lineno + 1
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str) else 0
    )
    return fn.end_lineno - fn.lineno + 1 - doc


def test_functions_are_short():
    long = [
        f"{mod}.{node.name}: {_body_lines(node)} lines"
        for mod, tree in MODULES.items()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and _body_lines(node) > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them): {long}"


def test_public_names_have_one_meaning():
    defined = defaultdict(list)
    for mod, tree in MODULES.items():
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
                defined[node.name].append(mod)
    twice = {name: mods for name, mods in defined.items() if len(mods) > 1}
    assert not twice, f"public names defined in several modules (rename one): {twice}"


MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/home/[a-z]|/Users/|/root/|/opt/|[A-Z]:\\\\Users)")


@pytest.mark.parametrize("text, hit", [("see /home/alice/x", True), ("cite /work/shared/a", True),
                                       ("https://example.org/home/x", False), ("a/b/c", False)])
def test_machine_path_pattern(text, hit):
    assert bool(MACHINE_PATH.search(text)) is hit


def test_no_machine_paths_in_the_repository():
    root = PACKAGE.parent
    try:
        files = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    hits = []
    for rel in files:
        path = root / rel
        # this file spells the pattern and its examples out
        if path.suffix in {".png", ".jpg", ".svg"} or not path.is_file() or path.resolve() == Path(__file__).resolve():
            continue
        for i, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{rel}:{i}: {line.strip()[:80]}")
    assert not hits, "paths of a particular machine:\n" + "\n".join(hits)
