"""Synthetic perturb-seq drawn from the SAMS-VAE generative process, with the truth kept.

The generator follows SAMS-VAE Algorithm 1 and section 2.2: sparse masks ``m_t`` and
embeddings ``e_t`` per perturbation, ``z = z_basal + sum_t d_t (e_t * m_t)`` (eq. 1), a random
decoder MLP with a softmax over genes, and gamma-Poisson (negative binomial) counts with mean
``library size * rho`` and a per-gene inverse dispersion. Unlike the real data sets of the paper,
the masks are known, so mask recovery can be scored directly.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import pandas as pd


def simulate_perturb_seq(
    n_cells: int = 4000,
    n_genes: int = 200,
    n_latent: int = 8,
    n_pathways: int = 4,
    perts_per_pathway: int = 5,
    pathway_dims: int = 2,
    mask_noise: float = 0.0,
    effect_scale: float = 1.5,
    moi: float | None = None,
    control_frac: float = 0.1,
    combo_frac: float = 0.0,
    decoder_hidden: int = 64,
    decoder_scale: float = 1.0,
    library_size: float = 2000.0,
    library_sd: float = 0.3,
    dispersion: float = 10.0,
    seed: int = 0,
) -> ad.AnnData:
    """Simulate a perturb-seq screen from the SAMS-VAE generative model (Algorithm 1).

    Parameters
    ----------
    n_cells, n_genes, n_latent
        Cells, genes (D_x) and true latent dimensions (D_z).
    n_pathways, perts_per_pathway
        Perturbations are grouped into pathways; ``T = n_pathways * perts_per_pathway``.
    pathway_dims
        Active latent dimensions per pathway. Every perturbation of a pathway shares its
        pathway's mask pattern; pathways use disjoint dimensions while ``D_z`` allows it.
    mask_noise
        Probability of flipping each mask entry of a perturbation away from its pathway
        pattern (0 keeps pathways exactly shared).
    effect_scale
        Size of the latent shifts. Embedding entries are ``effect_scale * sign * (1 + 0.5|N|)``,
        bounded away from zero so every true mask entry has a visible effect (our choice: the
        paper's ``N(0, I)`` prior puts some entries near zero, where a mask is unidentifiable).
    moi
        ``None``: the usual design, one guide per cell (``control_frac`` of cells get none,
        ``combo_frac`` get two). A number: each cell receives ``Poisson(moi)`` distinct guides
        (cells with none are controls), as in a high-MOI screen.
    control_frac, combo_frac
        Used only when ``moi is None``.
    decoder_hidden, decoder_scale
        Width and output scale of the random decoder MLP ``z -> softmax`` over genes.
    library_size, library_sd
        Library sizes are log-normal with this median and log-scale sd (observed, section 2.2).
    dispersion
        Median per-gene inverse dispersion ``theta_d`` (per-gene values are log-normal).
    seed
        NumPy seed; the same seed gives the same data.

    Returns
    -------
    anndata.AnnData
        ``layers["counts"]`` (integer counts; ``X`` holds the same as float32),
        ``obsm["dosage"]`` (cells x perturbations DataFrame of 0/1 dosages ``d_i``),
        ``obs`` with ``perturbation`` (e.g. ``"control"``, ``"P03"``, ``"P03+P11"``),
        ``n_guides``, ``library_size`` and ``pathway`` (of single-guide cells), and
        ``uns["truth"]`` with ``mask`` (T x D_z), ``embedding`` (T x D_z), ``pathway`` (T),
        the decoder weights, ``theta`` and the parameters; ``obsm["z_basal_true"]`` holds each
        cell's true basal state ``z^b_i`` (for disentanglement metrics).
    """
    params = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_latent": n_latent,
        "n_pathways": n_pathways,
        "perts_per_pathway": perts_per_pathway,
        "pathway_dims": pathway_dims,
        "mask_noise": mask_noise,
        "effect_scale": effect_scale,
        "moi": moi,
        "control_frac": control_frac, "combo_frac": combo_frac,
        "seed": seed,
    }
    _check_args(params)
    rng = np.random.default_rng(seed)
    n_perts = n_pathways * perts_per_pathway
    # the draws below happen in this order; a seed's data set depends on it
    mask, pathway = _pathway_masks(
        rng, n_latent, n_pathways, perts_per_pathway, pathway_dims, mask_noise
    )
    embedding = _embeddings(rng, n_perts, n_latent, effect_scale)
    dosage = _dosages(rng, n_cells, n_perts, moi, control_frac, combo_frac)
    # generative process (Algorithm 1, eq. 1) and likelihood (section 2.2)
    basal = rng.standard_normal((n_cells, n_latent))
    z = basal + dosage @ (embedding * mask)
    decoder = _random_decoder(rng, n_latent, decoder_hidden, n_genes, decoder_scale)
    counts, theta = _nb_counts(rng, _decode(decoder, z), library_size, library_sd, dispersion)
    names = [f"P{t:02d}" for t in range(n_perts)]
    adata = _to_anndata(counts, dosage, names, pathway)
    adata.obsm["z_basal_true"] = basal  # per cell, so that it follows any split of the cells
    adata.uns["truth"] = {
        "mask": mask.astype(np.int64),
        "embedding": embedding,
        "pathway": pathway.astype(np.int64),
        "perturbation_names": np.array(names),
        "decoder": decoder,
        "theta": theta,
        # stored in .uns, which cannot hold None: -1 stands for "one guide per cell"
        "params": {**params, "moi": -1.0 if moi is None else float(moi)},
    }
    return adata


def _check_args(p: dict[str, Any]) -> None:
    """Raise a ValueError naming the first invalid parameter of :func:`simulate_perturb_seq`."""
    if p["n_cells"] < 1 or p["n_genes"] < 2 or p["n_latent"] < 1:
        raise ValueError("n_cells >= 1, n_genes >= 2 and n_latent >= 1 are required")
    if p["n_pathways"] < 1 or p["perts_per_pathway"] < 1 or p["pathway_dims"] < 1:
        raise ValueError("n_pathways, perts_per_pathway and pathway_dims must be >= 1")
    if p["pathway_dims"] > p["n_latent"]:
        raise ValueError(f"pathway_dims={p['pathway_dims']} exceeds n_latent={p['n_latent']}")
    if p["moi"] is not None and p["moi"] <= 0:
        raise ValueError(f"moi must be > 0 (or None for one guide per cell), got {p['moi']}")
    control, combo = p["control_frac"], p["combo_frac"]
    if not (0 <= control < 1 and 0 <= combo < 1 and control + combo < 1):
        raise ValueError("control_frac and combo_frac must lie in [0, 1) and sum below 1")


def _pathway_masks(
    rng: np.random.Generator,
    n_latent: int,
    n_pathways: int,
    perts_per_pathway: int,
    pathway_dims: int,
    mask_noise: float,
) -> tuple[np.ndarray, np.ndarray]:
    """True masks ``m_t`` ``[T, D]`` (int8) and the pathway of each perturbation ``[T]``.

    Pathway patterns are disjoint blocks of a random permutation of the latent dimensions,
    wrapping around when ``D`` is small; entries then flip with probability ``mask_noise``.
    """
    order = rng.permutation(n_latent)
    patterns = np.zeros((n_pathways, n_latent), dtype=np.int8)
    for p in range(n_pathways):
        dims = order[(np.arange(pathway_dims) + p * pathway_dims) % n_latent]
        patterns[p, dims] = 1
    pathway = np.repeat(np.arange(n_pathways), perts_per_pathway)
    mask = patterns[pathway].copy()
    if mask_noise > 0:
        flip = rng.random(mask.shape) < mask_noise
        mask = np.where(flip, 1 - mask, mask).astype(np.int8)
    return mask, pathway


def _embeddings(
    rng: np.random.Generator, n_perts: int, n_latent: int, effect_scale: float
) -> np.ndarray:
    """True embeddings ``e_t`` ``[T, D]``: ``effect_scale * sign * (1 + 0.5|N(0, 1)|)``."""
    signs = rng.choice([-1.0, 1.0], size=(n_perts, n_latent))
    return effect_scale * signs * (1.0 + 0.5 * np.abs(rng.standard_normal((n_perts, n_latent))))


def _dosages(
    rng: np.random.Generator,
    n_cells: int,
    n_perts: int,
    moi: float | None,
    control_frac: float,
    combo_frac: float,
) -> np.ndarray:
    """Dosages ``d_i`` ``[N, T]`` (float32 0/1): distinct guides per cell, as many as drawn."""
    dosage = np.zeros((n_cells, n_perts), dtype=np.float32)
    if moi is None:
        u = rng.random(n_cells)
        n_guides = np.where(u < control_frac, 0, np.where(u < control_frac + combo_frac, 2, 1))
    else:
        n_guides = np.minimum(rng.poisson(moi, size=n_cells), n_perts)
    # distinct guides: rank random keys per cell and keep the n_guides smallest (vectorised)
    keys = rng.random((n_cells, n_perts))
    ranks = keys.argsort(1).argsort(1)
    dosage[ranks < n_guides[:, None]] = 1.0
    return dosage


def _random_decoder(
    rng: np.random.Generator, n_latent: int, hidden: int, n_genes: int, scale: float
) -> dict[str, np.ndarray]:
    """Weights of a random one-hidden-layer MLP ``z -> gene logits`` (``b2``: gene baselines)."""
    w1 = rng.standard_normal((n_latent, hidden)) / np.sqrt(n_latent)
    b1 = 0.1 * rng.standard_normal(hidden)
    w2 = scale * rng.standard_normal((hidden, n_genes)) / np.sqrt(hidden)
    b2 = rng.standard_normal(n_genes)  # gene-level baseline abundance
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def _decode(decoder: dict[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Gene frequencies ``rho = softmax(f(z))`` ``[N, G]`` (section 2.2)."""
    h = z @ decoder["w1"] + decoder["b1"]
    logits = np.where(h > 0, h, 0.01 * h) @ decoder["w2"] + decoder["b2"]  # leaky ReLU
    logits -= logits.max(1, keepdims=True)
    rho = np.exp(logits)
    rho /= rho.sum(1, keepdims=True)
    return rho


def _nb_counts(
    rng: np.random.Generator,
    rho: np.ndarray,
    library_size: float,
    library_sd: float,
    dispersion: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Gamma-Poisson counts ``[N, G]`` (int64) with mean ``l_i rho_i`` and per-gene ``theta``.

    Library sizes are log-normal (at least 50); a cell left without counts gets one count of
    gene 0, since the model conditions on a positive library size.
    """
    lib = np.round(library_size * np.exp(library_sd * rng.standard_normal(len(rho))))
    lib = np.maximum(lib, 50.0)
    theta = dispersion * np.exp(0.3 * rng.standard_normal(rho.shape[1]))
    mean = lib[:, None] * rho
    rate = rng.gamma(shape=theta[None, :], scale=mean / theta[None, :])
    counts = rng.poisson(rate).astype(np.int64)
    counts[counts.sum(1) == 0, 0] = 1
    return counts, theta


def _to_anndata(
    counts: np.ndarray, dosage: np.ndarray, names: list[str], pathway: np.ndarray
) -> ad.AnnData:
    """AnnData with counts in ``X`` and ``layers["counts"]``, dosages in ``obsm["dosage"]``."""
    n_cells = len(counts)
    labels = np.array(
        ["+".join(names[t] for t in np.flatnonzero(row)) or "control" for row in dosage]
    )
    single = dosage.sum(1) == 1
    cell_pathway = np.full(n_cells, "none", dtype=object)
    cell_pathway[single] = [f"pathway{p}" for p in pathway[dosage[single].argmax(1)]]
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(labels),
            "n_guides": dosage.sum(1).astype(np.int64),
            "library_size": counts.sum(1).astype(np.float64),
            "pathway": pd.Categorical(cell_pathway.astype(str)),
        },
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"gene{j}" for j in range(counts.shape[1])])
    adata = ad.AnnData(X=counts.astype(np.float32), obs=obs, var=var)
    adata.layers["counts"] = counts
    adata.obsm["dosage"] = pd.DataFrame(dosage, index=obs.index, columns=names)
    return adata
