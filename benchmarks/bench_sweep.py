"""Benchmark: wall time of one sweep grid with 1 and 2 Dask workers (liftkit.companion.sweep).

A grid of equal CPU-bound tasks (the ``demo`` grid: least squares by gradient descent, one torch
thread each) runs through :func:`liftkit.companion.sweep.run_sweep` on a fresh LocalCluster of
1, then 2, single-threaded worker processes; the wall time includes starting the cluster and
writing the table after every task. Median over ``--repeats``; prints a table and the ratio
(target: 2 workers <= 0.6x the wall time of 1). Not a test.

    .venv/bin/python benchmarks/bench_sweep.py [--tasks 8] [--steps 90000] [--repeats 3] [--out CSV]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from liftkit.companion.sweep import run_sweep


def wall_time(workers: int, grid: dict, folder: Path) -> float:
    """Seconds for one whole sweep of ``grid`` on a fresh cluster of ``workers`` workers."""
    out = folder / f"w{workers}-{time.monotonic_ns()}.parquet"
    t0 = time.perf_counter()
    table = run_sweep("demo", grid, output=out, workers=workers, resume=False,
                      show_progress=False)
    seconds = time.perf_counter() - t0
    if not (table.status == "ok").all():
        raise RuntimeError(f"a benchmark task failed: {table.error.tolist()}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8, help="equal tasks in the grid")
    parser.add_argument("--size", type=int, default=300, help="matrix size of a task")
    parser.add_argument("--steps", type=int, default=90000, help="gradient steps of a task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="also write the table as CSV (book/results/sweep_bench.csv)")
    args = parser.parse_args()
    grid = dict(n_tasks=args.tasks, size=args.size, steps=args.steps)
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{args.tasks} tasks of {args.steps} steps at size {args.size}, "
          f"median of {args.repeats}")
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so a change in load hits both alike
            for workers in (1, 2):
                times[workers].append(wall_time(workers, grid, Path(tmp)))
    med = {w: statistics.median(t) for w, t in times.items()}
    print("| workers | wall s (median) | runs (s) | ratio to 1 worker |")
    print("|---|---|---|---|")
    for w in (1, 2):
        runs = ", ".join(f"{t:.1f}" for t in times[w])
        print(f"| {w} | {med[w]:.1f} | {runs} | {med[w] / med[1]:.2f} |")
    if args.out:
        import pandas as pd

        pd.DataFrame([dict(workers=w, wall_seconds=round(med[w], 2),
                           runs=" ".join(f"{t:.1f}" for t in times[w]),
                           ratio=round(med[w] / med[1], 3), tasks=args.tasks, steps=args.steps,
                           size=args.size, date=time.strftime("%Y-%m-%d"),
                           machine=f"{os.cpu_count()}-core CPU")
                      for w in (1, 2)]).to_csv(args.out, index=False)
    verdict = "met" if med[2] <= 0.6 * med[1] else "NOT met"
    print(f"target 2 workers <= 0.6x of 1: {verdict} ({med[2] / med[1]:.2f}x)")


if __name__ == "__main__":
    main()
