"""Sweeps: run a named grid of independent fits on Dask and keep one Parquet table of results.

A sweep (``liftkit sweep NAME``, :func:`run_sweep`) builds a grid of tasks from a chapter profile
plus overrides (:func:`build_grid`, grids in :mod:`liftkit.companion.grids`), sends the tasks to a
``dask.distributed`` cluster (a :class:`~distributed.LocalCluster` with one single-threaded
worker process per core by default, or an existing scheduler), and writes one row per task to a
Parquet table as tasks finish, atomically, so an interrupted sweep leaves the previous complete
table. A rerun skips the tasks the table already holds with status ``ok`` (resume). A task that
raises is recorded (status ``error`` and its message) and the others go on. Each row carries its
provenance: liftkit version, git commit, torch version, device, seed, every task parameter (and
all of them as JSON in ``params``), wall and CPU seconds, and whether the fit was bound by its
budget. :func:`verify_table` recomputes rows of a committed table from their recorded
parameters.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd

from liftkit.companion.grids import COMPARE, GRIDS, TASKS
from liftkit.companion.runner import runs_path
from liftkit.utils import atomic_path, progress

#: Defaults of the ``demo`` grid (equal CPU-bound tasks; tests and benchmarks).
DEMO_DEFAULTS: dict[str, Any] = dict(n_tasks=4, size=200, steps=2000, seed=0, fail=[])
#: Keys that index replicates: rows equal in every other parameter are replicates.
REPLICATE_KEYS = ("replicate", "fit_seed", "seed")


def task_id(task: dict[str, Any]) -> str:
    """A stable id of a task: a hash of its parameters (any order).

    Examples
    --------
    >>> task_id({"a": 1, "b": "x"}) == task_id({"b": "x", "a": 1})
    True
    """
    text = json.dumps(task, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def build_grid(name: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
    """The tasks of grid ``name`` as a table: one row per task, ``task_id`` first.

    Parameters
    ----------
    name
        A key of :data:`~liftkit.companion.grids.GRIDS` (``fig2``, ``lab-splits``, ``table1``,
        ``lifted``) or ``demo``.
    params
        ``profile`` (default ``"default"``), ``seed`` and ``device``, and overrides of the
        chapter profile's values (e.g. ``{"n_cells": 18000}``).

    Raises
    ------
    ValueError
        An unknown grid, or a parameter the chapter's profile does not have.

    Examples
    --------
    >>> grid = build_grid("demo", {"n_tasks": 2})
    >>> list(grid.columns[:3]), len(grid)
    (['task_id', 'task', 'index'], 2)
    """
    from liftkit.companion.grids import demo_grid
    from liftkit.companion.profiles import load_profile

    params = dict(params or {})
    if name == "demo":
        tasks = demo_grid({**DEMO_DEFAULTS, **params})
    elif name in GRIDS:
        chapter, builder = GRIDS[name]
        run = {k: params.pop(k) for k in ("seed", "device") if k in params}
        cfg = load_profile(chapter, params.pop("profile", "default"), **params)
        tasks = builder({**cfg, "seed": 0, "device": "auto", **run})
    else:
        raise ValueError(f"unknown sweep {name!r}: choose one of {sorted([*GRIDS, 'demo'])}")
    return tasks_frame(tasks)


def tasks_frame(tasks: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """A list of task dicts as a grid table with ``task_id`` and ``params`` (JSON) columns.

    Examples
    --------
    >>> tasks_frame([{"task": "demo", "size": 2}]).params[0]
    '{"size": 2, "task": "demo"}'
    """
    frame = pd.DataFrame(list(tasks))
    frame.insert(0, "task_id", [task_id(t) for t in tasks])
    frame["params"] = [json.dumps(t, sort_keys=True, default=str) for t in tasks]
    return frame


@lru_cache(maxsize=4)
def _provenance(device: str) -> dict[str, str]:
    """liftkit and torch versions, git commit, device (cached per process)."""
    from liftkit.perturb.experiment import provenance

    out = provenance(device)
    out.pop("torch_threads", None)  # a task sets its own thread count
    return dict(out, host=socket.gethostname())


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task and return its result row with provenance and timings; never raises for a
    failing task (status ``error`` and the message instead).

    Examples
    --------
    >>> row = run_task({"task": "demo", "size": 4, "steps": 3, "seed": 0, "fail": False})
    >>> row["status"], row["task_wall_seconds"] >= 0
    ('ok', True)
    """
    params = json.loads(task["params"]) if "params" in task else dict(task)
    row = {"task_id": task_id(params), **params, "params": json.dumps(params, sort_keys=True,
                                                                       default=str)}
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        row.update(TASKS[params["task"]](dict(params)))
        row.update(status="ok", error="")
    except Exception as err:  # recorded in the table; the sweep goes on
        row.update(status="error", error=f"{type(err).__name__}: {err}")
    row.update(task_wall_seconds=time.perf_counter() - t0,
               task_cpu_seconds=time.process_time() - c0,
               finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
               **_provenance(str(params.get("device", "cpu"))))
    return row


