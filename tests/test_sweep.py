"""Sweeps on Dask (liftkit.companion.sweep): same rows as in-process, resume, failures recorded,
atomic tables, the Figure 2 and lifted tasks equal to the chapters' in-kernel fits, committed tables
verified; the lab-splits and SAMS-VAE chapters read their sweeps' tables (-p results)."""

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
    # (target MOIs + full set) x replicates x methods, then LIFT without LeaVS x replicates
    assert len(lab) == (1 + 1) * 1 * 2 + 1 and list(lab.method).count(grids.NO_LEAVS) == 1


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



# ---- chapters that read a sweep's table (-p results) ------------------------------------------

#: A lab-splits screen small enough for seconds: the smoke profile with these overrides.
LAB_TINY = {"n_cells": 20000, "epochs": 2, "channels": 4, "mc_pool": 500, "n_fresh": 2000}
#: The lab-splits chapter's per-fit frame (book/lab_splits.md, Step 4).
LAB_COLUMNS = ["method", "MOI", "rep", "train cells", "PR AUC", "PR AUC, fresh sequences",
               "epochs", "bound", "cpu s"]


@pytest.fixture(scope="module")
def lab_table(tmp_path_factory):
    """A tiny lab-splits sweep run in-process: 2 levels x 1 replicate x 2 methods + 1 ablation."""
    out = tmp_path_factory.mktemp("lab") / "lab-splits.parquet"
    table = run_sweep("lab-splits", {"profile": "smoke", "device": "cpu", **LAB_TINY},
                      output=out, workers=0, show_progress=False)
    assert list(table.status) == ["ok"] * 5, table.error.tolist()
    return out


@pytest.fixture(scope="module")
def table1_table(tmp_path_factory):
    """A tiny Table 1 sweep run in-process: the smoke profile at two epochs, fit seed 1 (the
    data seed stays 0, so the two cannot be confused)."""
    out = tmp_path_factory.mktemp("t1") / "table1.parquet"
    table = run_sweep("table1", {"profile": "smoke", "max_epochs": 2, "seeds": [1],
                                 "device": "cpu"},
                      output=out, workers=0, show_progress=False)
    assert list(table.status) == ["ok"] * 8, table.error.tolist()
    return out


def test_lab_splits_frame_holds_the_rows(lab_table):
    table = pd.read_parquet(lab_table)
    main, abl = grids.lab_splits_frame(table), grids.lab_splits_frame(table, ablation=True)
    assert list(main.columns) == LAB_COLUMNS and list(abl.columns) == LAB_COLUMNS
    rows = table[table.method != grids.NO_LEAVS].reset_index(drop=True)
    moi_hat = round(float(table.moi_hat[0]), 2)  # the full training set is labelled by it
    assert main.MOI.tolist() == [0.3, 0.3, moi_hat, moi_hat]
    assert main.method.tolist() == ["LIFT", "conventional"] * 2
    for col, src in [("PR AUC", "pr_auc"), ("PR AUC, fresh sequences", "pr_auc_fresh"),
                     ("train cells", "train_cells"), ("epochs", "epochs_run"),
                     ("bound", "bound"), ("rep", "replicate")]:
        assert main[col].tolist() == rows[src].tolist(), col
    ablated = table[table.method == grids.NO_LEAVS]
    assert abl.method.tolist() == [grids.NO_LEAVS] and abl.MOI.tolist() == [moi_hat]
    assert abl["PR AUC"].tolist() == ablated.pr_auc.tolist()
    curves = grids.lab_splits_curves(table)
    assert sorted(curves) == sorted({(m, x, 0) for m, x in zip(
        main.method.tolist() + [grids.NO_LEAVS], main.MOI.tolist() + [moi_hat], strict=True)})
    first = curves["LIFT", 0.3, 0]
    assert first.shape == (19,) and first.tolist() == json.loads(table.precision_at_recall[0])
    assert ((first >= 0) & (first <= 1)).all()


def test_profile_differences_name_the_parameters(lab_table):
    from liftkit.companion.profiles import load_profile

    table = pd.read_parquet(lab_table)
    cfg = load_profile("lab_splits", "smoke", **LAB_TINY)
    assert grids.profile_differences(table, "lab-splits", cfg) == []
    assert grids.profile_differences(table, "lab-splits", {**cfg, "device": "cuda"}) == []
    smoke = load_profile("lab_splits", "smoke", epochs=2, channels=4, mc_pool=500, n_fresh=2000)
    assert grids.profile_differences(table, "lab-splits", smoke) == [
        "n_cells: table 20000, profile 150000"]
    more = grids.profile_differences(table, "lab-splits", {**cfg, "replicates": 2})
    assert len(more) == 1 and more[0].startswith("tasks (") and "5 in common" in more[0]
    assert grids.sweep_parameters(table)["n_cells"] == 20000


