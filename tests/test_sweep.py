"""Sweeps on Dask (liftkit.companion.sweep): same rows as in-process, resume, failures recorded,
atomic tables, the Figure 2 and lifted tasks equal to the chapters' in-kernel fits, committed tables
verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from liftkit.companion import grids
from liftkit.companion.sweep import build_grid, run_sweep, sweep_client, verify_table
from liftkit.perturb.combinations import simulated_truth
from liftkit.perturb.lifted import (
    DESIGNS,
    heldout_singles,
    lifted_fit,
    oracle_singles,
    run_lifted,
)
from liftkit.utils import repo_root

DEMO = {"n_tasks": 4, "size": 30, "steps": 50}
RESULT_COLUMNS = ["task_id", "task", "index", "seed", "status", "error", "residual", "params"]


def _numpy_residual(size: int, steps: int, seed: int) -> float:
    """The demo task recomputed with NumPy: gradient descent on ||Ax - b||^2 / 2, step 1/||A||^2."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(size, size, generator=gen, dtype=torch.float64).numpy()
    b = torch.randn(size, generator=gen, dtype=torch.float64).numpy()
    x, step = np.zeros(size), 1.0 / np.linalg.norm(a, 2) ** 2
    for _ in range(steps):
        x = x - step * a.T @ (a @ x - b)
    return float(np.linalg.norm(a @ x - b))


def test_demo_task_matches_numpy():
    row = grids.demo_task({"size": 12, "steps": 40, "seed": 3, "fail": False})
    assert row["residual"] == pytest.approx(_numpy_residual(12, 40, 3), rel=1e-10)


