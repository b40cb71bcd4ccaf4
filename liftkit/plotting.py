"""One seaborn theme for every figure in the book, and the colours of the training methods."""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns

#: Colours used consistently across chapters for the two training methods.
METHOD_COLORS = {"LIFT": "#1b7837", "conventional": "#762a83", "LIFT (no LeaVS)": "#7fbf7b"}


def set_theme(context: str = "notebook") -> None:
    """Apply the book's seaborn theme (white grid, colour-blind palette, 110 dpi).

    Parameters
    ----------
    context
        A seaborn context (``"paper"``, ``"notebook"``, ``"talk"``, ``"poster"``).

    Examples
    --------
    >>> set_theme()
    >>> plt.rcParams["figure.dpi"]
    110.0
    """
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