def test_a_table_of_the_wrong_grid_or_without_columns_is_a_clear_error(lab_table, table1_table):
    lab = pd.read_parquet(lab_table)
    with pytest.raises(ValueError, match="a 'lab-splits' sweep, not 'table1'.*liftkit sweep table1"):
        grids.table1_frame(lab)
    with pytest.raises(ValueError, match="not 'lab-splits'"):
        grids.read_sweep(table1_table, "lab-splits")
    with pytest.raises(ValueError, match=r"lacks the columns \['precision_at_recall'\]"):
        grids.read_sweep(lab.drop(columns="precision_at_recall"), "lab-splits")
    with pytest.raises(ValueError, match="no finished task"):
        grids.read_sweep(lab.assign(status="error"), "lab-splits")


def test_table1_frame_is_run_table1s_frame(table1_table, one_thread):
    """The sweep's rows read back are the rows run_table1 trains in the chapter's kernel, with
    its columns in its order (data and settings by hand from book/profiles/sams_vae.yaml)."""
    from liftkit.perturb.experiment import run_table1, table1_data

    frame = grids.table1_frame(table1_table)
    _, train, test, de, truth = table1_data(dict(
        n_cells=500, n_genes=30, n_latent=4, n_pathways=2, perts_per_pathway=3, pathway_dims=2,
        effect_scale=1.5, seed=0))
    fit_kw = dict(max_epochs=2, batch_size=128, lr=0.01, mask_lr=0.1, eval_every=10,
                  patience=3, lr_schedule="plateau", n_latent=4, hidden=16, alpha=0.01)
    eval_kw = dict(iwelbo_particles=10, ate_particles=20, rf_repeats=2, rf_trees=10, top_k=20)
    ref, _ = run_table1(train, test, de, truth, seeds=[1], fit_kw=fit_kw, eval_kw=eval_kw,
                        device="cpu")
    assert list(frame.columns[:len(ref.columns)]) == list(ref.columns)
    assert set(frame.columns[len(ref.columns):]) <= set(grids.PROVENANCE)
    timings = {"eval_seconds", "cpu_seconds", "train_seconds"}
    for col in ref.columns.difference(sorted(timings)):
        if ref[col].dtype.kind == "f":
            np.testing.assert_allclose(frame[col], ref[col], rtol=1e-6, err_msg=col)
        else:
            assert frame[col].tolist() == ref[col].tolist(), col


def _outputs(nb) -> list[str]:
    """The text outputs (streams and plain-text displays) of each code cell."""
    return ["".join(o.get("text", "") or o.get("data", {}).get("text/plain", "")
                    for o in c.outputs) for c in nb.cells if c.cell_type == "code"]


@pytest.mark.slow
def test_lab_splits_chapter_draws_the_same_page_from_a_sweep(lab_table, tmp_path, monkeypatch):
    """The chapter at the tiny profile, trained in its kernel and read from the sweep table:
    every output but the parameter table is the same (figures, summaries, claims)."""
    from liftkit.companion.runner import run_chapter

    monkeypatch.setenv("LIFTKIT_CLAIMS_DIR", str(tmp_path / "claims"))
    params = {"profile": "smoke", **LAB_TINY}
    live = _outputs(run_chapter("book/lab_splits.md", None, params))
    read = _outputs(run_chapter("book/lab_splits.md", None, {**params, "results": str(lab_table)}))
    assert "differs from" not in "".join(read)
    differ = [i for i, (a, b) in enumerate(zip(live, read, strict=True)) if a != b]
    # only the table of resolved parameters, where `results` is None in one and a path in the other
    assert len(differ) == 1 and "results    None" in live[differ[0]]
    assert "LIFT (no LeaVS)" in "".join(read) and "LIFT @ high MOI" in "".join(read)


@pytest.mark.slow
def test_sams_vae_chapter_reads_a_table1_sweep(table1_table, lab_table, tmp_path, monkeypatch):
    from liftkit.companion.runner import run_chapter

    monkeypatch.setenv("LIFTKIT_CLAIMS_DIR", str(tmp_path / "claims"))
    nb = run_chapter("book/sams_vae.md", None, {"profile": "smoke", "results": str(table1_table)})
    text = "".join(_outputs(nb))
    # the profile's 25 epochs against the table's 2: said, not fatal
    assert "differs from the 'smoke' profile in max_epochs: table 2, profile 25" in text
    assert "sweep fits: 8" in text and "live fits:" not in text
    assert text.count("drawn from live fits only") == 6  # settling, masks, ATE, PPC, UMAP, kNN
    table = pd.read_parquet(table1_table)
    for row in table.itertuples():  # one seed: the converged table's means are the rows
        assert f"{row.model:16s} {row.inference:20s} IWELBO {row.iwelbo:8.1f}" in text
    with pytest.raises(RuntimeError, match="not 'table1'"):
        run_chapter("book/sams_vae.md", None, {"profile": "smoke", "results": str(lab_table)})
