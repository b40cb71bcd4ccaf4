"""Combination splits, the additive baseline and the energy distance, against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.perturb import SAMSVAE
from liftkit.perturb.combinations import (
    additive_prediction,
    cells_from_truth,
    combination_de,
    combination_screen,
    combination_split,
    energy_distance,
    model_cells,
    run_combinations,
    score_predictions,
    simulated_truth,
    split_screen,
)
from liftkit.perturb.evaluation import log_normalise


@pytest.fixture(scope="module")
def truth():
    return simulated_truth(n_genes=12, n_latent=4, n_pathways=2, perts_per_pathway=3, seed=1)


def test_energy_distance_matches_scipy_in_one_dimension():
    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 1.0, (2, 40))
    y = np.concatenate([rng.normal(0.5, 1.0, 30), rng.normal(-1.0, 2.0, 25)])
    groups = np.repeat([0, 1], [30, 25])
    got = energy_distance(x[:, :, None], y[:, None], groups)
    want = [stats.energy_distance(x[0], y[:30]), stats.energy_distance(x[1], y[30:])]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_energy_distance_by_hand_formula_in_two_dimensions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(1, 6, 2)), rng.normal(size=(5, 2)) + 1.0
    dist = lambda a, b: np.linalg.norm(a[:, None] - b[None], axis=-1).mean()  # noqa: E731
    want = np.sqrt(2 * dist(x[0], y) - dist(x[0], x[0]) - dist(y, y))
    # an observed cell of no group (-1) is ignored
    got = energy_distance(x, np.vstack([y, [[50.0, 50.0]]]), np.array([0] * 5 + [-1]))
    np.testing.assert_allclose(got, [want], rtol=1e-12)
    assert np.isnan(energy_distance(np.zeros((2, 3, 2)), y, np.zeros(5, int)))[1]


def test_split_counts_by_hand():
    # T = 6, all 15 pairs; 2 unseen singles: seen0 = C(2,2) = 1, seen1 = 2 * 4 = 8, seen2 = C(4,2)
    pairs = np.array([(i, j) for i in range(6) for j in range(i + 1, 6)])
    split = combination_split(pairs, 6, n_unseen=2, test_frac=0.5, seed=3)
    unseen = set(split.attrs["unseen"])
    assert len(unseen) == 2
    counts = split["category"].value_counts().to_dict()
    assert counts == {"seen0": 1, "seen1": 8, "seen2": 6}
    for row in split.itertuples():
        assert row.category == f"seen{2 - len({row.a, row.b} & unseen)}"
    held = split[split["test"]]["category"].value_counts().to_dict()
    assert held == {"seen0": 1, "seen1": 4, "seen2": 3}  # round(0.5 n), at least one


def test_split_screen_membership(truth):
    pairs = np.array([(i, j) for i in range(6) for j in range(i + 1, 6)])
    screen = combination_screen(truth, pairs, 4, 3, 50, seed=0)
    split = combination_split(pairs, 6, n_unseen=2, test_frac=0.5, seed=3)
    train, test = split_screen(screen, split, train_fraction=0.5, control_test_frac=0.3, seed=0)
    unseen = split.attrs["unseen"]
    d_train = train.obsm["dosage"].to_numpy()
    single = d_train.sum(1) == 1
    assert not d_train[single][:, unseen].any()  # unseen singles never train
    assert single.sum() == 4 * 4  # four seen perturbations, 4 cells each
    n_train_pairs = int((~split["test"]).sum())
    assert (d_train.sum(1) == 2).sum() == 3 * round(0.5 * n_train_pairs)
    d_test = test.obsm["dosage"].to_numpy()
    assert (d_test.sum(1) == 2).sum() == 3 * int(split["test"].sum())
    assert set(np.unique(d_test.sum(1))) == {0, 2}
    assert (d_train.sum(1) == 0).sum() + (d_test.sum(1) == 0).sum() == 50


def test_additive_baseline_is_the_hand_sum(truth):
    # three perturbations used, a control group; the baseline = control mean + sum of shifts
    dose = np.zeros((3 * 5 + 8, 6), np.float32)
    dose[np.arange(15), np.repeat([0, 1, 2], 5)] = 1.0
    cells = cells_from_truth(truth, dose, seed=2)
    y = log_normalise(cells.layers["counts"])
    ctrl = y[15:].mean(0)
    shift = [y[5 * k:5 * k + 5].mean(0) - ctrl for k in range(3)]
    query = np.zeros((2, 6), np.float32)
    query[0, [0, 2]] = 1.0
    query[1, [1, 4]] = 1.0  # perturbation 4 has no single cells: it adds nothing
    ate, pred = additive_prediction(cells, query)
    np.testing.assert_allclose(ate[0], shift[0] + shift[2], atol=1e-10)
    np.testing.assert_allclose(ate[1], shift[1], atol=1e-10)
    np.testing.assert_allclose(pred[0].mean(0), ctrl + shift[0] + shift[2], atol=1e-10)
    assert pred.shape == (2, 8, 12)


def test_combination_de_and_perfect_prediction_score(truth):
    screen = combination_screen(truth, np.array([[0, 3], [1, 4]]), 0, 30, 30, seed=4)
    dose = np.zeros((2, 6), np.float32)
    dose[0, [0, 3]] = dose[1, [1, 4]] = 1.0
    de, n = combination_de(screen, dose)
    y = log_normalise(screen.layers["counts"])
    np.testing.assert_allclose(de.iloc[0], y[30:60].mean(0) - y[:30].mean(0), atol=1e-10)
    assert n.tolist() == [30, 30] and de.index.tolist() == ["P00+P03", "P01+P04"]
    observed = y[30:].reshape(2, 30, -1)
    out = score_predictions(de.to_numpy(), observed, screen, dose, top_k=4)
    np.testing.assert_allclose(out["ate_pearson"], 1.0)
    np.testing.assert_allclose(out["energy"], 0.0, atol=1e-6)  # the observed cells themselves


def test_cells_from_truth_interaction_moves_only_the_pair(truth):
    dose = np.zeros((3, 6), np.float32)
    dose[0, 0] = 1.0
    dose[1, [0, 1]] = 1.0
    dose[2, [0, 1, 2]] = 1.0
    shift = np.array([0.0, 5.0, 0.0, 0.0])
    plain = cells_from_truth(truth, dose, seed=5)
    inter = cells_from_truth(truth, dose, seed=5, interaction={"pair": (0, 1), "shift": shift})
    same = (plain.layers["counts"] == inter.layers["counts"]).all(1)
    assert same.tolist() == [True, False, False]


def test_model_cells_and_a_short_run(truth):
    torch.set_num_threads(1)
    pairs = np.array([[0, 1], [0, 2], [1, 2], [3, 4], [3, 5], [4, 5]])
    screen = combination_screen(truth, pairs, 20, 20, 60, seed=0)
    split = combination_split(pairs, 6, n_unseen=1, test_frac=0.5, seed=0)
    out = run_combinations(screen, split, truth, models=[("SAMS-VAE", "corr_basal")],
                           fit_kw=dict(steps=10, n_latent=4, hidden=8, val_min_cells=20),
                           eval_kw=dict(n_cells=10, ate_particles=5, iwelbo_particles=3, top_k=4),
                           device="cpu")
    assert set(out["source"]) == {"SAMS-VAE", "additive baseline", "truth"}
    assert len(out) == 3 * int(split["test"].sum())
    sams = out[out["source"] == "SAMS-VAE"]
    assert sams["iwelbo"].notna().all() and sams["steps"].notna().all()
    model = SAMSVAE(screen, n_latent=4, hidden=8)
    cells = model_cells(model, np.eye(6, dtype=np.float32)[:2], n_cells=7, seed=0)
    assert cells.shape == (2, 7, 12) and np.isfinite(cells).all() and (cells >= 0).all()
