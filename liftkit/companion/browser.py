"""Check a built book in a real headless browser (Playwright driving the system's chromium).

Every HTML page of ``_build/html`` is opened over ``file://``, as a reader opens the book from a
USB stick, and checked for:

- **math**: MathJax typeset every math element (each holds an ``mjx-container``), reported no
  TeX error, and no raw TeX (``\\[``, ``$$``, ``\\mathrm`` ...) is left in the visible text, and no
  display equation is wider than the text column at a 1280-pixel window (it would scroll
  sideways);
- **images**: every ``<img>`` loaded (``naturalWidth > 0``);
- **links**: every link into the book names an existing file and, with ``#anchor``, an
  existing ``id`` of that page;
- **references**: no unresolved cross-reference (a ``{ref}``/``{eq}``/``{doc}`` left as text,
  or ``??``);
- **errors**: no console error, uncaught exception or failed load, and no request to the
  network.

:func:`check_book` returns one :class:`PageReport` per page; ``liftkit check-html [DIR]``
prints them as a table and exits non-zero on any problem. The browser is found by
:func:`find_browser`, which installs Debian's ``chromium`` when run as root and otherwise stops
with the command to run: the check never passes for want of a browser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

#: Executable names tried, in order.
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL_COMMAND = "sudo apt-get install -y chromium"
#: Raw TeX that must not survive typesetting (searched in the visible text outside code).
RAW_TEX = re.compile(
    r"\\\[|\\\(|\$\$|\\(?:mathrm|mathbb|mathcal|frac|sum|prod|begin|end|left|right|tag|label|"
    r"operatorname|text|hat|tilde|sqrt)\b|\$[^$\n]*[\\^_][^$\n]*\$"
)
#: Seconds to wait for MathJax and images on one page.
PAGE_TIMEOUT_S = 20

# Runs in the page after `load`: waits for MathJax and images, then collects what is checked.
_COLLECT = """async (timeout) => {
  const out = {};
  const until = (p) => Promise.race([p, new Promise(r => setTimeout(r, timeout))]);
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await until(MathJax.startup.promise);
  }
  const imgs = Array.from(document.images);
  imgs.forEach(i => { i.loading = 'eager'; });
  await until(Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
    i.addEventListener('load', r); i.addEventListener('error', r); }))));
  out.images = imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
  out.ids = Array.from(document.querySelectorAll('[id], a[name]')).map(e => e.id || e.name);
  out.links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
    href: a.href, raw: a.getAttribute('href'), text: a.textContent.trim().slice(0, 50)}));
  const maths = Array.from(document.querySelectorAll('.math'));
  out.math = maths.length;
  out.untypeset = maths.filter(m => !m.querySelector('mjx-container'))
    .map(m => m.textContent.trim().slice(0, 60));
  out.texErrors = Array.from(document.querySelectorAll('mjx-merror'))
    .map(e => e.getAttribute('data-mjx-error') || e.textContent.slice(0, 60));
  // display equations that scroll sideways in the text column at this viewport
  out.wide = Array.from(document.querySelectorAll('mjx-container[display="true"]'))
    .filter(e => e.scrollWidth > e.clientWidth + 2).map(e => e.textContent.trim().slice(0, 60));
  out.unresolved = Array.from(document.querySelectorAll('.xref'))
    .filter(e => !e.closest('a')).map(e => e.textContent.trim().slice(0, 60));
  const clone = document.body.cloneNode(true);
  clone.querySelectorAll('pre, code, script, style, textarea, mjx-container, .highlight, '
    + '.cell_output, .output, .headerlink').forEach(e => e.remove());
  out.text = clone.textContent;
  return out;
}"""


@dataclass
class PageReport:
    """What the browser found on one page; ``problems`` holds one precise message per failure."""

    page: str
    math: int = 0
    images: int = 0
    links: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the page has no problem."""
        return not self.problems


def find_browser(install: bool = True) -> str:
    """The chromium executable; installs Debian's ``chromium`` when missing and run as root.

    Raises
    ------
    RuntimeError
        When no browser is found and none can be installed; the message is the command to run.

    Examples
    --------
    >>> Path(find_browser()).name  # doctest: +SKIP
    'chromium'
    """
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("chromium is missing: installing it (apt-get install -y chromium)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"],
                    ["apt-get", "install", "-y", "chromium"]):
            if subprocess.run(cmd, env=env).returncode == 0 and shutil.which("chromium"):
                return str(shutil.which("chromium"))
    raise RuntimeError(
        f"the browser check needs chromium, and none is installed: run `{INSTALL_COMMAND}` "
        "(or put a chromium on PATH), then build again"
    )


def html_pages(html_dir: str | Path) -> list[Path]:
    """The book's pages: every ``.html`` file outside the build's ``_static``-like folders.

    Examples
    --------
    >>> html_pages("_build/html")[:1]  # doctest: +SKIP
    [PosixPath('_build/html/book/coherence.html')]
    """
    html_dir = Path(html_dir)
    return sorted(p for p in html_dir.rglob("*.html")
                  if not any(part.startswith("_") for part in p.relative_to(html_dir).parts))


def _page_problems(data: dict, console: list[str]) -> list[str]:
    """Problems of one page from what :data:`_COLLECT` returned and the console messages."""
    problems = [f"math not typeset: {t!r}" for t in data["untypeset"][:5]]
    problems += [f"TeX error in math: {e!r}" for e in data["texErrors"][:5]]
    problems += [f"raw TeX in the text: {m.group(0)!r} in "
                 f"{data['text'][max(0, m.start() - 30):m.end() + 30]!r}"
                 for m in list(RAW_TEX.finditer(data["text"]))[:5]]
    problems += [f"display equation wider than the text column (scrolls sideways): {t!r}"
                 for t in data.get("wide", [])[:5]]
    problems += [f"image did not load: {i['src']}" for i in data["images"] if not i["ok"]]
    problems += [f"unresolved reference: {t!r}" for t in data["unresolved"][:5]]
    if "??" in data["text"]:
        at = data["text"].index("??")
        problems.append(f"unresolved reference ('??'): {data['text'][max(0, at - 40):at + 10]!r}")
    return problems + console