def default_sweep_output(name: str) -> Path:
    """``runs/<name>.parquet`` of the repository (of the working directory outside one).

    Examples
    --------
    >>> default_sweep_output("fig2").name
    'fig2.parquet'
    """
    return runs_path(f"{name}.parquet")


def write_table(rows: list[dict[str, Any]] | pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """Write result rows to Parquet atomically: readers see the old table or the new one.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "t.parquet"
    >>> len(write_table([{"task_id": "a", "x": 1.0}], out)), len(pd.read_parquet(out))
    (1, 1)
    """
    table = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)
    return table


@contextmanager
def sweep_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``dask.distributed`` client: of the scheduler at ``scheduler`` if given, else of a
    LocalCluster with ``workers`` (default: the number of cores) single-threaded worker
    processes.

    Examples
    --------
    >>> with sweep_client(workers=2) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2]).result()
    3
    """
    from dask.distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    # the nanny also sets OMP_NUM_THREADS=1 in each worker; tasks set torch's threads to 1
    with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        yield client


def _ordered(rows: list[dict[str, Any]], order: list[str]) -> pd.DataFrame:
    """Rows in grid order (rows of tasks not in the grid last)."""
    rank = {tid: i for i, tid in enumerate(order)}
    rows = sorted(rows, key=lambda r: rank.get(r["task_id"], len(rank)))
    return pd.DataFrame(rows)


def _pending(grid: pd.DataFrame, output: Path, resume: bool) -> tuple[list[dict], list[dict]]:
    """Rows already done (status ok) in ``output``, and the grid's tasks still to run."""
    done: list[dict] = []
    if resume and output.exists():
        old = pd.read_parquet(output)
        done = old[old.status == "ok"].to_dict("records")
    ids = {r["task_id"] for r in done}
    todo = [{"params": p} for tid, p in zip(grid.task_id, grid.params, strict=True)
            if tid not in ids]
    return done, todo


def execute(
    todo: list[dict[str, Any]],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    desc: str = "sweep",
    show_progress: bool = True,
) -> Iterator[dict[str, Any]]:
    """Run tasks and yield their rows as they finish: in this process when ``workers == 0``,
    else on Dask (:func:`sweep_client`, ``as_completed``).

    Examples
    --------
    >>> rows = list(execute([{"task": "demo", "size": 4, "steps": 1, "seed": 0}], workers=0))
    >>> rows[0]["status"]
    'ok'
    """
    bar = progress(total=len(todo), desc=desc, **({} if show_progress else {"disable": True}))
    if workers == 0 and not scheduler:
        for task in todo:
            yield run_task(task)
            bar.update()
        bar.close()
        return
    from dask.distributed import as_completed

    with sweep_client(workers, scheduler) as client:
        futures = [client.submit(run_task, t, pure=False) for t in todo]
        for future in as_completed(futures):
            yield future.result()
            bar.update()
    bar.close()


