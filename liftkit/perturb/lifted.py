"""Lifted perturb-seq: SAMS-VAE fitted to a high-MOI screen, scored against the truth.

A perturb-seq screen at multiplicity of infection MOI gives each cell ``N_i ~ Poisson(MOI)``
distinct guides (LIFT eq. 5 with perturbations for molecules; compressed perturb-seq). Under
SAMS-VAE's additive latent model (eq. 1) each cell then measures a *sum* of sparse latent shifts,
the LIFT setting in latent space: a fixed budget of cells tests more perturbations per cell as
the MOI grows, at the price of mixing their effects. :func:`run_lifted` simulates such screens
(:func:`lifted_screen`), fits SAMS-VAE to each, and scores mask recovery, embedding recovery
(:func:`embedding_recovery`) and single-perturbation ATE-Pearson on held-out single-guide cells
(one fit per MOI, replicate and design: :func:`lifted_fit`), beside the conventional analysis
that keeps only cells with at most one guide (:func:`single_guide_cells`).
:func:`interaction_case` adds a pair whose joint effect is not the sum of its members'
(:func:`interaction_effect`), where additivity must fail (LIFT's limitations section).
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from liftkit.metrics import ate_pearson, mask_recovery
from liftkit.perturb.combinations import (
    cells_from_truth,
    combination_screen,
    predict_combinations,
    score_predictions,
)
from liftkit.perturb.evaluation import differential_expression
from liftkit.perturb.model import PerturbVAE
from liftkit.perturb.simulate import _dosages

#: Labels of the two analyses of one screen.
DESIGNS = ("lifted (all cells)", "single-guide cells only")


def lifted_screen(
    truth: dict[str, Any], n_cells: int, moi: float, seed: int = 0,
    interaction: dict[str, Any] | None = None,
) -> ad.AnnData:
    """A screen of ``n_cells`` cells, each with ``Poisson(moi)`` distinct guides (LIFT eq. 5),
    drawn from the truth (:func:`~liftkit.perturb.combinations.cells_from_truth`).

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> screen = lifted_screen(truth, 500, moi=1.0)
    >>> screen.n_obs, round(float(screen.obs["n_guides"].mean()), 2)  # Poisson(1) guides
    (500, 1.08)
    """
    rng = np.random.default_rng(seed)
    dosage = _dosages(rng, n_cells, truth["mask"].shape[0], moi, 0.0, 0.0)
    return cells_from_truth(truth, dosage, seed + 1, interaction)


def single_guide_cells(adata: ad.AnnData) -> ad.AnnData:
    """The conventional analysis of a screen: only cells with at most one guide (controls and
    single-guide cells), as a low-MOI analysis would keep (LIFT's conventional baseline).

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> screen = lifted_screen(truth, 200, moi=3.0)
    >>> int(single_guide_cells(screen).obs["n_guides"].max())
    1
    """
    return adata[adata.obs["n_guides"].to_numpy() <= 1].copy()


def embedding_recovery(true_offset: np.ndarray, learned_offset: np.ndarray) -> dict[str, Any]:
    """Agreement of learned latent offsets ``E[e_t * m_t]`` with the true ones, after matching.

    Latent axes are identified only up to order and sign, so each true column is matched to a
    learned column by ``scipy.optimize.linear_sum_assignment`` on the absolute Pearson
    correlation between columns (over perturbations), and the matched column's sign is flipped
    to agree: a signed permutation, not an orthogonal Procrustes rotation (the sparse masks pin
    the axes). The score is the Pearson r between the true and the matched offsets over all
    entries (1: recovered up to scale); unmatched true columns count as zeros.

    Returns
    -------
    dict
        ``r`` and ``columns`` (the learned column matched to each true column, -1 if none).

    Examples
    --------
    >>> true = np.array([[1.0, 0], [0, 2], [1, 1]])
    >>> out = embedding_recovery(true, -true[:, ::-1] * 3)
    >>> round(out["r"], 6), out["columns"].tolist()
    (1.0, [1, 0])
    """
    t = np.asarray(true_offset, float)
    m = np.asarray(learned_offset, float)
    tc = (t - t.mean(0)) / np.maximum(t.std(0), 1e-12)
    mc = (m - m.mean(0)) / np.maximum(m.std(0), 1e-12)
    corr = tc.T @ mc / len(t)  # [D_true, D_model]
    rows, cols = linear_sum_assignment(-np.abs(corr))
    matched = np.zeros_like(t)
    matched[:, rows] = m[:, cols] * np.sign(corr[rows, cols] + 1e-300)
    columns = np.full(t.shape[1], -1)
    columns[rows] = cols
    return {"r": float(np.corrcoef(t.ravel(), matched.ravel())[0, 1]), "columns": columns}


def heldout_singles(truth: dict[str, Any], cells_per_pert: int, n_control: int,
                    seed: int = 0) -> tuple[ad.AnnData, pd.DataFrame]:
    """Held-out single-guide cells (and controls) from the truth, and their data DE
    (SAMS-VAE sec. 3.2): the yardstick of every fit's single-perturbation ATE.

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> cells, de = heldout_singles(truth, 5, 10)
    >>> cells.n_obs, de.shape
    (30, (4, 10))
    """
    cells = combination_screen(truth, np.zeros((0, 2), np.int64), cells_per_pert, 0, n_control,
                               seed=seed + 7777)
    return cells, differential_expression(cells)


def score_singles(
    model: PerturbVAE, truth: dict[str, Any], de: pd.DataFrame, ate_particles: int = 200,
    top_k: int = 10, seed: int = 0,
) -> dict[str, float]:
    """Mask F1 (after matching latents), embedding recovery and single-perturbation
    ATE-Pearson (all genes, top DE genes) of a fitted SAMS-VAE against the truth and the
    held-out DE.

    Examples
    --------
    >>> from liftkit.perturb import SAMSVAE
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> cells, de = heldout_singles(truth, 5, 10)
    >>> model = SAMSVAE(cells, n_latent=4, hidden=8)
    >>> sorted(score_singles(model, truth, de, ate_particles=4, top_k=5))
    ['ate_pearson', 'ate_pearson_top', 'embedding_r', 'mask_f1']
    """
    names = list(de.index)
    probs = model.mask_probabilities().loc[names].to_numpy()
    offset = model.embedding_means().loc[names].to_numpy()
    ate = model.average_treatment_effect(names, n_particles=ate_particles, seed=seed)
    return dict(
        mask_f1=mask_recovery(truth["mask"], probs)["f1"],
        embedding_r=embedding_recovery(truth["embedding"] * truth["mask"], offset)["r"],
        ate_pearson=ate_pearson(ate, de)["mean"],
        ate_pearson_top=ate_pearson(ate, de, top_k=top_k)["mean"],
    )


def oracle_singles(truth: dict[str, Any], de: pd.DataFrame, n_cells: int = 500,
                   top_k: int = 10, seed: int = 0) -> dict[str, float]:
    """The ceiling of :func:`score_singles`: the true effects (DE of ``n_cells`` fresh cells per
    perturbation from the truth) against the held-out DE; mask F1 and embedding r are 1.

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> _, de = heldout_singles(truth, 20, 20)
    >>> bool(oracle_singles(truth, de, n_cells=50, top_k=5)["ate_pearson"] > 0.5)
    True
    """
    fresh, _ = predict_combinations("truth", np.eye(len(de), dtype=np.float32), truth=truth,
                                    n_cells=n_cells, seed=seed)
    return dict(mask_f1=1.0, embedding_r=1.0, ate_pearson=ate_pearson(fresh, de.to_numpy())["mean"],
                ate_pearson_top=ate_pearson(fresh, de.to_numpy(), top_k=top_k)["mean"])


def lifted_fit(
    truth: dict[str, Any], n_cells: int, moi: float, replicate: int, design: str,
    fit_kw: dict[str, Any], heldout: tuple[ad.AnnData, pd.DataFrame], *,
    guide: str = "corr_basal", ate_particles: int = 200, top_k: int = 10, device: str = "auto",
    screen: ad.AnnData | None = None,
) -> dict[str, Any]:
    """One fit of the MOI grid: SAMS-VAE (ELBO of SAMS-VAE eq. 3 on the additive latent model,
    eq. 1) fitted to the screen of (``moi``, ``replicate``) under ``design``, scored against the
    truth with :func:`score_singles`.

    The screen has ``n_cells`` cells with ``Poisson(moi)`` guides each (LIFT eq. 5), seeded by
    the MOI and the replicate (:func:`lifted_screen`; pass ``screen`` to reuse one already
    drawn); ``design`` is one of :data:`DESIGNS`: all its cells, or its single-guide cells only
    (:func:`single_guide_cells`). The fit seed is the replicate.

    Returns
    -------
    dict
        ``moi``, ``replicate``, ``design``, the cells and mean guides the fit saw, the
        :func:`score_singles` metrics and the training record (``steps``, ``best_step``,
        ``bound_by_budget``, ``cpu_seconds``): one row of :func:`run_lifted`.

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> row = lifted_fit(truth, 300, 1.0, 0, DESIGNS[1], dict(steps=5, n_latent=4, hidden=8),
    ...                  heldout_singles(truth, 5, 10), ate_particles=4, top_k=5, device="cpu")
    >>> row["design"], int(row["mean_guides"] <= 1)
    ('single-guide cells only', 1)
    """
    from liftkit.perturb.experiment import fit_model  # experiment imports the models' stack

    if design not in DESIGNS:
        raise ValueError(f"unknown design {design!r}: choose one of {list(DESIGNS)}")
    if screen is None:
        screen = lifted_screen(truth, n_cells, moi, seed=1000 * replicate + int(100 * moi))
    cells = screen if design == DESIGNS[0] else single_guide_cells(screen)
    # a small single-guide subset keeps a quarter of its cells for validation
    kw = {**fit_kw, "val_min_cells": min(fit_kw.get("val_min_cells", 100),
                                         max(1, cells.n_obs // 4))}
    model = fit_model("SAMS-VAE", guide, cells, seed=replicate, device=device, **kw)
    row = score_singles(model, truth, heldout[1], ate_particles, top_k, seed=replicate)
    rec = model.record
    return dict(moi=moi, replicate=replicate, design=design, cells=cells.n_obs,
                mean_guides=float(cells.obs["n_guides"].mean()), **row, steps=rec.steps,
                best_step=rec.best_step, bound_by_budget=rec.bound_by_budget,
                cpu_seconds=rec.cpu_seconds)


def run_lifted(
    truth: dict[str, Any], *, n_cells: int, mois: list[float], replicates: int,
    fit_kw: dict[str, Any], heldout: tuple[ad.AnnData, pd.DataFrame], guide: str = "corr_basal",
    ate_particles: int = 200, top_k: int = 10, device: str = "auto",
) -> pd.DataFrame:
    """The MOI grid at a fixed cell budget: per MOI and replicate, one screen of ``n_cells``
    cells, SAMS-VAE fitted to all of them and to its single-guide cells only
    (:func:`lifted_fit` per design; the ``lifted`` sweep runs the same fits as separate tasks).

    One row per (moi, replicate, design) with the :func:`score_singles` metrics, the cells and
    mean guides the fit saw, and its training record (early stopping on a validation set taken
    from its cells; ``bound_by_budget`` says whether the budget stopped it instead).

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=4, n_pathways=2, perts_per_pathway=2)
    >>> out = run_lifted(truth, n_cells=300, mois=[1.0], replicates=1, device="cpu",
    ...                  fit_kw=dict(steps=5, n_latent=4, hidden=8, val_min_cells=20),
    ...                  heldout=heldout_singles(truth, 5, 10), ate_particles=4, top_k=5)
    >>> out["design"].tolist()
    ['lifted (all cells)', 'single-guide cells only']
    """
    rows = []
    for moi in mois:
        for rep in range(replicates):
            screen = lifted_screen(truth, n_cells, moi, seed=1000 * rep + int(100 * moi))
            rows += [lifted_fit(truth, n_cells, moi, rep, design, fit_kw, heldout, guide=guide,
                                ate_particles=ate_particles, top_k=top_k, device=device,
                                screen=screen) for design in DESIGNS]
    return pd.DataFrame(rows)


def interaction_effect(truth: dict[str, Any], pair: tuple[int, int], scale: float,
                       seed: int = 0) -> dict[str, Any]:
    """A latent interaction for ``pair``: a shift ``delta_ab`` of size ``scale`` (random signs)
    on the latent dimensions of a pathway neither member belongs to, so the pair switches on a
    program that neither perturbation touches alone.

    Examples
    --------
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=6, n_pathways=3, perts_per_pathway=2)
    >>> inter = interaction_effect(truth, (0, 2), 2.0)
    >>> inter["pair"], int((inter["shift"] != 0).sum())
    ((0, 2), 2)
    """
    pathway = np.asarray(truth["pathway"])
    other = np.setdiff1d(np.unique(pathway), pathway[list(pair)])
    if len(other) == 0:
        raise ValueError("the interaction needs a pathway that neither member belongs to")
    dims = np.asarray(truth["mask"])[np.flatnonzero(pathway == other[0])[0]] > 0
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=len(dims))
    return {"pair": tuple(int(p) for p in pair), "shift": scale * signs * dims}


def interaction_case(
    model: PerturbVAE, truth: dict[str, Any], interaction: dict[str, Any],
    control_pairs: np.ndarray, heldout: tuple[ad.AnnData, pd.DataFrame], *,
    cells_per_pair: int = 200, n_cells: int = 200, ate_particles: int = 200, top_k: int = 10,
    seed: int = 0,
) -> pd.DataFrame:
    """Predicted pair effects against held-out pair cells: the interacting pair and
    non-interacting ``control_pairs``, for the fitted (additive) model, the additive baseline
    built on the held-out single-guide cells (the members' true single effects) and the truth.

    Returns
    -------
    pandas.DataFrame
        :func:`~liftkit.perturb.combinations.score_predictions` rows with ``source`` and
        ``interacting`` (bool).

    Examples
    --------
    >>> from liftkit.perturb import SAMSVAE
    >>> from liftkit.perturb.combinations import simulated_truth
    >>> truth = simulated_truth(n_genes=10, n_latent=6, n_pathways=3, perts_per_pathway=2)
    >>> inter = interaction_effect(truth, (0, 2), 2.0)
    >>> held = heldout_singles(truth, 10, 20)
    >>> model = SAMSVAE(held[0], n_latent=4, hidden=8)
    >>> out = interaction_case(model, truth, inter, np.array([[1, 3]]), held, cells_per_pair=10,
    ...                        n_cells=10, ate_particles=4, top_k=5)
    >>> out.groupby("source")["interacting"].sum().to_dict()
    {'SAMS-VAE': 1, 'additive baseline': 1, 'truth': 1}
    """
    pairs = np.vstack([np.asarray(interaction["pair"])[None], np.asarray(control_pairs)])
    test = combination_screen(truth, pairs, 0, cells_per_pair, cells_per_pair, seed + 31337,
                              interaction)
    dosage = np.zeros((len(pairs), truth["mask"].shape[0]), np.float32)
    dosage[np.arange(len(pairs))[:, None], pairs] = 1.0
    frames = []
    for label, source in (("SAMS-VAE", model), ("additive baseline", "additive"),
                          ("truth", "truth")):
        ate, cells = predict_combinations(source, dosage, train=heldout[0], truth=truth,
                                          interaction=interaction, n_cells=n_cells,
                                          ate_particles=ate_particles, seed=seed)
        frame = score_predictions(ate, cells, test, dosage, top_k)
        frames.append(frame.assign(source=label, interacting=np.arange(len(pairs)) == 0))
    return pd.concat(frames, ignore_index=True)

