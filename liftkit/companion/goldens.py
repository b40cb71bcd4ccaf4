"""The chapters listed in ``_toc.yml`` and their golden notebooks (the nbval regression tier).

A golden is the chapter executed at ``profile="smoke"`` with ``OMP_NUM_THREADS=1``, stored as
``tests/notebooks/<name>.ipynb``. nbval re-executes it and compares the cells tagged
``nbval-check-output``; ``make regold`` rewrites goldens on purpose.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from liftkit.utils import repo_root

GOLDEN_DIR = Path("tests") / "notebooks"  # relative to the repository root
GOLDEN_PARAMETERS = {"profile": "smoke"}


def _toc_files(node: object) -> list[str]:
    files: list[str] = []
    if isinstance(node, dict):
        if "file" in node:
            files.append(node["file"])
        if "root" in node:
            files.append(node["root"])
        for value in node.values():
            if isinstance(value, list | dict):
                files.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            files.extend(_toc_files(item))
    return files


def toc_pages(root: Path | None = None) -> list[Path]:
    """Every page of ``_toc.yml`` (root first), as paths to existing ``.md`` files.

    Parameters
    ----------
    root
        The repository (default :func:`liftkit.utils.repo_root`).

    Raises
    ------
    FileNotFoundError
        When ``_toc.yml`` lists a page that does not exist.

    Examples
    --------
    >>> toc_pages()[0].name  # doctest: +SKIP
    'intro.md'
    """
    root = repo_root() if root is None else Path(root)
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = []
    for entry in dict.fromkeys(_toc_files(toc)):
        path = root / (entry if entry.endswith(".md") else f"{entry}.md")
        if not path.exists():
            raise FileNotFoundError(f"_toc.yml lists {entry!r} but {path} does not exist")
        pages.append(path)
    return pages


def has_code(page: Path) -> bool:
    """True for executable chapters (they contain ``{code-cell}`` blocks)."""
    return "```{code-cell}" in page.read_text()


def toc_chapters(root: Path | None = None) -> list[Path]:
    """The executable chapters of the table of contents, in book order.

    Examples
    --------
    >>> [c.stem for c in toc_chapters()][:2]  # doctest: +SKIP
    ['getting_started', 'points_to_measures']
    """
    return [p for p in toc_pages(root) if has_code(p)]


def golden_path(chapter: str | Path, root: Path | None = None) -> Path:
    """``tests/notebooks/<stem>.ipynb`` of the repository (the chapter's golden notebook).

    Examples
    --------
    >>> golden_path("book/coherence.md", Path("checkout")).as_posix()
    'checkout/tests/notebooks/coherence.ipynb'
    """
    root = repo_root() if root is None else Path(root)
    return root / GOLDEN_DIR / f"{Path(chapter).stem}.ipynb"


def regold(names: list[str] | None = None, root: Path | None = None) -> list[Path]:
    """Re-execute chapters at the smoke profile and overwrite their goldens (``make regold``).

    Runs single-threaded so the goldens are bit-reproducible.

    Parameters
    ----------
    names
        Chapters by file stem (default: every chapter of ``_toc.yml``).
    root
        The repository (default :func:`liftkit.utils.repo_root`), wherever this is called from.

    Returns
    -------
    list of Path
        The goldens written.

    Raises
    ------
    ValueError
        A name that is not a chapter of ``_toc.yml``.

    Examples
    --------
    >>> [p.name for p in regold(["coherence"])]  # doctest: +SKIP
    ['coherence.ipynb']
    """
    from liftkit.companion.runner import run_chapter

    root = repo_root() if root is None else Path(root)
    chapters = toc_chapters(root)
    if names:
        known = {c.stem: c for c in chapters}
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise ValueError(f"no chapter(s) {unknown} in _toc.yml; chapters are {sorted(known)}")
        chapters = [known[n] for n in names]
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["LIFTKIT_PROGRESS"] = "0"
    written = []
    for chapter in chapters:
        print(f"regold {chapter.stem} ...", flush=True)
        run_chapter(chapter, golden_path(chapter, root), GOLDEN_PARAMETERS)
        written.append(golden_path(chapter, root))
    return written