def run_sweep(
    name: str | Sequence[dict[str, Any]],
    params: dict[str, Any] | None = None,
    *,
    output: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    resume: bool = True,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Run a sweep and return its table (also written to ``output``).

    Parameters
    ----------
    name
        A grid name (:func:`build_grid`), or a list of task dicts.
    params
        Profile and overrides (:func:`build_grid`).
    output
        The Parquet table (default :func:`default_sweep_output`); rewritten atomically after
        every finished task.
    workers
        LocalCluster worker processes (default: the cores); ``0`` runs in this process.
    scheduler
        Address of an existing Dask scheduler (``tcp://host:8786``); ``workers`` is then unused.
    resume
        Skip the tasks ``output`` already holds with status ``ok``.
    show_progress
        A progress bar (:func:`liftkit.utils.progress`).

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "demo.parquet"
    >>> t = run_sweep("demo", {"n_tasks": 2, "steps": 5}, output=out, workers=0)
    >>> list(t.status)
    ['ok', 'ok']
    """
    label = name if isinstance(name, str) else "sweep"
    grid = build_grid(name, params) if isinstance(name, str) else tasks_frame(name)
    output = Path(output) if output else default_sweep_output(label)
    rows, todo = _pending(grid, output, resume)
    order = list(grid.task_id)
    for row in execute(todo, workers=workers, scheduler=scheduler, desc=label,
                       show_progress=show_progress):
        rows.append(row)
        write_table(_ordered(rows, order), output)
    table = _ordered(rows, order)
    return write_table(table, output) if rows else table


def replicate_tolerance(table: pd.DataFrame, column: str, floor: float = 0.02) -> pd.Series:
    """Per row: the sd of ``column`` over the row's replicates (rows equal in every parameter
    but :data:`REPLICATE_KEYS`), at least ``floor`` (also when a row has no replicate).

    Examples
    --------
    >>> t = pd.DataFrame({"params": ['{"replicate": 0}', '{"replicate": 1}'], "y": [0.4, 0.6]})
    >>> replicate_tolerance(t, "y").round(3).tolist()
    [0.141, 0.141]
    """
    def group(params: str) -> str:
        p = json.loads(params)
        return json.dumps({k: v for k, v in p.items() if k not in REPLICATE_KEYS},
                          sort_keys=True)

    keys = table.params.map(group)
    sd = table.groupby(keys)[column].transform(lambda s: s.std(ddof=1))
    return sd.fillna(floor).clip(lower=floor)


def verify_table(
    table: str | Path | pd.DataFrame,
    rows: Sequence[int] | None = None,
    *,
    workers: int | None = 0,
    scheduler: str | None = None,
    floor: float = 0.02,
    show_progress: bool = False,
) -> pd.DataFrame:
    """Recompute rows of a results table from their recorded parameters and compare.

    Each recomputed value of the task's compared columns (``grids.COMPARE``) must lie within
    :func:`replicate_tolerance` of the recorded one (one replicate sd, at least ``floor``).

    Parameters
    ----------
    table
        A sweep table or its Parquet path.
    rows
        Positions of the rows to recompute (default: every row with status ``ok``).
    workers, scheduler
        Where to run them (:func:`execute`; default: in this process).

    Returns
    -------
    pandas.DataFrame
        One line per (row, column): recorded, recomputed, difference, tolerance and ``ok``.

    Examples
    --------
    >>> t = run_sweep("demo", {"n_tasks": 1, "steps": 5}, output=None, workers=0)  # doctest: +SKIP
    >>> verify_table(t).ok.all()  # doctest: +SKIP
    True
    """
    table = pd.read_parquet(table) if isinstance(table, str | Path) else table
    table = table.reset_index(drop=True)
    rows = list(table.index[table.status == "ok"]) if rows is None else list(rows)
    todo = [{"params": table.params[i]} for i in rows]
    done = {r["task_id"]: r for r in execute(todo, workers=workers, scheduler=scheduler,
                                              desc="verify", show_progress=show_progress)}
    out = []
    for i in rows:
        rec = table.loc[i]
        new = done[rec.task_id]
        for col in COMPARE[rec.task]:
            if col not in table or pd.isna(rec[col]):
                continue
            tol = float(replicate_tolerance(table, col, floor)[i])
            diff = abs(float(new.get(col, float("nan"))) - float(rec[col]))
            out.append(dict(row=i, task_id=rec.task_id, column=col, recorded=float(rec[col]),
                            recomputed=float(new.get(col, float("nan"))), diff=diff,
                            tolerance=tol, ok=bool(diff <= tol), status=new["status"]))
    return pd.DataFrame(out)
