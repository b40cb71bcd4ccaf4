"""Build the Jupyter Book strictly: warnings are errors and a failing chapter fails the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from liftkit.utils import repo_root

#: Flags of a trustworthy build (TOOLCHAIN): warnings are errors (-W), nitpicky references (-n),
#: report every problem (--keep-going), rebuild every page (--all).
BUILD_FLAGS = ("-W", "-n", "--keep-going", "--all")


def build_command(root: str | Path) -> list[str]:
    """The ``jupyter-book build`` command line that :func:`build_book` runs.

    Examples
    --------
    >>> build_command("/repo")[1:]
    ['build', '-W', '-n', '--keep-going', '--all', '/repo']
    """
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe), "build", *BUILD_FLAGS, str(root)]


def build_book(root: str | Path | None = None) -> int:
    """Build the book under ``root`` into ``root/_build/html`` (what ``make book`` runs).

    Parameters
    ----------
    root
        A folder holding ``_config.yml`` and ``_toc.yml``; default: the repository
        (:func:`liftkit.utils.repo_root`), wherever it is called from.

    Returns
    -------
    int
        The exit code of ``jupyter-book build`` (non-zero when any chapter raised or warned).

    Raises
    ------
    FileNotFoundError
        When ``root`` lacks ``_config.yml`` or ``_toc.yml``, or no repository is found.

    Examples
    --------
    >>> build_book()  # doctest: +SKIP
    0
    """
    root = repo_root() if root is None else Path(root)
    for name in ("_config.yml", "_toc.yml"):
        if not (root / name).exists():
            raise FileNotFoundError(
                f"{root / name} is missing: pass the book's folder (the repository root), or "
                "leave it out to build the repository this command runs in"
            )
    return subprocess.call(build_command(root))
