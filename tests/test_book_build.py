"""Tier 4: the build behind `make book`.

- A failing chapter fails the strict build.
- The execution cache is keyed on the chapter AND the liftkit source, profiles and claims it
  reads; a page that lists the other chapters' verdicts runs after them; an unchanged chapter
  is not executed again.
- A small book (two chapters at the smoke profile) builds strictly and passes the browser check,
  a rebuild with nothing changed is quick and executes nothing, the .ipynb download is the
  executed notebook, and the check catches a broken link and a missing image in it.
"""

import re
import shutil
import time
from types import SimpleNamespace

import nbformat
import pytest

from liftkit.companion.browser import check_book
from liftkit.companion.build import build_book, execute_chapters, execution_key, subset_book
from tests.conftest import ROOT, write_chapter

SMALL_BOOK = ["getting_started", "coherence"]


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
    code = build_book(book, check=False)  # the browser check is tested on the small book
    assert (code == 0) is ok
    assert (book / "_build" / "html" / "book" / "chapter.html").exists() or not ok


def test_execution_key_follows_the_chapter_and_what_it_imports(tmp_path):
    files = {
        "book/ch.md": "x = 1", "liftkit/sub/mod.py": "A = 1", "book/profiles/ch.yaml": "smoke: {}",
        "book/claims/other.yaml": "[]", "data_manifest.yaml": "{}", "README.md": "text",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    page = tmp_path / "book" / "ch.md"
    base = execution_key(tmp_path, page, {})
    for name in files:
        (tmp_path / name).write_text(files[name] + " # edited")
        changed = execution_key(tmp_path, page, {}) != base
        assert changed is (name != "README.md"), f"editing {name}: key changed = {changed}"
        (tmp_path / name).write_text(files[name])
    assert execution_key(tmp_path, page, {}) == base
    assert execution_key(tmp_path, page, {"profile": "smoke"}) != base


@pytest.mark.slow
def test_chapters_are_cached_and_the_listing_page_runs_after_them(tmp_path):
    (tmp_path / "liftkit").mkdir()
    (tmp_path / "liftkit" / "mod.py").write_text("A = 1\n")
    record = "pathlib.Path(os.environ['LIFTKIT_CLAIMS_DIR'], 'default', 'a.json')"
    alpha = write_chapter(tmp_path, "alpha", "profile = 'default'",
                          f"import os, pathlib\n{record}.parent.mkdir(parents=True)\n"
                          f"{record}.write_text('{{}}')")
    listing = write_chapter(tmp_path, "verdicts", "profile = 'default'",
                            f"import os, pathlib\nassert {record}.exists()")
    cache = tmp_path / "cache"

    def run():
        entries = execute_chapters(tmp_path, [listing, alpha], cache, jobs=2)
        return {p.stem: (e / "executed.ipynb").stat().st_mtime_ns for p, e in entries.items()}

    first = run()  # the listing page's assert fails unless alpha ran first
    assert first["verdicts"] > first["alpha"]
    assert run() == first  # nothing changed: nothing executed (a liftkit edit: see the key test)


@pytest.fixture(scope="module")
def small_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("small")
    src = subset_book(ROOT, SMALL_BOOK, out / "src")
    start = time.perf_counter()
    code = build_book(src, output=out, parameters={"profile": "smoke"})
    return SimpleNamespace(src=src, out=out, code=code, seconds=time.perf_counter() - start,
                           html=out / "_build" / "html")


@pytest.mark.slow
def test_small_book_builds_and_passes_the_browser_check(small_book):
    assert small_book.code == 0, "the small book failed to build or failed the browser check"
    for name in SMALL_BOOK:
        assert (small_book.html / "book" / f"{name}.html").exists()


@pytest.mark.slow
def test_rebuild_with_nothing_changed_executes_nothing_and_is_quick(small_book, capsys):
    notebooks = sorted((small_book.out / "_build" / ".liftkit_cache").rglob("executed.ipynb"))
    before = [p.stat().st_mtime_ns for p in notebooks]
    assert len(notebooks) == len(SMALL_BOOK)
    start = time.perf_counter()
    code = build_book(small_book.src, output=small_book.out, parameters={"profile": "smoke"},
                      check=False)
    seconds = time.perf_counter() - start
    assert code == 0
    assert [p.stat().st_mtime_ns for p in notebooks] == before
    assert "nothing changed since the last build" in capsys.readouterr().out
    assert seconds < 60, f"a rebuild with nothing changed took {seconds:.0f} s"


@pytest.mark.slow
def test_the_notebook_download_is_the_executed_notebook(small_book):
    page = small_book.html / "book" / "coherence.html"
    assert 'href="../_sources/book/coherence.ipynb"' in page.read_text()
    nb = nbformat.read(small_book.html / "_sources" / "book" / "coherence.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.cell_type == "markdown" for c in nb.cells)
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2, "the download has no outputs"
    params = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    assert 'profile = "smoke"' in params.outputs[0]["text"]


@pytest.mark.slow
def test_the_check_catches_a_broken_link_and_a_missing_image(small_book, tmp_path):
    html = shutil.copytree(small_book.html, tmp_path / "html")
    page = html / "book" / "getting_started.html"
    text = page.read_text()
    image = re.search(r'<img[^>]+src="(\.\./_images/[^"]+)"', text).group(1)
    (page.parent / image).unlink()
    broken, n = re.subn(r'(<a [^>]*href=")coherence\.html"', r'\1coherence.html#no-such-id"',
                        text, count=1)
    assert n == 1, "getting_started.html has no link to coherence.html"
    page.write_text(broken)
    problems = check_book(html, pages=[page])[0].problems
    assert f"image did not load: {image}" in problems
    assert any(p.startswith("broken link 'coherence.html#no-such-id'") and
               p.endswith("coherence.html has no id 'no-such-id'") for p in problems), problems
