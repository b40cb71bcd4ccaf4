"""Tier 2: every executable chapter of _toc.yml runs at profile="smoke"."""

import nbformat
import pytest

from liftkit.companion.goldens import GOLDEN_PARAMETERS, toc_chapters, toc_pages
from liftkit.companion.runner import chapter_parameters, read_chapter, run_chapter

CHAPTERS = toc_chapters()


def test_toc_pages_exist_and_chapters_are_covered(root):
    pages = toc_pages(root)
    assert pages[0].stem == "intro"
    # The smoke tier is parametrised from the same list, so a chapter in _toc.yml that is
    # not collected here cannot exist; a page without code must not hide a chapter either.
    for page in pages:
        if page not in CHAPTERS:
            assert "{code-cell}" not in page.read_text(), page
    assert CHAPTERS, "the book has no executable chapter"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_declares_profile(chapter):
    params = chapter_parameters(read_chapter(chapter))
    assert "profile" in params and params["profile"].strip("'\"") == "default"


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_smoke_run(chapter, tmp_path):
    # run_chapter raises (and writes nothing) when a cell fails; what is left to check is that
    # the run went through every cell and wrote the notebook it returned.
    out = tmp_path / f"{chapter.stem}.ipynb"
    nb = run_chapter(chapter, out, GOLDEN_PARAMETERS)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "a cell did not run"
    assert out.exists() and nbformat.read(out, as_version=4).cells == nb.cells
