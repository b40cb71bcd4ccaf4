"""Build the book: chapters executed in parallel into a keyed cache, rendered strictly, then
checked in a headless browser.

``liftkit build`` (what ``make book`` runs) does four things:

1. **Execute** every chapter of ``_toc.yml`` that has code cells, with the package's own runner
   (:func:`liftkit.companion.runner.run_chapter`, one process per chapter, one torch thread per
   process, as many processes at once as the machine has cores). Each result is cached under
   ``_build/.liftkit_cache`` by a key that hashes the chapter's text, every ``liftkit/**/*.py``
   file, the chapter's ``book/profiles`` file, the claims registry, the data manifest and the
   parameters (:func:`execution_key`). jupyter-cache, which Jupyter Book uses on its own, hashes
   only a notebook's code cells and would miss a change to ``liftkit``; this key does not.
   Pages that read the verdicts other chapters record (:data:`LISTING_PAGES`) execute after them,
   and their key includes the other chapters' keys.
2. **Hand the executed notebooks to Jupyter Book**: the project's jupyter-cache is emptied and
   refilled with exactly these notebooks, so the Sphinx build (``execute_notebooks: cache``)
   renders them and executes nothing itself (checked after the build).
3. **Render strictly**: ``jupyter-book build -W -n --keep-going --all``; any chapter that raised
   (step 1) or any Sphinx warning fails the build.
4. **Check the HTML** in a headless browser (:mod:`liftkit.companion.browser`).

With nothing changed, step 1 takes seconds, steps 2 and 3 are skipped (:func:`render_stamp`
hashes everything the Sphinx pass reads) and the browser check runs again.
:func:`subset_book` makes a small book of a few chapters (``liftkit build --only``) for the
tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

from liftkit.companion.goldens import has_code, toc_pages
from liftkit.utils import repo_root

#: Flags of a trustworthy build (TOOLCHAIN): warnings are errors (-W), nitpicky references (-n),
#: report every problem (--keep-going), rebuild every page (--all).
BUILD_FLAGS = ("-W", "-n", "--keep-going", "--all")
#: Pages that read what the other chapters record (the claims' verdicts): executed after them.
LISTING_PAGES = ("verdicts",)
#: Where executed chapters are kept, under the build's output folder.
CACHE_DIR = Path("_build") / ".liftkit_cache"
#: Files besides the chapter whose change re-executes every chapter (globs, from the root).
KEY_GLOBS = ("liftkit/**/*.py", "book/claims/*.yaml", "book/results/**/*", "data_manifest.yaml")
#: Environment of every chapter process: one thread per process (parallelism comes from
#: processes), no progress bars in the book, no debugger warning on stderr.
CHAPTER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LIFTKIT_PROGRESS": "0",
               "PYDEVD_DISABLE_FILE_VALIDATION": "1"}


def build_command(root: str | Path, output: str | Path | None = None) -> list[str]:
    """The ``jupyter-book build`` command line that :func:`build_book` runs.

    Examples
    --------
    >>> build_command("/repo")[1:]
    ['build', '-W', '-n', '--keep-going', '--all', '/repo']
    >>> build_command("/repo", "/out")[-3:]
    ['--path-output', '/out', '/repo']
    """
    exe = Path(sys.executable).with_name("jupyter-book")
    extra = ["--path-output", str(output)] if output is not None else []
    return [str(exe), "build", *BUILD_FLAGS, *extra, str(root)]


def _sha(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def source_digest(root: str | Path) -> str:
    """A hash of every file of :data:`KEY_GLOBS` under ``root`` (names and contents).

    Examples
    --------
    >>> len(source_digest("."))
    64
    """
    root = Path(root)
    files = sorted({p for pattern in KEY_GLOBS for p in root.glob(pattern) if p.is_file()})
    return _sha(*[x for p in files for x in (p.relative_to(root).as_posix(), p.read_bytes())])


def execution_key(root: str | Path, page: str | Path, parameters: dict[str, Any],
                  digest: str | None = None, after: tuple[str, ...] = ()) -> str:
    """The cache key of one executed chapter.

    It hashes the chapter's text, its profile file (``book/profiles/<stem>.yaml``), the
    parameters, the Python version, :func:`source_digest` (the ``liftkit`` source, the claims
    registry, the data manifest) and ``after``, the keys of the chapters a listing page reads.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     page = Path(d, "p.md"); _ = page.write_text("x = 1")
    ...     a = execution_key(d, page, {}); b = execution_key(d, page, {"profile": "smoke"})
    ...     _ = page.write_text("x = 2"); c = execution_key(d, page, {})
    >>> a != b and a != c
    True
    """
    root, page = Path(root), Path(page)
    profile = root / "book" / "profiles" / f"{page.stem}.yaml"
    return _sha(
        page.read_bytes(), profile.read_bytes() if profile.exists() else b"",
        json.dumps(parameters, sort_keys=True, default=str), sys.version,
        digest if digest is not None else source_digest(root), *after,
    )


def _entry(cache: Path, root: Path, page: Path, key: str) -> Path:
    name = page.relative_to(root).with_suffix("").as_posix().replace("/", "__")
    return cache / name / key[:24]


def _run_one(root: Path, page: Path, entry: Path, parameters: dict[str, Any],
             timeout: int | None, claims_from: list[Path]) -> str | None:
    """Execute one chapter in its own process into ``entry``; the error text, or None."""
    work = entry.with_name(entry.name + ".part")
    shutil.rmtree(work, ignore_errors=True)
    (work / "claims").mkdir(parents=True)
    for source in claims_from:  # a listing page reads the other chapters' verdicts
        shutil.copytree(source, work / "claims", dirs_exist_ok=True)
    cmd = [sys.executable, "-m", "liftkit.companion.cli", "run", str(page), "-q",
           "-o", str(work / "executed.ipynb")]
    for name, value in parameters.items():
        cmd += ["-p", name, json.dumps(value)]
    if timeout:
        cmd += ["--timeout", str(timeout)]
    env = {**os.environ, **CHAPTER_ENV, "LIFTKIT_CLAIMS_DIR": str(work / "claims")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(work, ignore_errors=True)
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "WARNING |" not in ln]
        return "\n".join(lines[-15:]) or f"exit code {proc.returncode}"
    for old in entry.parent.glob("*"):  # one entry per chapter: drop stale ones
        if old != work:
            shutil.rmtree(old, ignore_errors=True)
    work.rename(entry)
    print(f"executed {page.relative_to(root)} in {time.perf_counter() - start:.0f} s", flush=True)
    return None


def default_jobs() -> int:
    """Chapters executed at once: one per core this process may use.

    Examples
    --------
    >>> default_jobs() >= 1
    True
    """
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def execute_chapters(root: str | Path, pages: list[Path], cache: str | Path,
                     parameters: dict[str, Any] | None = None, *, jobs: int | None = None,
                     timeout: int | None = None) -> dict[Path, Path]:
    """Execute ``pages`` (chapters with code) into ``cache``, reusing every unchanged result.

    Chapters run in parallel, ``jobs`` processes at once (default :func:`default_jobs`), each
    with one torch thread and its own claims folder; :data:`LISTING_PAGES` run afterwards and
    read the others' verdicts.

    Returns
    -------
    dict
        Each page mapped to its cache entry (a folder holding ``executed.ipynb``).

    Raises
    ------
    RuntimeError
        When any chapter raised; the message names each failing chapter and cell.

    Examples
    --------
    >>> execute_chapters(".", [Path("book/coherence.md")], "_build/.liftkit_cache")  # doctest: +SKIP
    executed book/coherence.md in 41 s
    """
    root, cache, parameters = Path(root), Path(cache), dict(parameters or {})
    digest = source_digest(root)
    first = [p for p in pages if p.stem not in LISTING_PAGES]
    entries = {p: _entry(cache, root, p, execution_key(root, p, parameters, digest)) for p in first}
    after = tuple(sorted(e.name for e in entries.values()))
    for page in (p for p in pages if p.stem in LISTING_PAGES):
        entries[page] = _entry(cache, root, page, execution_key(root, page, parameters, digest, after))
    order = [first, [p for p in pages if p.stem in LISTING_PAGES]]
    errors: dict[Path, str] = {}
    for wave in order:
        todo = [p for p in wave if not (entries[p] / "executed.ipynb").exists()]
        claims_from = [entries[p] / "claims" for p in first] if wave is order[1] else []
        if errors or not todo:
            continue
        print(f"executing {len(todo)} of {len(wave)} chapters ({len(wave) - len(todo)} cached)",
              flush=True)
        with ThreadPoolExecutor(max_workers=min(jobs or default_jobs(), len(todo))) as pool:
            results = pool.map(_run_one, [root] * len(todo), todo, [entries[p] for p in todo],
                               [parameters] * len(todo), [timeout] * len(todo),
                               [claims_from] * len(todo))
            errors |= {p: err for p, err in zip(todo, results, strict=True) if err}
    if errors:
        report = "\n".join(f"--- {p.relative_to(root)}:\n{err}" for p, err in errors.items())
        raise RuntimeError(f"{len(errors)} chapter(s) failed; the book is not built:\n{report}")
    return entries


def _page_notebook(page: Path, extensions: list[str]) -> Any:
    """The notebook myst-nb reads from ``page`` (its code cells are what jupyter-cache hashes)."""
    from myst_nb.core.read import read_myst_markdown_notebook, standard_nb_read
    from myst_parser.config.main import MdParserConfig

    text = page.read_text(encoding="utf8")
    if page.suffix == ".ipynb":
        return standard_nb_read(text)
    config = MdParserConfig(enable_extensions=set(extensions))
    return read_myst_markdown_notebook(text, config=config, add_source_map=True, path=str(page))


def merge_outputs(page_nb: Any, executed: Any) -> Any:
    """``page_nb`` with the outputs of ``executed`` (the same chapter run by the runner).

    A cell papermill injected (``injected-parameters``) is not part of the page: its source is
    shown as an output of the ``parameters`` cell instead, so the page says which values ran.

    Raises
    ------
    ValueError
        When the two notebooks' code cells differ (the chapter changed during the build).

    Examples
    --------
    >>> import nbformat
    >>> page = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    >>> run = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1", outputs=[
    ...     nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)])])
    >>> merge_outputs(page, run).cells[0].outputs[0]["data"]["text/plain"]
    '2'
    """
    import copy

    import nbformat

    merged = copy.deepcopy(page_nb)
    ran = [c for c in executed.cells if c.cell_type == "code"]
    injected = [c for c in ran if "injected-parameters" in c.metadata.get("tags", [])]
    ran = [c for c in ran if c not in injected]
    code = [c for c in merged.cells if c.cell_type == "code"]
    if [c.source.strip() for c in code] != [c.source.strip() for c in ran]:
        raise ValueError("the executed notebook's code cells differ from the page's: "
                         "did the chapter change during the build?")
    for cell, done in zip(code, ran, strict=True):
        cell.outputs, cell.execution_count = done.outputs, done.execution_count
        if injected and "parameters" in cell.metadata.get("tags", []):
            note = "# Values set for this build:\n" + injected[0].source.split("\n", 1)[-1]
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=note + "\n")]
    for key in ("language_info", "kernelspec"):
        if key in executed.metadata and key not in merged.metadata:
            merged.metadata[key] = executed.metadata[key]
    return merged


def fill_jupyter_cache(cache_path: str | Path, root: str | Path, pages: list[Path],
                       entries: dict[Path, Path], extensions: list[str]) -> dict[Path, Any]:
    """Empty the jupyter-cache at ``cache_path`` and fill it with the pages, executed.

    Every page of the book that myst-nb reads as a notebook gets a record: the executed one
    for chapters with code (from ``entries``), the page itself for the others, so the Sphinx
    build (``execute_notebooks: cache``) finds each and executes nothing.

    Returns
    -------
    dict
        Each page read as a notebook mapped to the notebook cached for it (with outputs).

    Examples
    --------
    >>> fill_jupyter_cache("_build/.jupyter_cache", ".", [], {}, [])  # doctest: +SKIP
    {}
    """
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import is_myst_markdown_notebook

    cache = get_cache(str(cache_path))
    cache.clear_cache()
    cache = get_cache(str(cache_path))
    cached = {}
    for page in pages:
        if page.suffix != ".ipynb" and not is_myst_markdown_notebook(page.read_text("utf8")):
            continue
        nb = _page_notebook(page, extensions)
        if page in entries:
            try:
                nb = merge_outputs(nb, nbformat.read(entries[page] / "executed.ipynb", 4))
            except ValueError as err:
                raise ValueError(f"{page.relative_to(root)}: {err}") from None
        bundle = CacheBundleIn(nb, str(page.resolve()), data={"execution_seconds": 0.0})
        cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
        cached[page] = nb
    return cached


def _book_settings(root: Path) -> tuple[list[str], int | None]:
    """The MyST extensions and the per-cell timeout of ``_config.yml``."""
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    extensions = list((config.get("parse") or {}).get("myst_enable_extensions") or [])
    timeout = (config.get("execute") or {}).get("timeout")
    return extensions, int(timeout) if timeout else None


_ROLE = re.compile(r"\{(doc|ref|eq|numref|prf:ref)\}`([^`]+)`")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s#]+\.(?:md|ipynb))(#[^)\s]*)?\)")
_LABEL = re.compile(r"^\(([\w.:-]+)\)=\s*$|^:(?:label|name):\s*(\S+)\s*$|\$\$\s*\(([\w.:-]+)\)\s*$",
                    re.M)


def _docname(page_doc: str, target: str) -> str:
    import posixpath

    target = re.sub(r"\.(md|ipynb)$", "", target)
    if target.startswith("/"):
        return target.lstrip("/")
    return posixpath.normpath(posixpath.join(posixpath.dirname(page_doc), target))


def cut_references(text: str, page_doc: str, omitted: dict[str, str], labels: set[str]) -> str:
    """``text`` with every reference into an omitted page replaced by plain text.

    ``omitted`` maps the docnames left out of a small book to their titles; ``labels`` are the
    targets those pages define. ``{doc}`` references and Markdown links become the title in
    italics; ``{ref}``, ``{eq}``, ``{numref}`` and ``{prf:ref}`` their text or target name.

    Examples
    --------
    >>> cut_references("see {doc}`moi` and {eq}`eq-a`, {eq}`eq-b`", "book/x",
    ...                {"book/moi": "MOI"}, {"eq-a"})
    'see *MOI* and eq-a, {eq}`eq-b`'
    """
    def role(match: re.Match) -> str:
        kind, content = match.groups()
        named = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, re.S)
        shown, target = (named.group(1), named.group(2)) if named else (None, content)
        if kind == "doc" and _docname(page_doc, target) in omitted:
            return f"*{shown or omitted[_docname(page_doc, target)]}*"
        return (shown or target) if kind != "doc" and target in labels else match.group(0)

    def link(match: re.Match) -> str:
        return match.group(1) if _docname(page_doc, match.group(2)) in omitted else match.group(0)

    return _LINK.sub(link, _ROLE.sub(role, text))


def _prune_toc(node: Any, omitted: set[str]) -> Any:
    """The ``_toc.yml`` tree without the entries of ``omitted`` (and lists left empty)."""
    if isinstance(node, list):
        kept = [_prune_toc(item, omitted) for item in node]
        return [item for item in kept if item is not None]
    if isinstance(node, dict):
        if node.get("file") in omitted or node.get("file", "").removesuffix(".md") in omitted:
            return None
        pruned = {k: _prune_toc(v, omitted) if isinstance(v, list | dict) else v
                  for k, v in node.items()}
        for key in ("chapters", "sections", "parts"):
            if key in pruned and not pruned[key]:
                del pruned[key]
        return pruned if set(pruned) - {"caption", "numbered"} else None
    return node


def subset_book(root: str | Path, keep: list[str], dest: str | Path) -> Path:
    """Copy the book under ``root`` into ``dest`` with only the chapters ``keep`` (file stems).

    Pages without code (the intro, the appendix) stay; chapters with code not in ``keep`` are
    left out, and references to them become plain text (:func:`cut_references`), so the small
    book builds strictly. ``liftkit/`` is linked, not copied (``literalinclude`` and the cache
    key read it).

    Examples
    --------
    >>> subset_book(".", ["getting_started"], "/tmp/small")  # doctest: +SKIP
    PosixPath('/tmp/small')
    """
    root, dest = Path(root).resolve(), Path(dest)
    pages = toc_pages(root)
    unknown = set(keep) - {p.stem for p in pages if has_code(p)}
    if unknown:
        raise ValueError(f"no chapter(s) {sorted(unknown)} with code in {root / '_toc.yml'}")
    docs = {p.relative_to(root).with_suffix("").as_posix(): p for p in pages}
    omitted = {d: _title(p) for d, p in docs.items() if has_code(p) and p.stem not in keep}
    labels = {m for d in omitted for g in _LABEL.findall(docs[d].read_text()) for m in g if m}
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "data_manifest.yaml", *[p.name for p in root.glob("*.bib")]):
        shutil.copy(root / name, dest / name)
    shutil.copytree(root / "book", dest / "book", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("*.md", ".*"))
    for doc, page in docs.items():
        if doc not in omitted:
            target = dest / page.relative_to(root)
            target.write_text(cut_references(page.read_text(), doc, omitted, labels))
    toc = _prune_toc(yaml.safe_load((root / "_toc.yml").read_text()), set(omitted))
    (dest / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    if not (dest / "liftkit").exists():
        (dest / "liftkit").symlink_to(root / "liftkit", target_is_directory=True)
    return dest


def _title(page: Path) -> str:
    found = re.search(r"^# (.+)$", page.read_text(), re.M)
    return found.group(1).strip() if found else page.stem


def build_book(root: str | Path | None = None, *, output: str | Path | None = None,
               parameters: dict[str, Any] | None = None, jobs: int | None = None,
               check: bool = True) -> int:
    """Build the book under ``root`` into ``output/_build/html`` (what ``make book`` runs).

    Chapters execute first (cached, in parallel: :func:`execute_chapters`), then Jupyter Book
    renders them strictly, then the pages are checked in a headless browser
    (:func:`liftkit.companion.browser.check_book`).

    Parameters
    ----------
    root
        A folder holding ``_config.yml`` and ``_toc.yml``; default: the repository
        (:func:`liftkit.utils.repo_root`), wherever it is called from.
    output
        Where ``_build`` goes (default ``root``).
    parameters
        Injected into every chapter, e.g. ``{"profile": "smoke"}``.
    jobs
        Chapters executed at once (default: one per core).
    check
        Run the browser check after the build.

    Returns
    -------
    int
        0 when every chapter ran, the build had no warning and every page passed the check.

    Raises
    ------
    FileNotFoundError
        When ``root`` lacks ``_config.yml`` or ``_toc.yml``, or no repository is found.

    Examples
    --------
    >>> build_book()  # doctest: +SKIP
    0
    """
    root = repo_root() if root is None else Path(root).resolve()
    for name in ("_config.yml", "_toc.yml"):
        if not (root / name).exists():
            raise FileNotFoundError(
                f"{root / name} is missing: pass the book's folder (the repository root), or "
                "leave it out to build the repository this command runs in"
            )
    out = root if output is None else Path(output).resolve()
    pages = toc_pages(root)
    extensions, timeout = _book_settings(root)
    start = time.perf_counter()
    try:
        entries = execute_chapters(root, [p for p in pages if has_code(p)], out / CACHE_DIR,
                                   parameters, jobs=jobs, timeout=timeout)
    except RuntimeError as err:
        print(f"liftkit build: {err}", file=sys.stderr)
        return 1
    stamp_file, stamp = out / CACHE_DIR / "rendered", render_stamp(root, entries, parameters)
    html = out / "_build" / "html"
    if (html / "index.html").exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        print("nothing changed since the last build: pages not re-rendered", flush=True)
    else:
        print(f"chapters ready in {time.perf_counter() - start:.0f} s; rendering", flush=True)
        code = _render(root, out, output is not None, pages, entries, extensions)
        if code != 0:
            return code
        stamp_file.write_text(stamp)
    print(f"built in {time.perf_counter() - start:.0f} s", flush=True)
    return _check(html) if check else 0


def render_stamp(root: str | Path, entries: dict[Path, Path],
                 parameters: dict[str, Any] | None = None) -> str:
    """A hash of everything the Sphinx pass reads: when it is unchanged, so are the pages.

    It covers the executed chapters (their cache keys), every file under ``book/``, the
    ``liftkit`` source (``literalinclude``), ``_config.yml``, ``_toc.yml``, the ``.bib`` files,
    the parameters and the versions of the rendering packages.

    Examples
    --------
    >>> render_stamp(".", {}) == render_stamp(".", {})  # doctest: +SKIP
    True
    """
    from importlib.metadata import PackageNotFoundError, version

    root = Path(root)
    files = sorted(p for p in [*(root / "book").rglob("*"), *root.glob("*.bib"),
                               root / "_config.yml", root / "_toc.yml"]
                   if p.is_file() and not any(part.startswith(".") for part in p.parts[-3:]))
    versions = []
    for name in ("jupyter-book", "sphinx", "myst-nb", "sphinx-book-theme"):
        try:
            versions.append(f"{name}={version(name)}")
        except PackageNotFoundError:
            versions.append(name)
    return _sha(source_digest(root), json.dumps(parameters or {}, sort_keys=True, default=str),
                *sorted(f"{e.parent.name}/{e.name}" for e in entries.values()), *versions,
                *[x for p in files for x in (p.relative_to(root).as_posix(), p.read_bytes())])


def _render(root: Path, out: Path, separate: bool, pages: list[Path],
            entries: dict[Path, Path], extensions: list[str]) -> int:
    """Refill the jupyter-cache, run the strict Sphinx pass, put the downloads in place."""
    from jupyter_cache import get_cache

    jc_path = out / "_build" / ".jupyter_cache"
    cached = fill_jupyter_cache(jc_path, root, pages, entries, extensions)
    ours = {r.hashkey for r in get_cache(str(jc_path)).list_cache_records()}
    code = subprocess.call(build_command(root, out if separate else None))
    if code != 0:
        return code
    if {r.hashkey for r in get_cache(str(jc_path)).list_cache_records()} != ours:
        print("liftkit build: Sphinx executed a page itself instead of using the executed "
              "chapters (its code cells were read differently)", file=sys.stderr)
        return 1
    for page, nb in cached.items():
        target = out / "_build" / "html" / "_sources" / page.relative_to(root).with_suffix(".ipynb")
        _write_download(target, nb)
    return 0


def _write_download(target: Path, nb: Any) -> None:
    """Write the executed notebook where the page's ``.ipynb`` download button points.

    In cache mode myst-nb writes the notebook as read, without the cached outputs, and the theme
    copies that one; the reader should download what the page shows.
    """
    import nbformat

    if target.parent.is_dir():
        nbformat.write(nb, str(target))


def _check(html: Path) -> int:
    """Run the browser check on ``html`` and print its table; 0 when every page passed."""
    from liftkit.companion.browser import check_book, print_report

    start = time.perf_counter()
    reports = check_book(html)
    print_report(reports)
    print(f"browser check in {time.perf_counter() - start:.0f} s", flush=True)
    return 0 if all(r.ok for r in reports) else 1


def _unique_scripts(app: Any, pagename: str, templatename: str, context: dict,
                    doctree: Any) -> None:
    """Drop repeated ``<script>`` entries of a page (``html-page-context``).

    Jupyter Book 1 adds the inline scripts of sphinx-thebe and sphinx-togglebutton twice (once
    with the file name ``None``, once ``""``); the second ``const THEBE_JS_URL`` is a JavaScript
    error on every page.
    """
    seen: set[tuple] = set()
    unique = []
    for script in context.get("script_files", []):
        attrs = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or "", tuple(sorted(attrs.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context.get("script_files", [])[:] = unique  # in place: the builder renders this list


def setup(app: Any) -> dict[str, Any]:
    """Sphinx extension hook (``_config.yml``: ``extra_extensions``): see :func:`_unique_scripts`.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> setup(SimpleNamespace(connect=lambda *a, **k: None))["parallel_read_safe"]
    True
    """
    app.connect("html-page-context", _unique_scripts, priority=10_000)  # after every other
    return {"parallel_read_safe": True, "parallel_write_safe": True}
