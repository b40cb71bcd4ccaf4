"""Held-out combinations of a measured screen: the GEARS-style split read from a real dosage, and
the combinations chapter run on a small file in the provider's (scPerturb's) format, offline."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from liftkit.data.fixtures import norman_like_screen, stage_download
from liftkit.data.perturbseq import load_scperturb
from liftkit.perturb.combinations import (
    CATEGORIES,
    additive_prediction,
    dosage_combination_split,
    energy_distance,
    predict_combinations,
    split_screen,
)

# Loader settings for files this small (the manifest's are for Norman's 100k cells).
SMALL = {"min_genes": 5, "min_cells": 3, "n_top_genes": 20}


@pytest.fixture(scope="module")
def screen(tmp_path_factory):
    path = tmp_path_factory.mktemp("norman") / "NormanWeissman2019_filtered.h5ad"
    norman_like_screen().write_h5ad(path)
    return load_scperturb(path, control_labels=["control", "ctrl"], **SMALL)


def hand_pairs(screen):
    """Distinct pairs of the provider's labels with nperts == 2, as sorted name tuples."""
    obs = screen.obs
    two = obs.loc[obs["nperts"] == 2, "provider_perturbation"].astype(str)
    return sorted({tuple(sorted(label.split("_"))) for label in two})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_categories_hold_by_hand(screen, seed):
    split = dosage_combination_split(screen, unseen_frac=0.34, test_frac=0.4, seed=seed)
    names = list(screen.obsm["dosage"].columns)
    got = sorted(tuple(sorted((names[a], names[b]))) for a, b in zip(split["a"], split["b"], strict=True))
    assert got == hand_pairs(screen)  # every measured pair once, no three-guide cell
    train, test = split_screen(screen, split)
    d_train = train.obsm["dosage"].to_numpy()
    d_test = test.obsm["dosage"].to_numpy()
    single = d_train.sum(1) == 1
    for row in split.itertuples():
        members = (row.a, row.b)
        alone = [int((single & (d_train[:, t] == 1)).sum()) for t in members]
        seen = sum(n > 0 for n in alone)
        assert row.category == f"seen{seen}", (row.combination, alone)
        carries = (d_train[:, list(members)].sum(1) == 2) & (d_train.sum(1) == 2)
        in_test = (d_test[:, list(members)].sum(1) == 2) & (d_test.sum(1) == 2)
        if row.test:  # a held-out pair has no training cell, all its cells are in test
            assert carries.sum() == 0 and in_test.sum() == row_cells(screen, members)
        else:
            assert carries.sum() == row_cells(screen, members) and in_test.sum() == 0
    # the held-out singles: round(unseen_frac x paired members that were measured alone)
    d = screen.obsm["dosage"].to_numpy()
    measured_alone = {t for t in range(d.shape[1]) if ((d.sum(1) == 1) & (d[:, t] == 1)).any()}
    paired = set(split["a"]) | set(split["b"])
    unseen = set(split.attrs["unseen"])
    assert unseen <= paired & measured_alone
    assert len(unseen) == round(0.34 * len(paired & measured_alone))
    # in each category: round(test_frac x its pairs) held out, at least one
    for cat, rows in split.groupby("category"):
        assert rows["test"].sum() == max(1, round(0.4 * len(rows))), cat
    assert set(split["category"]) == set(CATEGORIES)  # this fixture has all three


def row_cells(screen, members):
    """Cells of the screen that carry exactly the pair ``members``, by hand."""
    d = screen.obsm["dosage"].to_numpy()
    return int(((d[:, list(members)].sum(1) == 2) & (d.sum(1) == 2)).sum())


