"""The book's named sweeps as data: grids of tasks built from a chapter profile, and the tasks.

A grid is a list of tasks; a task is a flat dict of scalar parameters with a ``task`` key naming
its function in :data:`TASKS`. Each task function takes that dict and returns one result row
(a dict), so a task is a plain, picklable function call that a Dask worker (or the calling
process) can run alone: every piece of shared setup (library, oracle, test set, simulated data)
is rebuilt from the task's own parameters and cached per process.

Named grids (:data:`GRIDS`):

``fig2``
    LIFT Figure 2 (App. C): MOI x replicate x method on the chapter ``moi_experiment``'s
    profile, plus its sensitivity variants: the ablations at the top MOI (``ablation``) and the
    alternative constants s0 = 3, tau = 20 (``alt_setting``).
``lab-splits``
    LIFT App. E (chapter ``lab_splits``): target MOI x replicate x method on subsamples of a
    component-split lab screen, plus LIFT without its LeaVS term on the full training set.
``table1``
    SAMS-VAE Table 1 (chapter ``sams_vae``): model x inference family x seed.
``lifted``
    Lifted perturb-seq (chapter ``lifted_perturbseq``): MOI x replicate x design (all cells of
    the screen, or its single-guide cells only) at a fixed cell budget.

A chapter given a sweep's table (``-p results runs/NAME.parquet``) reads it with
:func:`read_sweep` (wrong grid or missing columns: a one-line error), says with
:func:`profile_differences` where the table's parameters differ from its profile, and draws its
figures from :func:`fig2_result`, :func:`lab_splits_frame` or :func:`table1_frame`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import torch

#: Columns a result row may carry that a verification compares, per task function.
COMPARE = {"fig2": ("pr_auc",), "lab-splits": ("pr_auc", "pr_auc_fresh"),
           "table1": ("ate_pearson", "mask_f1"),
           "lifted": ("ate_pearson", "mask_f1", "embedding_r"), "demo": ("residual",)}


def _scalar(value: Any) -> Any:
    """A task parameter as a Parquet-friendly scalar: lists and dicts become JSON text."""
    return json.dumps(value) if isinstance(value, list | tuple | dict) else value


def _threads(p: dict) -> None:
    """One torch thread per task unless the task asks for more (workers share the cores)."""
    torch.set_num_threads(int(p.get("threads") or 1))


#: Keys a task's result does not depend on (where it ran, with how many threads).
RUN_KEYS = ("device", "threads")
#: Result columns the chapters read from a sweep table, per grid (:func:`read_sweep`).
READ_COLUMNS = {
    "lab-splits": ("method", "target_moi", "moi_hat", "replicate", "train_cells", "pr_auc",
                   "pr_auc_fresh", "epochs_run", "bound", "fit_cpu_seconds",
                   "precision_at_recall"),
    "table1": ("model", "guide", "inference", "fit_seed", "iwelbo", "ate_pearson", "max_steps",
               "steps", "best_step", "epochs", "stopped_early", "bound_by_budget",
               "cpu_seconds", "train_seconds"),
}


def read_sweep(table: Any, grid: str, columns: tuple[str, ...] = ()) -> Any:
    """A sweep table of grid ``grid`` as a DataFrame, checked: every row is a ``grid`` task and
    the table has the columns the chapters draw from (:data:`READ_COLUMNS`) and ``columns``.

    ``table`` is a DataFrame or a Parquet path (relative paths from the repository's top).

    Raises
    ------
    ValueError
        A table of another grid, one without a row that finished, or one missing ``columns``:
        one line naming the problem and the command that writes the right table.

    Examples
    --------
    >>> import pandas as pd
    >>> read_sweep(pd.DataFrame(dict(task=["fig2"], status=["ok"])), "table1")
    Traceback (most recent call last):
    ...
    ValueError: the results table is a 'fig2' sweep, not 'table1': pass a table written by `liftkit sweep table1`
    """
    import pandas as pd

    from liftkit.utils import repo_root

    if not isinstance(table, pd.DataFrame):
        table = pd.read_parquet(repo_root() / table)
    fix = f"pass a table written by `liftkit sweep {grid}`"
    kinds = sorted(set(table["task"])) if "task" in table else ["unknown"]
    if kinds != [grid]:
        raise ValueError(f"the results table is a {', '.join(map(repr, kinds))} sweep, not "
                         f"{grid!r}: {fix}")
    need = ("status", "params", *READ_COLUMNS.get(grid, ()), *columns)
    missing = [c for c in dict.fromkeys(need) if c not in table]
    if missing:
        raise ValueError(f"the results table lacks the columns {missing}: write a new table "
                         f"with this version of liftkit, `liftkit sweep {grid} -o NEW.parquet` "
                         "(a rerun into the old file keeps its old rows)")
    if not (table.status == "ok").any():
        raise ValueError(f"the results table has no finished task: {fix}")
    return table


def _constant_and_varying(tasks: list[dict[str, Any]]) -> tuple[dict, list[str]]:
    """The parameters equal in every task, and the names of those that vary."""
    keys = sorted({k for t in tasks for k in t} - set(RUN_KEYS) - {"task"})
    texts = {k: {json.dumps(t.get(k), sort_keys=True) for t in tasks} for k in keys}
    const = {k: json.loads(next(iter(v))) for k, v in texts.items() if len(v) == 1}
    return const, [k for k in keys if k not in const]


def profile_differences(table: Any, grid: str, cfg: dict[str, Any]) -> list[str]:
    """Where a sweep table's recorded parameters differ from those a chapter's profile ``cfg``
    gives the grid ``grid``: one line per differing parameter, and one if the table's tasks
    (e.g. target MOIs, replicates, seeds) are not the profile's; ``device`` and ``threads`` do
    not count. Empty when the table is the profile's sweep.

    Examples
    --------
    >>> import pandas as pd
    >>> cfg = dict(size=8, steps=2, n_tasks=1)
    >>> t = pd.DataFrame(dict(status=["ok"], params=[json.dumps(dict(
    ...     task="demo", index=0, size=8, steps=3, seed=0, fail=False))]))
    >>> profile_differences(t, "demo", cfg)
    ['steps: table 3, profile 2']
    """
    builder = GRIDS[grid][1] if grid in GRIDS else demo_grid
    settings = {k: v for k, v in cfg.items() if k not in ("profile", "results")}
    mine = [json.loads(json.dumps(t, default=str)) for t in builder(
        {"seed": 0, "device": "auto", **settings})]
    theirs = [json.loads(p) for p in table.params[table.status == "ok"]]
    (c_mine, v_mine), (c_theirs, v_theirs) = map(_constant_and_varying, (mine, theirs))
    out = [f"{k}: table {c_theirs.get(k)!r}, profile {c_mine.get(k)!r}"
           for k in sorted(set(c_mine) | set(c_theirs))
           if k not in v_mine + v_theirs and json.dumps(c_mine.get(k)) != json.dumps(
               c_theirs.get(k))]
    varying = sorted(set(v_mine) | set(v_theirs))

    def cells(tasks: list[dict]) -> set[str]:
        return {json.dumps([t.get(k) for k in varying]) for t in tasks}

    if cells(mine) != cells(theirs):
        out.append(f"tasks ({', '.join(varying)}): the table finished {len(cells(theirs))}, "
                   f"the profile's grid has {len(cells(mine))}, "
                   f"{len(cells(mine) & cells(theirs))} in common")
    return out


def sweep_parameters(table: Any) -> dict[str, Any]:
    """The parameters every finished task of a sweep table shares (its profile's values).

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame(dict(status=["ok", "ok"], params=['{"n": 3, "rep": 0}',
    ...                                                    '{"n": 3, "rep": 1}']))
    >>> sweep_parameters(t)
    {'n': 3}
    """
    return _constant_and_varying([json.loads(p) for p in table.params[table.status == "ok"]])[0]


def fig2_grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks of LIFT Figure 2 (App. C) from a ``moi_experiment`` profile.

    Main grid: every MOI of ``mois`` x ``replicates`` x (LIFT, conventional). With ``ablation``
    ("leavs" or "full") the ablated LIFT variants at the top MOI; with ``alt_setting`` the
    grid at s0 = 3, tau = 20 (MOIs 0.3, 1 and 10, two replicates), as in the chapter.

    Examples
    --------
    >>> cfg = dict(mois=[0.3, 10.0], replicates=2, ablation=False, alt_setting=False, seed=0)
    >>> len(fig2_grid(cfg))
    8
    """
    keys = ("n_cells", "epochs", "batch_size", "lr", "patience", "val_min", "s0", "mult",
            "compound", "threshold", "label_threshold", "patterns", "library", "library_pool",
            "n_test", "channels", "threads", "seed", "device")
    base = {k: _scalar(cfg.get(k)) for k in keys if k in cfg}
    base.setdefault("seed", 0)
    base.setdefault("device", "auto")
    mois, top, reps = list(cfg["mois"]), max(cfg["mois"]), int(cfg["replicates"])
    tasks = [dict(base, variant="main", moi=float(m), replicate=r, method=meth)
             for m in mois for r in range(reps) for meth in ("LIFT", "conventional")]
    if cfg.get("ablation"):
        variants = ["LIFT (no LeaVS)"] + (["LIFT (cell-noise LeaVS)"]
                                          if cfg["ablation"] == "full" else [])
        tasks += [dict(base, variant="ablation", moi=float(top), replicate=r, method=meth)
                  for r in range(reps) for meth in variants]
    if cfg.get("alt_setting"):
        alt = dict(base, s0=3.0, compound=True, label_threshold=10.0, threshold=20.0)
        alt_mois = [m for m in mois if m in (0.3, 1.0, 10.0)] or mois
        tasks += [dict(alt, variant="alt", moi=float(m), replicate=r, method=meth)
                  for m in alt_mois for r in range(2) for meth in ("LIFT", "conventional")]
    return [dict(t, task="fig2") for t in tasks]


@lru_cache(maxsize=4)
def _fig2_setup(key: str) -> tuple:
    """Library, oracle, test set, ceiling and chance of a Figure 2 task (cached per process)."""
    from liftkit.lift.experiment import (
        ALT_PATTERNS,
        _test_library,
        make_test_set,
        oracle_ceiling,
    )
    from liftkit.lift.library import make_library
    from liftkit.lift.oracle import DEFAULT_PATTERNS, Oracle

    p = json.loads(key)
    patterns = p["patterns"]
    motifs = {"paper": DEFAULT_PATTERNS, "alt": ALT_PATTERNS}.get(patterns) or tuple(
        (int(st), tuple(a)) for st, a in json.loads(patterns))
    lib = make_library(p["library"], pool_size=p["library_pool"], seed=p["seed"])
    oracle = Oracle(patterns=motifs, s0=p["s0"], mult=p["mult"], compound=p["compound"])
    gen = torch.Generator().manual_seed(p["seed"])  # as moi_experiment draws its test set
    test = make_test_set(_test_library(lib), p["n_test"], oracle=oracle,
                         label_threshold=p["label_threshold"], generator=gen)
    return lib, oracle, test, oracle_ceiling(test), float(test.label.float().mean())


def fig2_task(p: dict[str, Any]) -> dict[str, Any]:
    """One Figure 2 fit: :func:`liftkit.lift.experiment.moi_fit` (eq. 6 / App. C) on the task's
    screen, scored on the shared test set; adds the oracle ceiling and chance PR AUC.

    Examples
    --------
    >>> row = fig2_task(fig2_grid(load_profile("moi_experiment", "smoke"))[0])  # doctest: +SKIP
    >>> sorted(row)[:3]  # doctest: +SKIP
    ['best_step', 'bound', 'budget_steps']
    """
    from liftkit.lift.experiment import moi_fit

    _threads(p)
    setup = ("library", "library_pool", "seed", "patterns", "s0", "mult", "compound",
             "label_threshold", "n_test")
    lib, oracle, test, ceiling, chance = _fig2_setup(json.dumps({k: p[k] for k in setup}))
    fit_kw = dict(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"], n_mc=128,
                  patience=p["patience"], val_min=p["val_min"], mc_pool=20000,
                  net_kw=dict(channels=p["channels"], hidden=p["channels"]))
    row = moi_fit(lib, p["moi"], int(p["replicate"]), p["method"], test, n_cells=p["n_cells"],
                  oracle=oracle, threshold=p["threshold"], fit_kw=fit_kw, seed=p["seed"],
                  device=p["device"])
    for k in ("moi", "replicate", "method"):
        row.pop(k)
    return dict(row, ceiling=ceiling, chance=chance, fraction_of_ceiling=row["pr_auc"] / ceiling,
                bound=bool(row["bound"]))


def fig2_frame(table: Any, variant: str = "main") -> Any:
    """The per-(MOI, replicate, method) frame :func:`~liftkit.lift.experiment.moi_experiment`
    returns as ``table``, from a ``fig2`` sweep table (rows of one ``variant``, status ok).

    The chapter's figure code (and :func:`~liftkit.lift.experiment.summarise_pr_auc`) then reads
    a sweep exactly as it reads fits trained in the kernel.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame(dict(variant=["main"], status=["ok"], moi=[1.0], replicate=[0],
    ...                       method=["LIFT"], pr_auc=[0.5], bound=[False]))
    >>> list(fig2_frame(t).columns[:4])
    ['moi', 'replicate', 'method', 'pr_auc']
    """
    rows = table[(table.variant == variant) & (table.status == "ok")]
    rows = rows.sort_values(["moi", "replicate", "method"], kind="stable").reset_index(drop=True)
    first = ["moi", "replicate", "method", "pr_auc"]
    return rows[first + [c for c in rows.columns if c not in first]]


def fig2_result(table: Any, variant: str = "main") -> Any:
    """A ``fig2`` sweep table read as the chapter reads :func:`moi_experiment`'s result: ``table``
    (:func:`fig2_frame`), ``ceiling``, ``chance``, no ``curves`` or ``test`` (the scores are not
    kept), and ``settings``, the chapter parameters the sweep ran with; None when the table has
    no row of ``variant``.

    ``table`` is a DataFrame or a Parquet path (relative paths from the repository's top).

    Examples
    --------
    >>> res = fig2_result("book/results/fig2_scale.parquet")  # doctest: +SKIP
    >>> res.settings["n_cells"]  # doctest: +SKIP
    18000
    """
    from types import SimpleNamespace

    import pandas as pd

    from liftkit.utils import repo_root

    if not isinstance(table, pd.DataFrame):
        table = pd.read_parquet(repo_root() / table)
    rows = fig2_frame(table, variant)
    if rows.empty:
        return None
    first = rows.iloc[0]
    settings = {k: first[k].item() if hasattr(first[k], "item") else first[k]
                for k in ("n_cells", "n_test", "label_threshold", "threshold", "s0", "compound")}
    settings.update(mois=sorted(float(m) for m in rows.moi.unique()),
                    replicates=int(rows.replicate.nunique()))
    return SimpleNamespace(table=rows, ceiling=float(first.ceiling), chance=float(first.chance),
                           curves={}, test=None, settings=settings,
                           seconds=float(rows.task_wall_seconds.sum()))


#: Recalls at which the lab-splits chapter compares precision (its enrichment of hits).
RECALL_GRID = np.linspace(0.05, 0.95, 19)
#: The method of the lab-splits ablation: LIFT without its LeaVS term (App. D).
NO_LEAVS = "LIFT (no LeaVS)"


def precision_at_recall(labels: Any, scores: Any, recalls: np.ndarray = RECALL_GRID) -> np.ndarray:
    """Precision at each recall of ``recalls``: the PR curve of ``scores`` against binary
    ``labels`` (:func:`liftkit.metrics.pr_curve`), sorted by recall, its precision replaced by
    the running maximum from the highest recall down (the best precision at that recall or
    beyond), interpolated linearly (the enrichment of hits at fixed recall of LIFT Section 6.2 /
    App. E: precision is the share of hits among the selected sequences). Points of equal recall
    keep the order ``np.argsort`` gives them.

    Examples
    --------
    >>> precision_at_recall([1, 1, 1, 1], [0.9, 0.8, 0.7, 0.1], np.array([0.3, 1.0]))
    array([1., 1.])
    >>> precision_at_recall([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]).shape
    (19,)
    """
    from liftkit.metrics import pr_curve

    precision, recall = pr_curve(labels, scores)
    env = np.maximum.accumulate(precision[np.argsort(recall)][::-1])[::-1]  # best at >= recall
    return np.interp(recalls, np.sort(recall), env)


def lab_splits_grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks of the lab-style splits (LIFT App. E) from a ``lab_splits`` profile: each target
    MOI of ``target_mois`` and the full training set (``target_moi`` NaN) x replicate x method,
    then LIFT without LeaVS (:data:`NO_LEAVS`) on the full training set x replicate.

    Examples
    --------
    >>> len(lab_splits_grid(dict(target_mois=[0.3], replicates=2, seed=0)))
    10
    """
    keys = ("moi", "sort_threshold", "clones_per_cell", "s0", "hit_threshold", "patience",
            "val_min", "test_fraction", "epochs", "batch_size", "n_mc", "lr", "channels",
            "mc_pool", "n_cells", "n_fresh", "threads", "seed", "device")
    base = {k: _scalar(cfg.get(k)) for k in keys if k in cfg}
    base.setdefault("seed", 0)
    base.setdefault("device", "auto")
    levels = [float(t) for t in cfg["target_mois"]] + [float("nan")]
    reps = range(int(cfg["replicates"]))
    return [dict(base, task="lab-splits", target_moi=t, replicate=r, method=m)
            for t in levels for r in reps for m in ("LIFT", "conventional")] + [
        dict(base, task="lab-splits", target_moi=float("nan"), replicate=r, method=NO_LEAVS)
        for r in reps]


@lru_cache(maxsize=2)
def _lab_setup(key: str) -> tuple:
    """The chapter's lab screen, its component split, MOI estimate and test sets (cached)."""
    import dataclasses

    import liftkit
    from liftkit.lift import splits
    from liftkit.lift.experiment import TestSet, make_test_set, oracle_ceiling
    from liftkit.lift.library import make_library
    from liftkit.lift.oracle import Oracle
    from liftkit.lift.screen import simulate_screen

    p = json.loads(key)
    gen = liftkit.set_seed(p["seed"])
    oracle = Oracle(s0=p["s0"])
    design = make_library("site")
    physical = splits.ClonePool(design, int(p["clones_per_cell"] * p["n_cells"]), gen)
    screen = simulate_screen(physical, p["n_cells"], p["moi"], oracle=oracle,
                             threshold=p["sort_threshold"], generator=gen)
    split = splits.component_split(screen, test_fraction=p["test_fraction"], seed=p["seed"])
    est = splits.estimate_moi(split.train.seqs_per_cell())
    train, test = dataclasses.replace(split.train, moi=est.moi), split.test
    single = torch.nonzero(test.seqs_per_cell() == 1).squeeze(1)
    owner = test.seq_idx[test.cell_ptr[single]]
    hits = test.y[single] > p["hit_threshold"]
    lab = TestSet(tokens=test.tokens[owner], y=test.y[single], label=hits,
                  strength=test.seq_strength[owner])
    fresh = make_test_set(design, p["n_fresh"], oracle=oracle,
                          generator=torch.Generator().manual_seed(p["seed"] + 99))
    return design, train, est.moi, lab, fresh, oracle_ceiling(lab), oracle_ceiling(fresh)


def lab_splits_task(p: dict[str, Any]) -> dict[str, Any]:
    """One fit of the lab-splits grid: LIFT (eq. 6; without LeaVS for :data:`NO_LEAVS`) or
    conventional training on the subsample at ``target_moi`` (App. E,
    :func:`~liftkit.lift.splits.subsample_to_moi`), PR AUC on the lab test set and on fresh
    sequences, and on the lab test set the precision at each recall of :data:`RECALL_GRID`
    (:func:`precision_at_recall`, JSON text ``precision_at_recall``).

    Examples
    --------
    >>> lab_splits_task(lab_splits_grid(profile)[0])["pr_auc"]  # doctest: +SKIP
    0.41
    """
    import math

    from liftkit.lift import splits
    from liftkit.lift.experiment import predict
    from liftkit.lift.train import fit_conventional, fit_lift
    from liftkit.metrics import pr_auc

    _threads(p)
    setup = ("seed", "s0", "clones_per_cell", "n_cells", "moi", "sort_threshold",
             "test_fraction", "hit_threshold", "n_fresh")
    design, full, moi_hat, lab, fresh, ceil_lab, ceil_fresh = _lab_setup(
        json.dumps({k: p[k] for k in setup}))
    target, rep = p["target_moi"], int(p["replicate"])
    row = dict(moi_hat=moi_hat, ceiling=ceil_lab, ceiling_fresh=ceil_fresh)
    if not math.isnan(target) and target >= moi_hat:
        raise ValueError(f"target MOI {target} is not below the estimated MOI {moi_hat:.2f}")
    tr = full if math.isnan(target) else splits.subsample_to_moi(
        full, target, seed=p["seed"] + rep, moi_hat=moi_hat)
    fit = fit_conventional if p["method"] == "conventional" else fit_lift
    extra = dict(leavs=False) if p["method"] == NO_LEAVS else {}
    model = fit(tr, design, moi=tr.moi, seed=p["seed"] + rep, epochs=p["epochs"],
                patience=p["patience"], val_min=p["val_min"], batch_size=p["batch_size"],
                n_mc=p["n_mc"], lr=p["lr"], mc_pool=p["mc_pool"],
                net_kw=dict(channels=p["channels"], hidden=p["channels"]), device=p["device"],
                show_progress=False, **extra)
    scores = predict(model, lab.tokens)
    curve = precision_at_recall(lab.label, scores)
    return dict(row, train_cells=tr.n_sorted, train_moi=float(tr.moi),
                pr_auc=pr_auc(lab.label, scores),
                pr_auc_fresh=pr_auc(fresh.label, predict(model, fresh.tokens)),
                precision_at_recall=json.dumps([float(x) for x in curve]),
                epochs_run=model.epochs_run, bound=bool(model.bound),
                fit_cpu_seconds=model.cpu_seconds)


def lab_splits_frame(table: Any, ablation: bool = False) -> Any:
    """The chapter ``lab_splits``'s per-fit frame (``method``, ``MOI``, ``rep``, ``train cells``,
    ``PR AUC``, ``PR AUC, fresh sequences``, ``epochs``, ``bound``, ``cpu s``) from a
    ``lab-splits`` sweep table; the full training set is labelled by its estimated MOI. The
    rows of LIFT and conventional training, or with ``ablation`` those of :data:`NO_LEAVS`.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame(dict(status=["ok"], method=["LIFT"], target_moi=[float("nan")],
    ...     moi_hat=[1.234], replicate=[0], train_cells=[10], pr_auc=[0.5], pr_auc_fresh=[0.4],
    ...     epochs_run=[3.0], bound=[False], fit_cpu_seconds=[1.0]))
    >>> lab_splits_frame(t)["MOI"].tolist()
    [1.23]
    """
    methods = [NO_LEAVS] if ablation else ["LIFT", "conventional"]
    rows = table[(table.status == "ok") & table.method.isin(methods)]
    names = {"method": "method", "MOI": "MOI", "replicate": "rep", "train_cells": "train cells",
             "pr_auc": "PR AUC", "pr_auc_fresh": "PR AUC, fresh sequences",
             "epochs_run": "epochs", "bound": "bound", "fit_cpu_seconds": "cpu s"}
    rows = rows.assign(MOI=rows.target_moi.fillna(rows.moi_hat).round(2))[list(names)]
    return rows.rename(columns=names).reset_index(drop=True)


def lab_splits_curves(table: Any) -> dict[tuple[str, float, int], np.ndarray]:
    """The precision at each recall of :data:`RECALL_GRID` (:func:`precision_at_recall`) of
    every finished fit of a ``lab-splits`` sweep table, by (method, MOI as
    :func:`lab_splits_frame` labels it, replicate): the chapter's enrichment of hits.

    Examples
    --------
    >>> import pandas as pd
    >>> t = pd.DataFrame(dict(status=["ok"], method=["LIFT"], target_moi=[0.3], moi_hat=[1.2],
    ...                       replicate=[0], precision_at_recall=["[0.5, 0.25]"]))
    >>> lab_splits_curves(t)
    {('LIFT', 0.3, 0): array([0.5 , 0.25])}
    """
    rows = table[table.status == "ok"]
    moi = rows.target_moi.fillna(rows.moi_hat).round(2)
    return {(m, float(x), int(r)): np.array(json.loads(c)) for m, x, r, c in zip(
        rows.method, moi, rows.replicate, rows.precision_at_recall, strict=True)}


def table1_grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks of SAMS-VAE Table 1 from a ``sams_vae`` profile: every (model, inference family) of
    :data:`~liftkit.perturb.experiment.TABLE1_ROWS` x each fit seed of ``seeds``.

    Examples
    --------
    >>> len(table1_grid(dict(seeds=[0, 1], seed=0)))
    16
    """
    from liftkit.perturb.experiment import TABLE1_ROWS

    skip = ("seeds", "umap", "settle_steps", "profile", "results")
    base = {k: _scalar(v) for k, v in cfg.items() if k not in skip}
    base.setdefault("seed", 0)
    base.setdefault("device", "auto")
    return [dict(base, task="table1", model=m, guide=g, fit_seed=int(s))
            for s in cfg["seeds"] for m, g in TABLE1_ROWS]


@lru_cache(maxsize=2)
def _table1_setup(key: str) -> tuple:
    """The chapter's cells, split, data DE and truth (cached per process)."""
    from liftkit.perturb.experiment import table1_data

    p = json.loads(key)
    dataset = p.pop("dataset")
    _, train, test, de, truth = table1_data(p, dataset)
    return train, test, de, truth if dataset == "synthetic_perturb_seq" else None


def table1_task(p: dict[str, Any]) -> dict[str, Any]:
    """One Table 1 fit: :func:`~liftkit.perturb.experiment.table1_fit` (ELBO of eq. 3).

    Examples
    --------
    >>> table1_task(table1_grid(load_profile("sams_vae", "smoke"))[0])  # doctest: +SKIP
    """
    from liftkit.perturb.experiment import table1_fit

    _threads(p)
    data_keys = ("n_cells", "n_genes", "n_latent", "n_pathways", "perts_per_pathway",
                 "pathway_dims", "effect_scale", "seed", "dataset")
    train, test, de, truth = _table1_setup(json.dumps({k: p[k] for k in data_keys}))
    fit_kw = {k: p[k] for k in ("max_epochs", "batch_size", "lr", "mask_lr", "eval_every",
                                "patience", "lr_schedule", "n_latent", "hidden", "alpha")}
    eval_kw = dict(iwelbo_particles=p["iwelbo_particles"], ate_particles=p["ate_particles"],
                   rf_repeats=p["rf_repeats"], rf_trees=p["rf_trees"],
                   top_k=min(20, p["n_genes"]))
    row, _ = table1_fit(p["model"], p["guide"], train, test, de, truth, seed=p["fit_seed"],
                        fit_kw=fit_kw, eval_kw=eval_kw, device=p["device"])
    for k in ("model", "guide", "seed"):
        row.pop(k)
    return dict(row, bound=bool(row["bound_by_budget"]))


#: Columns of a Table 1 row (:func:`~liftkit.perturb.experiment.table1_fit`) in its order:
#: metrics (those a fit lacks are left out of its row), then the fit, then its training record.
TABLE1_METRICS = ("iwelbo", "ate_pearson", "ate_pearson_overall", "ate_pearson_top",
                  "mask_accuracy", "mask_f1", "mask_recall", "mask_precision",
                  "pathway_accuracy", "mcc", "eval_seconds")
TABLE1_RECORD = ("max_steps", "steps", "best_step", "epochs", "stopped_early",
                 "bound_by_budget", "cpu_seconds", "train_seconds")
#: Provenance columns a sweep row carries (:func:`liftkit.perturb.experiment.provenance`).
PROVENANCE = ("liftkit_version", "git_commit", "git_tree", "torch_version", "device", "python")


def table1_frame(table: Any) -> Any:
    """The frame :func:`~liftkit.perturb.experiment.run_table1` returns (SAMS-VAE Table 1: one
    row per fit, metrics then ``model``, ``inference``, ``guide``, ``seed`` (the fit seed) and
    the training record), from the finished rows of a ``table1`` sweep table, followed by their
    provenance columns as in the committed ``book/results/table1.csv``.

    ``table`` is a DataFrame or a Parquet path (:func:`read_sweep` checks it).

    Examples
    --------
    >>> frame = table1_frame("runs/table1.parquet")  # doctest: +SKIP
    >>> list(frame.columns[:2])  # doctest: +SKIP
    ['iwelbo', 'ate_pearson']
    """
    import pandas as pd

    table = read_sweep(table, "table1")
    ok = table[table.status == "ok"]
    out = []
    for r in ok.to_dict("records"):
        row = {k: r[k] for k in TABLE1_METRICS if k in r and not pd.isna(r[k])}
        row.update(model=r["model"], inference=r["inference"], guide=r["guide"],
                   seed=int(r["fit_seed"]), **{k: r[k] for k in TABLE1_RECORD})
        out.append(row)
    frame = pd.DataFrame(out)
    return frame.assign(**{k: ok[k].to_numpy() for k in PROVENANCE if k in ok})


def lifted_grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Tasks of the lifted perturb-seq MOI grid from a ``lifted_perturbseq`` profile: every MOI
    of ``moi_grid`` x ``replicates`` x design (:data:`~liftkit.perturb.lifted.DESIGNS`: all
    cells of the screen, or its single-guide cells only).

    Examples
    --------
    >>> len(lifted_grid(dict(moi_grid=[0.3, 1.0], replicates=2, seed=0)))
    8
    """
    from liftkit.perturb.lifted import DESIGNS

    keys = ("n_genes", "n_latent", "n_pathways", "perts_per_pathway", "pathway_dims",
            "effect_scale", "guide", "hidden", "batch_size", "lr", "mask_lr", "lr_schedule",
            "alpha", "eval_every", "patience", "max_steps", "top_k", "ate_particles", "n_cells",
            "heldout_cells", "n_control", "threads", "seed", "device")
    base = {k: _scalar(cfg.get(k)) for k in keys if k in cfg}
    base.setdefault("seed", 0)
    base.setdefault("device", "auto")
    return [dict(base, task="lifted", moi=float(m), replicate=r, design=d)
            for m in cfg["moi_grid"] for r in range(int(cfg["replicates"])) for d in DESIGNS]


@lru_cache(maxsize=2)
def _lifted_setup(key: str) -> tuple:
    """The chapter's truth, held-out single-guide cells with their DE, and the truth's own
    scores against them (cached per process)."""
    from liftkit.perturb.combinations import simulated_truth
    from liftkit.perturb.lifted import heldout_singles, oracle_singles

    p = json.loads(key)
    truth = simulated_truth(n_genes=p["n_genes"], n_latent=p["n_latent"],
                            n_pathways=p["n_pathways"], perts_per_pathway=p["perts_per_pathway"],
                            pathway_dims=p["pathway_dims"], effect_scale=p["effect_scale"],
                            seed=p["seed"])
    heldout = heldout_singles(truth, p["heldout_cells"], p["n_control"], seed=p["seed"])
    oracle = oracle_singles(truth, heldout[1], n_cells=max(p["heldout_cells"], 200),
                            top_k=p["top_k"], seed=p["seed"])
    return truth, heldout, oracle


def lifted_task(p: dict[str, Any]) -> dict[str, Any]:
    """One fit of the lifted MOI grid: :func:`~liftkit.perturb.lifted.lifted_fit` (SAMS-VAE,
    ELBO of eq. 3, on a Poisson(MOI) screen, LIFT eq. 5) scored against the truth; adds the
    truth's own ATE-Pearson (``oracle_ate_pearson``, ``oracle_ate_pearson_top``) as the ceiling.

    Examples
    --------
    >>> lifted_task(lifted_grid(load_profile("lifted_perturbseq", "smoke"))[0])  # doctest: +SKIP
    """
    from liftkit.perturb.lifted import lifted_fit

    _threads(p)
    setup = ("n_genes", "n_latent", "n_pathways", "perts_per_pathway", "pathway_dims",
             "effect_scale", "heldout_cells", "n_control", "top_k", "seed")
    truth, heldout, oracle = _lifted_setup(json.dumps({k: p[k] for k in setup}))
    fit_kw = dict(steps=p["max_steps"], **{k: p[k] for k in (
        "batch_size", "lr", "mask_lr", "eval_every", "patience", "lr_schedule", "n_latent",
        "hidden", "alpha")})
    row = lifted_fit(truth, p["n_cells"], p["moi"], int(p["replicate"]), p["design"], fit_kw,
                     heldout, guide=p["guide"], ate_particles=p["ate_particles"],
                     top_k=p["top_k"], device=p["device"])
    for k in ("moi", "replicate", "design"):
        row.pop(k)
    return dict(row, oracle_ate_pearson=oracle["ate_pearson"],
                oracle_ate_pearson_top=oracle["ate_pearson_top"],
                bound=bool(row["bound_by_budget"]))


def demo_grid(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """A grid of ``n_tasks`` equal CPU-bound tasks (:func:`demo_task`), for tests and benchmarks.

    Examples
    --------
    >>> [t["index"] for t in demo_grid(dict(n_tasks=3, size=8, steps=2))]
    [0, 1, 2]
    """
    fail = set(cfg.get("fail") or [])
    return [dict(task="demo", index=i, size=int(cfg["size"]), steps=int(cfg["steps"]),
                 seed=int(cfg.get("seed", 0)) + i, fail=i in fail) for i in range(cfg["n_tasks"])]


def demo_task(p: dict[str, Any]) -> dict[str, Any]:
    """Least squares by ``steps`` gradient steps on a seeded ``size`` x ``size`` system (raises
    when ``fail``): deterministic work of a known cost. Returns the final residual norm.

    Examples
    --------
    >>> row = demo_task(dict(size=4, steps=0, seed=0, fail=False))
    >>> row["residual"] > 0 and not row["bound"]
    True
    """
    if p.get("fail"):
        raise RuntimeError(f"task {p.get('index')} failed on purpose")
    _threads(p)
    gen = torch.Generator().manual_seed(int(p["seed"]))
    a = torch.randn(p["size"], p["size"], generator=gen, dtype=torch.float64)
    b = torch.randn(p["size"], generator=gen, dtype=torch.float64)
    x = torch.zeros_like(b)
    step = 1.0 / float(torch.linalg.matrix_norm(a, ord=2)) ** 2
    for _ in range(p["steps"]):  # the loop is the work being timed, not a hot path
        x = x - step * (a.T @ (a @ x - b))
    return dict(residual=float(torch.linalg.vector_norm(a @ x - b)), bound=False)


#: Task name -> task function (a task's ``task`` key).
TASKS: dict[str, Callable[[dict], dict]] = {
    "fig2": fig2_task, "lab-splits": lab_splits_task, "table1": table1_task,
    "lifted": lifted_task, "demo": demo_task,
}

#: Grid name -> (chapter whose profile it reads, grid builder).
GRIDS: dict[str, tuple[str, Callable[[dict], list[dict]]]] = {
    "fig2": ("moi_experiment", fig2_grid),
    "lab-splits": ("lab_splits", lab_splits_grid),
    "table1": ("sams_vae", table1_grid),
    "lifted": ("lifted_perturbseq", lifted_grid),
}
