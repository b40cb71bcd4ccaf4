"""Tier 3 support: every chapter has a golden, and the golden was made from the current code."""

import nbformat
import pytest

from liftkit.companion.goldens import GOLDEN_PARAMETERS, golden_path, toc_chapters
from liftkit.companion.runner import read_chapter

CHAPTERS = toc_chapters()


def code_cells(nb):
    return [
        c.source for c in nb.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_golden_exists_and_matches_chapter(chapter):
    golden = golden_path(chapter)
    assert golden.exists(), f"no golden for {chapter.stem}: run `make regold CHAPTERS={chapter.stem}`"
    gold = nbformat.read(golden, as_version=4)
    assert code_cells(gold) == code_cells(read_chapter(chapter)), (
        f"{chapter.name} changed since its golden was made: run `make regold CHAPTERS={chapter.stem}` "
        "and say in the commit why numbers moved"
    )
    assert gold.metadata["papermill"]["parameters"] == GOLDEN_PARAMETERS
    checked = [c for c in gold.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    assert checked and all(c.outputs for c in checked), "golden has no checked headline cell"
