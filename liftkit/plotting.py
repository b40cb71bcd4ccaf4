"""One seaborn theme for every figure in the book, and ``savefig``."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import seaborn as sns

from liftkit.utils import atomic_path

#: Colours used consistently across chapters for the two training methods.
METHOD_COLORS = {"LIFT": "#1b7837", "conventional": "#762a83", "LIFT (no LeaVS)": "#7fbf7b"}


def set_theme(context: str = "notebook") -> None:
    """Apply the book's seaborn theme (white grid, colour-blind palette, 110 dpi)."""
    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "savefig.bbox": "tight",
            "axes.titleweight": "bold",
            "figure.autolayout": False,
        }
    )


def figure_dir() -> Path:
    """Where :func:`savefig` writes: ``$LIFTKIT_FIGURE_DIR`` or ``~/.cache/liftkit/figures``."""
    root = os.environ.get("LIFTKIT_FIGURE_DIR")
    path = Path(root) if root else Path.home() / ".cache" / "liftkit" / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def savefig(fig: plt.Figure, name: str, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Save ``fig`` as ``<figure_dir>/<name>.<fmt>`` atomically (temp file, then rename).

    Returns the written paths. ``name`` must be a plain file stem (no directories).
    """
    if not name or Path(name).name != name:
        raise ValueError(f"figure name must be a plain file stem like 'fig2_prauc', got {name!r}")
    out = []
    for fmt in formats:
        target = figure_dir() / f"{name}.{fmt}"
        with atomic_path(target, f".{fmt}.part") as tmp:
            fig.savefig(tmp, format=fmt)
        out.append(target)
    return out
