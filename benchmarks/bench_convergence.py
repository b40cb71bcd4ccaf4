"""Steps and CPU time to convergence of the SAMS-VAE family on the book's data (not a test).

Each row of SAMS-VAE Table 1 (and, with ``--options``, fully correlated SAMS-VAE with the
options the paper does not use: the non-collapsed Beta-Bernoulli mask prior, Poisson and
Normal likelihoods, a three-layer q(E | M) network) is trained with the SAMS-VAE chapter's
default settings (``liftkit.perturb.experiment.TABLE1_SETTINGS``: validation every 50 steps,
early stopping, best-weight restore) until its stopping rule fires, once per seed, on one
torch thread. Only training is timed (``time.process_time`` of the loop, so machine load does
not enter).

    .venv/bin/python benchmarks/bench_convergence.py [--seeds 0 1 2] [--options]

Without ``--options`` the rows of Table 1; with it fully correlated SAMS-VAE at the chapter's
defaults and with each option of :data:`OPTION_ROWS`. ``--from-csv book/results/table1.csv``
prints the same table from the training records of a committed Table 1 instead of fitting.

Prints a markdown table: per model x inference (x option), the median over seeds of the steps
run, the best (restored) step and the training CPU seconds, with their range, the best
validation value (negative per-cell ELBO, nats) and how many fits the budget bound.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import pandas as pd
import torch

from liftkit.perturb.experiment import (
    GUIDE_LABELS,
    TABLE1_ROWS,
    TABLE1_SETTINGS,
    fit_model,
    table1_data,
)

#: Extra rows: fully correlated SAMS-VAE with one option the paper does not use.
OPTION_ROWS = [
    # prior mean 0.01, the chapter's Bernoulli alpha
    ("non-collapsed Beta(1, 99)-Bernoulli",
     {"mask_prior": "beta_bernoulli", "beta_ab": (1.0, 99.0)}),
    ("Poisson likelihood", {"likelihood": "poisson"}),
    ("Normal likelihood", {"likelihood": "normal"}),
    ("emb_layers 3 (q(E given M) network)", {"emb_layers": 3}),
]


def fit_once(name: str, guide: str, option: str, extra: dict, train, seed: int) -> dict:
    """Train one fit to its stopping point; its training record as a row."""
    model = fit_model(name, guide, train, seed=seed, device="cpu",
                      **{**TABLE1_SETTINGS["fit"], **extra})
    rec = model.record
    return dict(model=name, inference=GUIDE_LABELS[guide], option=option, seed=seed,
                steps=rec.steps, best_step=rec.best_step, cpu_seconds=rec.cpu_seconds,
                best_val=min(v for v in rec.history["val"]), bound=rec.bound_by_budget)


def _spread(values: pd.Series, fmt: str) -> str:
    """``median [min-max]``."""
    return f"{statistics.median(values):{fmt}} [{values.min():{fmt}}-{values.max():{fmt}}]"


def _median(values: pd.Series) -> str:
    """Median to two decimals, ``-`` if not recorded."""
    return "-" if values.isna().all() else f"{statistics.median(values):.2f}"


def from_csv(path: str) -> pd.DataFrame:
    """The rows of :func:`fit_once` from a Table 1 CSV (no validation value recorded there)."""
    table = pd.read_csv(path)
    return table.assign(option="chapter default", bound=table["bound_by_budget"],
                        best_val=float("nan"))


def markdown(rows: pd.DataFrame) -> str:
    """The table of medians over seeds (first-seen row order)."""
    lines = ["| model | inference | option | steps run | best step | CPU s (training) | "
             "best validation -ELBO | bound by budget |", "|---|---|---|---|---|---|---|---|"]
    for (name, inference, option), g in rows.groupby(["model", "inference", "option"],
                                                     sort=False):
        lines.append(
            f"| {name} | {inference} | {option} | {_spread(g['steps'], '.0f')} | "
            f"{_spread(g['best_step'], '.0f')} | {_spread(g['cpu_seconds'], '.1f')} | "
            f"{_median(g['best_val'])} | {int(g['bound'].sum())} of {len(g)} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run the fits, print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--options", action="store_true",
                        help="fully correlated SAMS-VAE with each option instead of Table 1")
    parser.add_argument("--from-csv", help="summarise a Table 1 CSV instead of fitting")
    args = parser.parse_args()
    if args.from_csv:
        print(markdown(from_csv(args.from_csv)))
        return
    torch.set_num_threads(1)
    _, train, _, _, _ = table1_data(TABLE1_SETTINGS["data"])
    grid = [(n, g, "chapter default", {}) for n, g in TABLE1_ROWS]
    if args.options:
        grid = [("SAMS-VAE", "corr", "chapter default", {})] + [
            ("SAMS-VAE", "corr", label, kw) for label, kw in OPTION_ROWS
        ]
    t0 = time.perf_counter()
    rows = [fit_once(n, g, o, kw, train, s) for s in args.seeds for n, g, o, kw in grid]
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, one thread,"
          f" seeds {args.seeds}, {time.perf_counter() - t0:.0f} s wall in all\n")
    print(markdown(pd.DataFrame(rows)))


if __name__ == "__main__":
    main()
