"""The README names real code: every `liftkit.…` name resolves, the package tree is complete."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
DOTTED = re.compile(r"\bliftkit(?:\.[A-Za-z_]\w*)+")


def dotted_names(text: str) -> list[str]:
    """Every ``liftkit.x.y`` inside an inline code span (fenced blocks are commands, not names)."""
    prose = FENCED.sub("", text)
    names = [name for span in INLINE.findall(prose) for name in DOTTED.findall(span)]
    return list(dict.fromkeys(names))


def resolve(name: str) -> Any:
    """Import the longest module prefix of ``name``, then look the rest up as attributes."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            missing = err.name or ""
            if module_name != missing and not module_name.startswith(missing + "."):
                raise  # the module exists but an import inside it failed
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(name)


NAMES = dotted_names(README)


def test_readme_names_code():
    assert len(NAMES) > 40  # the equation table and the sections name the package's code
    assert "liftkit.companion.runner.run_chapter" in NAMES


@pytest.mark.parametrize("name", NAMES)
def test_readme_name_resolves(name):
    try:
        resolve(name)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"README.md names `{name}`, which does not resolve ({err}): fix the README")


def tree_modules(text: str) -> set[str]:
    """Paths of the ``liftkit/`` tree in the Layout section, e.g. ``lift/theory.py``."""
    block = next(b for b in FENCED.findall(text) if "\nliftkit/\n" in b)
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []
    for line in block.splitlines()[2:-1]:
        entry = line.split()[0]
        depth = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= depth:
            stack.pop()
        path = "".join(folder for _, folder in stack) + entry
        if entry.endswith("/"):
            stack.append((depth, entry))
        else:
            paths.add(path)
    return paths


def test_readme_tree_lists_every_module():
    listed = tree_modules(README)
    package = ROOT / "liftkit"
    actual = {
        str(p.relative_to(package)) for p in package.rglob("*.py")
        if not (p.name == "__init__.py" and p.parent != package)
    }
    assert listed == actual, (
        f"README.md Layout tree is out of date: missing {sorted(actual - listed)}, "
        f"no such module {sorted(listed - actual)}"
    )


def test_dotted_names_parser():
    text = "See `liftkit.a.b(x)` and `from liftkit.c import d`.\n```\nliftkit.e.f\n```\n"
    assert dotted_names(text) == ["liftkit.a.b", "liftkit.c"]
    assert isinstance(Path(resolve("liftkit.utils.repo_root")()), Path)
