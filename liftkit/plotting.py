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


def plot_pr_auc_vs_moi(
    ax: plt.Axes,
    table,
    methods: list[str],
    *,
    ceiling: float,
    chance: float,
    label_threshold: float = 10.0,
    colors: dict[str, str] | None = None,
) -> None:
    """LIFT Figure 2's panel: PR AUC against MOI per method (line and band: mean and range over
    replicates; points: replicates), the oracle ceiling (dashed) and chance (dotted).

    ``table`` has one row per (MOI, replicate, method) with ``pr_auc``, as
    :func:`liftkit.lift.experiment.moi_experiment` returns it or
    :func:`liftkit.companion.grids.fig2_frame` reads it from a sweep.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame(dict(moi=[1.0, 1.0, 10.0, 10.0], replicate=[0, 1, 0, 1],
    ...                       method=["LIFT"] * 4, pr_auc=[0.2, 0.3, 0.5, 0.6], bound=False))
    >>> fig, ax = plt.subplots()
    >>> plot_pr_auc_vs_moi(ax, t, ["LIFT"], ceiling=0.7, chance=0.01)
    >>> [round(float(y), 2) for y in ax.lines[0].get_ydata()]
    [0.25, 0.55]
    >>> plt.close(fig)
    """
    from liftkit.lift.experiment import summarise_pr_auc

    colors = {**METHOD_COLORS, "oracle ceiling": "0.3", **(colors or {})}
    summ = summarise_pr_auc(table)
    for m in methods:
        s = summ[summ.method == m]
        ax.plot(s.moi, s["mean"], "-o", color=colors[m], label=m)
        ax.fill_between(s.moi, s["min"], s["max"], color=colors[m], alpha=0.2)
        pts = table[table.method == m]
        ax.scatter(pts.moi, pts.pr_auc, color=colors[m], s=12, alpha=0.7)
    ax.axhline(ceiling, ls="--", color=colors["oracle ceiling"], label="oracle ceiling")
    ax.axhline(chance, ls=":", color="grey", label="chance")
    ax.set(xscale="log", xlabel="MOI", ylabel=f"PR AUC (y > {label_threshold:g})", ylim=(0, 1))
    ax.legend(fontsize=8)
