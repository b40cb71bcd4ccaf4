"""The browser check (headless chromium) catches what a reader would see broken.

A hand-written site has one clean page and one page with each kind of fault; every fault must
be reported with a message that names it, and the clean page must pass. The check on a real
book (two chapters at the smoke profile) is in tests/test_book_build.py.
"""

import base64

import pytest

from liftkit.companion import browser

# A 1x1 PNG, so the clean page has an image that loads.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)

CLEAN = """<!DOCTYPE html><html><head><title>clean</title></head><body>
<h1 id="top">Clean</h1><p id="para">Text with a <a href="broken.html#fault">link</a>,
an <a href="#para">anchor</a> and an <a href="https://example.org">external link</a>.</p>
<img src="dot.png" alt="dot"><pre>print("$$ \\\\mathrm{code} is not math $$")</pre>
</body></html>"""

BROKEN = """<!DOCTYPE html><html><head><title>broken</title></head><body>
<h1 id="fault">Broken</h1>
<p><a href="clean.html#nowhere">bad anchor</a> <a href="missing.html">missing page</a></p>
<img src="missing.png" alt="missing">
<p>Raw TeX left: \\(\\mathrm{mult}^{k}\\)</p>
<div class="math notranslate nohighlight">\\[ s(x) = s_0 \\]</div>
<p>See <span class="xref std std-ref">eq-lost</span> and equation (??).</p>
<mjx-container display="true" style="display:block;width:200px;overflow-x:auto">
<span style="display:inline-block;width:900px">a wide equation</span></mjx-container>
<script>console.error("boom in the console")</script>
</body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    (folder / "clean.html").write_text(CLEAN)
    (folder / "broken.html").write_text(BROKEN)
    (folder / "dot.png").write_bytes(PNG)
    (folder / "_static").mkdir()
    (folder / "_static" / "skipped.html").write_text("<p>not a page</p>")
    return folder


@pytest.fixture(scope="module")
def reports(site):
    # No skip when chromium is missing: the check must never pass for want of a browser.
    return {r.page: r for r in browser.check_book(site)}


def test_pages_are_the_html_files_outside_static_folders(site):
    assert [p.name for p in browser.html_pages(site)] == ["broken.html", "clean.html"]


def test_a_clean_page_passes(reports):
    clean = reports["clean.html"]
    assert clean.ok, clean.problems
    assert (clean.images, clean.links) == (1, 3)


@pytest.mark.parametrize("expected", [
    "broken link 'clean.html#nowhere' ('bad anchor'): clean.html has no id 'nowhere'",
    "broken link 'missing.html' ('missing page'): no file",
    "image did not load: missing.png",
    "math not typeset: '\\\\[ s(x) = s_0 \\\\]'",
    "raw TeX in the text: '\\\\('",
    "unresolved reference: 'eq-lost'",
    "unresolved reference ('??')",
    "console error: boom in the console",
    "display equation wider than the text column (scrolls sideways): 'a wide equation'",
])
def test_each_fault_is_reported_precisely(reports, expected):
    problems = reports["broken.html"].problems
    assert any(p.startswith(expected) for p in problems), (expected, problems)


def test_the_faulty_page_fails_and_the_table_says_so(reports, capsys):
    assert not reports["broken.html"].ok
    browser.print_report(list(reports.values()))
    out = capsys.readouterr().out
    assert "FAIL broken.html: image did not load: missing.png" in out
    assert "browser check: 2 page(s), 1 failed" in out


def test_no_browser_stops_with_the_command_to_run(monkeypatch):
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    monkeypatch.setattr(browser.os, "geteuid", lambda: 1000)  # not root: nothing is installed
    with pytest.raises(RuntimeError, match="apt-get install -y chromium"):
        browser.find_browser()


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="build the book first"):
        browser.check_book(tmp_path)