@pytest.fixture(scope="module")
def scheduler():
    """The address of a LocalCluster with 2 single-threaded worker processes (sweep_client)."""
    with sweep_client(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        yield client.scheduler.address


def test_local_cluster_gives_the_in_process_rows(tmp_path, scheduler):
    local = run_sweep("demo", DEMO, output=tmp_path / "a.parquet", workers=0,
                      show_progress=False)
    dask = run_sweep("demo", DEMO, output=tmp_path / "b.parquet", scheduler=scheduler,
                     show_progress=False)
    pd.testing.assert_frame_equal(local[RESULT_COLUMNS], dask[RESULT_COLUMNS])
    assert list(dask.status) == ["ok"] * 4
    assert dask.residual.tolist() == pytest.approx(
        [_numpy_residual(30, 50, i) for i in range(4)], rel=1e-10)
    on_disk = pd.read_parquet(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(on_disk[RESULT_COLUMNS], dask[RESULT_COLUMNS])
    for col in ("liftkit_version", "git_commit", "torch_version", "device", "task_wall_seconds",
                "task_cpu_seconds", "bound"):
        assert on_disk[col].notna().all(), col


def _counting(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = grids.demo_task

    def counted(p):
        calls.append(p["index"])
        return real(p)

    monkeypatch.setitem(grids.TASKS, "demo", counted)
    return calls


def test_resume_skips_done_tasks(tmp_path, monkeypatch):
    out = tmp_path / "t.parquet"
    calls = _counting(monkeypatch)
    first = run_sweep("demo", {**DEMO, "n_tasks": 3}, output=out, workers=0, show_progress=False)
    assert calls == [0, 1, 2]
    second = run_sweep("demo", DEMO, output=out, workers=0, show_progress=False)
    assert calls == [0, 1, 2, 3]  # only the new task ran
    pd.testing.assert_frame_equal(second.iloc[:3].reset_index(drop=True)[first.columns], first)
    run_sweep("demo", DEMO, output=out, workers=0, show_progress=False)
    assert calls == [0, 1, 2, 3]  # nothing left to do


def test_failing_task_is_recorded_and_others_finish(tmp_path, monkeypatch, scheduler):
    out = tmp_path / "t.parquet"
    table = run_sweep("demo", {**DEMO, "fail": [1]}, output=out, scheduler=scheduler,
                      show_progress=False)
    assert list(table.status) == ["ok", "error", "ok", "ok"]
    assert "RuntimeError: task 1 failed on purpose" in table.error[1]
    assert table.residual.notna().tolist() == [True, False, True, True]
    # a rerun retries the failed task only
    calls = _counting(monkeypatch)
    run_sweep("demo", {**DEMO, "fail": [1]}, output=out, workers=0, show_progress=False)
    assert calls == [1]  # the failed task is retried, the done ones are not


def test_interrupted_sweep_leaves_a_complete_table(tmp_path, monkeypatch):
    out = tmp_path / "t.parquet"
    real = grids.demo_task

    def interrupt_third(p):
        if p["index"] == 2:
            raise KeyboardInterrupt  # a user's Ctrl-C in the middle of the sweep
        return real(p)

    monkeypatch.setitem(grids.TASKS, "demo", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("demo", DEMO, output=out, workers=0, show_progress=False)
    table = pd.read_parquet(out)
    assert table["index"].tolist() == [0, 1] and list(table.status) == ["ok", "ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_failed_write_keeps_the_previous_table(tmp_path, monkeypatch):
    out = tmp_path / "t.parquet"
    run_sweep("demo", {**DEMO, "n_tasks": 2}, output=out, workers=0, show_progress=False)
    before = out.read_bytes()

    def half_write(self, path, **kw):
        Path(path).write_bytes(b"PAR1 half a table")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half_write)
    with pytest.raises(OSError, match="disk full"):
        run_sweep("demo", DEMO, output=out, workers=0, show_progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_unknown_sweep_and_parameter_are_errors():
    with pytest.raises(ValueError, match="unknown sweep"):
        build_grid("fig3")
    with pytest.raises(ValueError, match="no_such"):
        build_grid("fig2", {"no_such": 1})


def test_grids_follow_the_profiles():
    fig2 = build_grid("fig2", {"profile": "smoke", "n_cells": 999})
    assert len(fig2) == 2 * 1 * 2 and set(fig2.n_cells) == {999}  # MOIs x replicates x methods
    full = build_grid("fig2", {"profile": "default", "alt_setting": True})
    counts = full.variant.value_counts().to_dict()
    # default: 5 MOIs x 3 replicates x 2 methods; two ablations x 3 replicates; alt: 3 x 2 x 2
    assert counts == {"main": 30, "ablation": 6, "alt": 12}
    assert set(full[full.variant == "alt"].threshold) == {20.0}
    table1 = build_grid("table1", {"profile": "smoke", "seeds": [0, 1]})
    assert len(table1) == 8 * 2 and table1.task_id.is_unique
    lab = build_grid("lab-splits", {"profile": "smoke"})
    assert len(lab) == (1 + 1) * 1 * 2  # (target MOIs + full set) x replicates x methods


def test_lifted_grid_and_tasks_equal_the_direct_fits(tmp_path):
    """The lifted grid has one task per (MOI, replicate, design); two of its tasks, run as a
    sweep in-process, give the metrics of run_lifted and lifted_fit at the same parameters."""
    tiny = {"profile": "smoke", "moi_grid": [0.5, 2.0, 3.0], "replicates": 2, "n_cells": 200,
            "max_steps": 20, "eval_every": 10, "hidden": 8, "n_genes": 12, "ate_particles": 4,
            "top_k": 4, "heldout_cells": 10, "n_control": 30, "device": "cpu"}
    grid = build_grid("lifted", tiny)
    keys = set(zip(grid.moi, grid.replicate, grid.design, strict=True))
    assert len(grid) == 3 * 2 * 2 and grid.task_id.is_unique  # MOIs x replicates x designs
    assert keys == {(m, r, d) for m in (0.5, 2.0, 3.0) for r in (0, 1) for d in DESIGNS}
    assert set(grid.n_cells) == {200} and set(grid.max_steps) == {20}
    picks = [(2.0, 0, DESIGNS[0]), (2.0, 1, DESIGNS[1])]
    tasks = [json.loads(grid.params[(grid.moi == m) & (grid.replicate == r)
                                     & (grid.design == d)].item()) for m, r, d in picks]
    table = run_sweep(tasks, output=tmp_path / "l.parquet", workers=0, show_progress=False)
    assert list(table.status) == ["ok", "ok"], table.error.tolist()
    # the chapter's construction, by hand from book/profiles/lifted_perturbseq.yaml (common)
    truth = simulated_truth(n_genes=12, n_latent=6, n_pathways=3, perts_per_pathway=3,
                            pathway_dims=2, effect_scale=1.5, seed=0)
    held = heldout_singles(truth, 10, 30, seed=0)
    fit_kw = dict(steps=20, batch_size=128, lr=0.01, mask_lr=0.1, eval_every=10, patience=2,
                  lr_schedule="plateau", n_latent=6, hidden=8, alpha=0.1)
    score = dict(guide="corr_basal", ate_particles=4, top_k=4, device="cpu")
    first = run_lifted(truth, n_cells=200, mois=[2.0], replicates=1, fit_kw=fit_kw,
                       heldout=held, **score).iloc[0].to_dict()
    second = lifted_fit(truth, 200, 2.0, 1, DESIGNS[1], fit_kw, held, **score)
    oracle = oracle_singles(truth, held[1], n_cells=200, top_k=4, seed=0)
    for row, ref in zip(table.to_dict("records"), (first, second), strict=True):
        for col in ("cells", "steps", "best_step", "bound_by_budget"):
            assert row[col] == ref[col], col
        for col in ("mask_f1", "embedding_r", "ate_pearson", "ate_pearson_top", "mean_guides"):
            assert row[col] == pytest.approx(ref[col], abs=1e-9), col
        assert row["oracle_ate_pearson"] == pytest.approx(oracle["ate_pearson"], abs=1e-9)


@pytest.mark.slow
def test_fig2_sweep_rows_equal_the_in_kernel_experiment(tmp_path):
    """The sweep's rows, turned into the chapter's frame, are moi_experiment's own rows."""
    from liftkit.lift.experiment import moi_experiment
    from liftkit.lift.library import make_library
    from liftkit.lift.oracle import Oracle

    cfg = dict(mois=[1.0, 3.0], replicates=1, ablation=False, alt_setting=False, n_cells=400,
               epochs=2, batch_size=64, lr=0.01, patience=5, val_min=20, s0=0.1, mult=10.0,
               compound=True, threshold=0.0, label_threshold=10.0, patterns="paper",
               library="olga", library_pool=20000, n_test=3000, channels=4, threads=1, seed=0,
               device="cpu")
    table = run_sweep(grids.fig2_grid(cfg), output=tmp_path / "f.parquet", workers=0,
                      show_progress=False)
    frame = grids.fig2_frame(table)
    lib = make_library("olga", pool_size=20000, seed=0)
    fit_kw = dict(epochs=2, batch_size=64, lr=0.01, n_mc=128, patience=5, val_min=20,
                  mc_pool=20000, net_kw=dict(channels=4, hidden=4))
    ref = moi_experiment(lib, [1.0, 3.0], 400, 1, ("LIFT", "conventional"), oracle=Oracle(),
                         n_test=3000, fit_kw=fit_kw, seed=0, device="cpu").table
    ref = ref.sort_values(["moi", "replicate", "method"]).reset_index(drop=True)
    for col in ("moi", "replicate", "method", "n_sorted", "pr_auc", "best_step", "bound"):
        assert frame[col].tolist() == ref[col].tolist(), col


@pytest.mark.slow
def test_committed_fig2_table_recomputes():
    """Three cheap rows of the committed Figure 2 sweep, spread over MOIs and methods,
    recomputed on the CPU from their recorded parameters, within the replicate sd."""
    path = repo_root() / "book" / "results" / "fig2_scale.parquet"
    table = pd.read_parquet(path)
    assert (table.status == "ok").all()
    cheap = table[table.moi <= 1.0].sort_values("task_cpu_seconds")
    methods = ("LIFT", "conventional")
    picks = [cheap[(cheap.moi == m) & (cheap.method == methods[i % 2])].index[0]
             for i, m in enumerate(sorted(cheap.moi.unique())[:3])]
    report = verify_table(table, picks)
    assert len(report) == len(picks) and report.ok.all(), report


def test_verify_flags_a_tampered_row(tmp_path):
    table = run_sweep("demo", DEMO, output=tmp_path / "t.parquet", workers=0,
                      show_progress=False)
    table.loc[2, "residual"] += 1.0  # a row that was not produced by its parameters
    report = verify_table(table, [0, 2], floor=1e-9)
    assert report.ok.tolist() == [True, False]

