"""Lifted perturb-seq: screens, the single-guide baseline, matching and the interaction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from liftkit.perturb.combinations import simulated_truth
from liftkit.perturb.lifted import (
    embedding_recovery,
    heldout_singles,
    interaction_effect,
    lifted_screen,
    run_lifted,
    single_guide_cells,
)


@pytest.fixture(scope="module")
def truth():
    return simulated_truth(n_genes=12, n_latent=6, n_pathways=3, perts_per_pathway=3, seed=2)


def test_guides_per_cell_are_poisson(truth):
    screen = lifted_screen(truth, 4000, moi=1.5, seed=0)
    n = screen.obs["n_guides"].to_numpy()
    # Poisson(1.5) capped at T = 9: the cap is reached with probability < 1e-5
    observed = np.bincount(n, minlength=6)[:6] / len(n)
    expected = stats.poisson.pmf(np.arange(6), 1.5)
    np.testing.assert_allclose(observed, expected, atol=0.025)
    d = screen.obsm["dosage"].to_numpy()
    assert (d.sum(1) == n).all() and set(np.unique(d)) <= {0.0, 1.0}


def test_single_guide_cells_keep_at_most_one_guide(truth):
    screen = lifted_screen(truth, 1000, moi=3.0, seed=1)
    kept = single_guide_cells(screen)
    n = screen.obs["n_guides"].to_numpy()
    assert kept.n_obs == int((n <= 1).sum())
    # with MOI 3 the share of cells with at most one guide is e^-3 (1 + 3) = 0.199
    assert abs(kept.n_obs / 1000 - 4 * np.exp(-3)) < 0.04


def test_embedding_recovery_undoes_a_signed_permutation():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(8, 4)) * (rng.random((8, 4)) < 0.5)
    learned = np.zeros((8, 5))
    learned[:, [3, 0, 4, 1]] = true * np.array([2.0, -1.0, 0.5, -3.0])
    out = embedding_recovery(true, learned)
    assert out["columns"].tolist() == [3, 0, 4, 1]
    # after undoing order and sign, r equals the hand Pearson r of the rescaled columns
    matched = true * np.array([2.0, 1.0, 0.5, 3.0])
    assert out["r"] == pytest.approx(np.corrcoef(true.ravel(), matched.ravel())[0, 1], abs=1e-12)
    assert embedding_recovery(true, true)["r"] == pytest.approx(1.0)


def test_interaction_effect_sits_on_a_third_pathway(truth):
    pathway = truth["pathway"]
    a, b = int(np.flatnonzero(pathway == 0)[0]), int(np.flatnonzero(pathway == 1)[0])
    inter = interaction_effect(truth, (a, b), 3.0, seed=0)
    third = truth["mask"][np.flatnonzero(pathway == 2)[0]] > 0
    assert np.array_equal(inter["shift"] != 0, third)
    assert np.allclose(np.abs(inter["shift"][third]), 3.0)
    with pytest.raises(ValueError, match="neither member"):
        interaction_effect(simulated_truth(n_latent=4, n_pathways=2, perts_per_pathway=2),
                           (0, 2), 1.0)


def test_run_lifted_short(truth):
    torch.set_num_threads(1)
    held = heldout_singles(truth, 10, 30)
    assert held[1].shape == (9, 12)
    out = run_lifted(truth, n_cells=300, mois=[0.5, 3.0], replicates=1, device="cpu",
                     fit_kw=dict(steps=10, n_latent=6, hidden=8, val_min_cells=20),
                     heldout=held, ate_particles=5, top_k=4)
    assert len(out) == 4
    lifted = out[out["design"] == "lifted (all cells)"]
    single = out[out["design"] == "single-guide cells only"]
    assert (lifted["cells"] == 300).all() and (single["cells"].to_numpy() < 300).all()
    assert out[["mask_f1", "embedding_r", "ate_pearson"]].notna().all().all()
    assert out["mean_guides"].iloc[2] > out["mean_guides"].iloc[0]
