"""Build the Jupyter Book strictly: warnings are errors and a failing chapter fails the build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

#: Flags of a trustworthy build (TOOLCHAIN): warnings are errors (-W), nitpicky references (-n),
#: report every problem (--keep-going), rebuild every page (--all).
BUILD_FLAGS = ("-W", "-n", "--keep-going", "--all")


def build_command(root: str | Path) -> list[str]:
    """The ``jupyter-book build`` command line used by ``make book`` and the build test."""
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe), "build", *BUILD_FLAGS, str(root)]


def build_book(root: str | Path = ".") -> int:
    """Build the book under ``root`` into ``root/_build/html``; returns the exit code."""
    root = Path(root)
    for name in ("_config.yml", "_toc.yml"):
        if not (root / name).exists():
            raise FileNotFoundError(f"{root / name} is missing: run from the repository root")
    return subprocess.call(build_command(root))
