import json
import subprocess
import sys

import pytest

from liftkit.companion.build import build_book
from liftkit.companion.cli import build_parser, main
from liftkit.companion.goldens import golden_path, regold, toc_chapters
from liftkit.companion.runner import (
    chapter_parameters,
    default_output,
    read_chapter,
    resolve_chapter,
    run_chapter,
)
from tests.conftest import write_chapter


@pytest.fixture
def tiny(tmp_path):
    return write_chapter(
        tmp_path, "tiny", "profile = 'default'\nn = 3\nscale: float = 1.5",
        "print('total', n * scale)",
    )


def test_chapter_parameters(tiny):
    assert chapter_parameters(read_chapter(tiny)) == {"profile": "'default'", "n": "3", "scale": "1.5"}


@pytest.mark.slow
def test_run_reflects_parameters_and_is_deterministic(tiny, tmp_path):
    out = tmp_path / "out.ipynb"
    nb = run_chapter(tiny, out, {"n": 10})
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "total 15.0" in text
    saved = json.loads(out.read_text())
    assert [c["id"] for c in saved["cells"]] == [f"cell-{i}" for i in range(len(saved["cells"]))]
    assert all("papermill" not in c["metadata"] and "execution" not in c["metadata"]
               for c in saved["cells"])
    assert saved["metadata"]["papermill"] == {"parameters": {"n": 10}}


def test_unknown_parameter_lists_known(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['cells'\].*n \(default 3\)"):
        run_chapter(tiny, tmp_path / "x.ipynb", {"cells": 5})
    assert not (tmp_path / "x.ipynb").exists()


@pytest.mark.slow
def test_failing_chapter_writes_nothing(tmp_path):
    bad = write_chapter(tmp_path, "bad", "x = 1", "raise ZeroDivisionError('boom')")
    with pytest.raises(RuntimeError, match="ZeroDivisionError: boom"):
        run_chapter(bad, tmp_path / "bad.ipynb")
    assert not list(tmp_path.glob("bad.ipynb*"))


def test_cli_one_line_errors(tiny, capsys):
    assert main(["run", str(tiny), "-p", "nope", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("liftkit: error:") and "\n" not in err
    assert main(["data", "fetch", "no_such_data"]) == 2
    assert "liftkit data list" in capsys.readouterr().err


def test_cli_is_installed_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "liftkit.companion.cli", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "run" in out.stdout


def test_companion_finds_the_repository_from_a_subfolder(root, monkeypatch):
    monkeypatch.delenv("LIFTKIT_ROOT", raising=False)
    monkeypatch.chdir(root / "tests")
    assert resolve_chapter("book/intro.md") == root / "book" / "intro.md"
    assert default_output("book/intro.md") == root / "runs" / "intro.ipynb"
    assert toc_chapters() == toc_chapters(root)
    first = toc_chapters()[0]
    assert golden_path(first) == root / "tests" / "notebooks" / f"{first.stem}.ipynb"
    with pytest.raises(ValueError, match=r"no chapter\(s\) \['nope'\] in _toc.yml"):
        regold(["nope"])
    with pytest.raises(FileNotFoundError, match="no chapter at book/missing.md"):
        resolve_chapter("book/missing.md")


def test_build_defaults_to_the_repository(tmp_path):
    assert build_parser().parse_args(["build"]).root is None
    with pytest.raises(FileNotFoundError, match="_config.yml is missing"):
        build_book(tmp_path)