_ID = re.compile(r"""\s(?:id|name)=["']([^"']+)["']""")


def _link_problems(page: Path, links: list[dict], ids: dict[Path, set[str]]) -> list[str]:
    """Broken links of one page: a missing file, or an anchor the target page lacks."""
    problems = []
    for link in links:
        url = urlparse(link["href"])
        if url.scheme != "file":
            continue
        target = Path(unquote(url.path))
        if not target.exists():
            problems.append(f"broken link {link['raw']!r} ({link['text']!r}): no file {target}")
            continue
        anchor = unquote(url.fragment)
        known = ids.get(target.resolve())
        if known is None and target.suffix == ".html":  # a page not opened in this check
            known = ids[target.resolve()] = set(_ID.findall(target.read_text(errors="replace")))
        if anchor and known is not None and anchor not in known:
            problems.append(f"broken link {link['raw']!r} ({link['text']!r}): "
                            f"{target.name} has no id {anchor!r}")
    return problems


_REFRESH = re.compile(r"""<meta[^>]+http-equiv=["']refresh["'][^>]*url=([^"'>\s]+)""", re.I)


def _redirect(path: Path) -> dict | None:
    """What is checked of a page that only redirects (the book's ``index.html``): its target."""
    found = _REFRESH.search(path.read_text(encoding="utf8", errors="replace")[:2000])
    if found is None:
        return None
    link = {"href": (path.parent / found.group(1)).resolve().as_uri(), "raw": found.group(1),
            "text": "redirect"}
    return {"images": [], "ids": [], "links": [link], "math": 0, "untypeset": [],
            "texErrors": [], "unresolved": [], "text": ""}


def _visit(browser, path: Path) -> tuple[dict, list[str]]:
    """Open one file in a new tab of ``browser`` (Playwright) and collect: (data, errors).

    A tab per page, so that a late event of one page is never blamed on the next.
    """
    if (data := _redirect(path)) is not None:
        return data, []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    handlers = {
        "console": lambda m: m.type == "error" and errors.append(f"console error: {m.text}"),
        "pageerror": lambda e: errors.append(f"uncaught exception: {e}"),
        "requestfailed": lambda r: errors.append(f"failed to load {r.url} ({r.failure})"),
        "request": lambda r: not r.url.startswith(("file:", "data:", "blob:", "about:"))
        and errors.append(f"requests the network: {r.url}"),
    }
    for event, handler in handlers.items():
        page.on(event, handler)
    try:
        page.goto(path.resolve().as_uri(), wait_until="load", timeout=PAGE_TIMEOUT_S * 1000)
        data = page.evaluate(_COLLECT, PAGE_TIMEOUT_S * 1000)
    finally:
        page.close()
    return data, errors


def check_book(html_dir: str | Path, pages: list[Path] | None = None) -> list[PageReport]:
    """Open every page of a built book in headless chromium and check it (see the module).

    Parameters
    ----------
    html_dir
        The built book, e.g. ``_build/html``.
    pages
        Pages to check (default: :func:`html_pages`); links are checked against these pages'
        ids.

    Returns
    -------
    list of PageReport
        One per page, in path order.

    Raises
    ------
    FileNotFoundError
        When ``html_dir`` holds no page.
    RuntimeError
        When Playwright or the browser is missing (the message says what to install).

    Examples
    --------
    >>> reports = check_book("_build/html")  # doctest: +SKIP
    >>> all(r.ok for r in reports)  # doctest: +SKIP
    True
    """
    html_dir = Path(html_dir)
    pages = html_pages(html_dir) if pages is None else [Path(p) for p in pages]
    if not pages:
        raise FileNotFoundError(f"no HTML page under {html_dir}: build the book first (make book)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError("the browser check needs Playwright: run "
                           "`.venv/bin/pip install -e '.[book]'` (or `pip install playwright`)") from None
    executable = find_browser()
    found: dict[Path, tuple[dict, list[str]]] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            for path in pages:
                found[path] = _visit(browser, path)
        finally:
            browser.close()
    ids = {p.resolve(): set(data["ids"]) for p, (data, _) in found.items()}
    return [
        PageReport(
            page=p.relative_to(html_dir).as_posix(), math=data["math"],
            images=len(data["images"]), links=len(data["links"]),
            problems=_page_problems(data, errors) + _link_problems(p, data["links"], ids),
        )
        for p, (data, errors) in found.items()
    ]


def print_report(reports: list[PageReport]) -> None:
    """Print the per-page table, then every problem, one line each.

    Examples
    --------
    >>> print_report([PageReport("index.html", math=2, images=1, links=9)])
    page        math  images  links  problems
    index.html     2       1      9  ok
    browser check: 1 page(s), every page passed
    """
    width = max([len(r.page) for r in reports] + [4])
    print(f"{'page':<{width}}  math  images  links  problems")
    for r in reports:
        status = "ok" if r.ok else str(len(r.problems))
        print(f"{r.page:<{width}}  {r.math:>4}  {r.images:>6}  {r.links:>5}  {status}")
    failed = [r for r in reports if not r.ok]
    for r in failed:
        for problem in r.problems:
            print(f"FAIL {r.page}: {problem}")
    verdict = f"{len(failed)} failed" if failed else "every page passed"
    print(f"browser check: {len(reports)} page(s), {verdict}")