def test_a_member_never_measured_alone_is_unseen(screen):
    split = dosage_combination_split(screen, unseen_frac=0.0, seed=0)
    names = list(screen.obsm["dosage"].columns)
    lonely = names.index("T08")  # the fixture measures T08 only in pairs
    with_lonely = (split["a"] == lonely) | (split["b"] == lonely)
    assert (split.loc[with_lonely, "category"] == "seen1").all()
    assert (split.loc[~with_lonely, "category"] == "seen2").all()  # no singles held out
    assert split.loc[with_lonely, ["a_single_cells", "b_single_cells"]].min(1).eq(0).all()


def test_a_screen_without_pairs_is_refused(screen):
    singles = screen[screen.obsm["dosage"].to_numpy().sum(1) <= 1].copy()
    with pytest.raises(ValueError, match="no cells with two perturbations"):
        dosage_combination_split(singles)


def test_energy_distance_with_unequal_groups_by_hand():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 6, 4))
    y = rng.normal(size=(20, 4)) + 0.3
    groups = np.array([0] * 2 + [2] * 11 + [-1] * 3 + [0] * 4)  # group 1 has no cell
    got = energy_distance(x, y, groups)
    for q in (0, 2):
        obs = y[groups == q]
        want = np.sqrt(2 * cdist(x[q], obs).mean() - cdist(x[q], x[q]).mean()
                       - cdist(obs, obs).mean())
        np.testing.assert_allclose(got[q], want, rtol=1e-12)
    assert np.isnan(got[1])


def test_additive_prediction_cells_are_shifted_training_controls(screen):
    dosage = np.zeros((2, screen.obsm["dosage"].shape[1]), np.float32)
    dosage[0, [0, 1]] = dosage[1, [2, 3]] = 1.0
    ate, all_cells = additive_prediction(screen, dosage)
    got_ate, cells = predict_combinations("additive", dosage, train=screen, n_cells=7, seed=4)
    np.testing.assert_array_equal(got_ate, ate)
    pick = np.sort(np.random.default_rng(4).choice(all_cells.shape[1], 7, replace=False))
    np.testing.assert_array_equal(cells, all_cells[:, pick])


def test_chapter_runs_on_a_cached_norman_file(tmp_path, root, monkeypatch):
    from liftkit.companion.runner import run_chapter

    for key, value in stage_download(norman_like_screen(), tmp_path, params=SMALL).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LIFTKIT_CLAIMS_DIR", str(tmp_path / "claims"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    start = time.perf_counter()
    nb = run_chapter(root / "book" / "lifted_perturbseq.md", tmp_path / "lp.ipynb",
                     {"profile": "smoke", "dataset": "norman2019"})
    elapsed = time.perf_counter() - start
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs if o.output_type == "stream")
    assert "norman2019: " in text and " measured pairs; singles held out" in text
    skipped = "norman2019 is a measured screen without a known truth"
    assert text.count(skipped) == 2  # the lifted screens and the interacting pair
    line = next(x for x in text.splitlines() if x.startswith("combination ATE-Pearson"))
    scores = [float(v.rsplit(" ", 1)[1]) for v in line.split(": ", 1)[1].split(", ")]
    assert len(scores) == 6 and np.isfinite(scores).all()  # two sources x three categories
    for name in ("lifted-recovery-rises-with-moi", "lifted-beats-single-guide",
                 "additivity-fails-on-interaction"):
        assert f"claim {name}: not testable here" in text
    folder = tmp_path / "claims" / "smoke-norman2019"
    verdicts = {p.stem: json.loads(p.read_text())["verdict"] for p in folder.glob("*.json")}
    untestable = ("lifted-recovery-rises-with-moi", "lifted-beats-single-guide",
                  "additivity-fails-on-interaction")
    decided = ("sams-beats-additive-on-seen2", "sams-composes-unseen-singles")
    assert sorted(verdicts) == sorted(untestable + decided)
    assert all(verdicts[n] == "not testable here" for n in untestable)
    assert all(verdicts[n] in ("reproduced", "not reproduced") for n in decided)
    assert not (tmp_path / "claims" / "smoke").exists()  # the book's records stay apart
    assert elapsed < 90, f"chapter on the fixture took {elapsed:.0f} s"
