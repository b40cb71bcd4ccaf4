"""Tier 4: the strict build used by `make book` fails when a chapter raises."""

import shutil

import pytest

from liftkit.companion.build import build_book
from tests.conftest import write_chapter


def make_book(root, tmp_path, body):
    book = tmp_path / "book"
    (book / "book").mkdir(parents=True)
    shutil.copy(root / "_config.yml", book)
    shutil.copy(root / "references.bib", book)
    (book / "book" / "intro.md").write_text("# Intro\n\nA page {cite}`weinstein2025lift`.\n\n```{bibliography}\n```\n")
    write_chapter(book / "book", "chapter", "profile = 'default'", body, title="Chapter")
    (book / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n  - file: book/chapter\n"
    )
    return book


@pytest.mark.slow
@pytest.mark.parametrize(("body", "ok"), [("print('fine')", True), ("1 / 0", False)])
def test_strict_build_fails_on_a_failing_chapter(root, tmp_path, body, ok):
    book = make_book(root, tmp_path, body)
    code = build_book(book)
    assert (code == 0) is ok
    assert (book / "_build" / "html" / "book" / "chapter.html").exists() or not ok
