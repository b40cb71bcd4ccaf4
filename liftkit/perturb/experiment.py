"""The Table 1 experiment of SAMS-VAE (section 4.1) as reusable functions for the chapter.

One row = one model x inference family x seed: train on the training cells, then score test
IWELBO (eqs. 6-7), ATE-Pearson against data DE (section 3.2), and, for models with masks,
mask recovery against the simulation's truth and pathway accuracy (section 4.1.1).
"""

from __future__ import annotations

import time

import anndata as ad
import numpy as np
import pandas as pd

from liftkit.metrics import ate_pearson, mask_recovery, pathway_accuracy
from liftkit.perturb.model import MODELS, PerturbVAE

#: The rows of SAMS-VAE Table 1: (model, inference family).
TABLE1_ROWS = [
    ("Conditional VAE", "mf"),
    ("SVAE+", "mf"),
    ("CPA-VAE", "mf"),
    ("CPA-VAE", "corr_basal"),
    ("SAMS-VAE", "mf"),
    ("SAMS-VAE", "corr_emb"),
    ("SAMS-VAE", "corr_basal"),
    ("SAMS-VAE", "corr"),
]

#: Options of the mask prior and guide, which models without masks do not take.
MASK_OPTIONS = ("mask_prior", "alpha", "beta_ab", "temperature", "mask_init")

#: Paper names of the inference families.
GUIDE_LABELS = {
    "mf": "amortized MF",
    "corr_emb": "corr. E",
    "corr_basal": "corr. z_basal",
    "corr": "corr. z_basal and E",
}


def split_cells(
    adata: ad.AnnData, test_frac: float = 0.2, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Random train/test split of cells (the paper samples its splits at random)."""
    if not 0 < test_frac < 1:
        raise ValueError(f"test_frac must lie in (0, 1), got {test_frac}")
    rng = np.random.default_rng(seed)
    test = rng.random(adata.n_obs) < test_frac
    return adata[~test].copy(), adata[test].copy()


def fit_model(
    name: str,
    guide: str,
    train: ad.AnnData,
    *,
    seed: int = 0,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-2,
    n_particles: int = 1,
    device: str = "auto",
    **model_kw,
) -> PerturbVAE:
    """Build ``MODELS[name]`` with ``guide`` and train it (SAMS-VAE App. A.1 minibatch SVI).

    Parameters
    ----------
    name, guide
        A key of :data:`~liftkit.perturb.model.MODELS` and an inference family (sec. 2.3).
    train
        Training cells.
    seed
        Seeds the initialisation and the minibatches.
    steps, batch_size, lr, n_particles
        Of :meth:`~liftkit.perturb.model.PerturbVAE.train`.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    **model_kw
        Passed to the model; the mask options (``mask_prior``, ``alpha``, ``beta_ab``,
        ``temperature``, ``mask_init``) are dropped for models without masks, so that one set
        of options serves every row of Table 1.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {list(MODELS)}")
    kw = model_kw
    if not MODELS[name].module_class.has_mask:
        kw = {k: v for k, v in model_kw.items() if k not in MASK_OPTIONS}
    model = MODELS[name](train, guide=guide, seed=seed, device=device, **kw)
    model.train(
        steps, batch_size=batch_size, lr=lr, n_particles=n_particles, seed=seed, show_progress=False
    )
    return model


def evaluate_model(
    model: PerturbVAE,
    test: ad.AnnData,
    de: pd.DataFrame,
    truth: dict | None = None,
    *,
    iwelbo_particles: int = 100,
    ate_particles: int = 500,
    top_k: int | None = None,
    rf_repeats: int = 10,
    rf_trees: int = 100,
    seed: int = 0,
) -> dict:
    """Score a trained model: test IWELBO per cell, ATE-Pearson, mask recovery, pathway accuracy.

    ``de`` is the data differential expression (:func:`differential_expression`); ``truth`` the
    simulation's ``adata.uns["truth"]`` (mask metrics are skipped without it or without masks).
    """
    row: dict = {}
    t0 = time.perf_counter()
    row["iwelbo"] = float(model.iwelbo(test, n_particles=iwelbo_particles, seed=seed).mean())
    ate = model.average_treatment_effect(list(de.index), n_particles=ate_particles, seed=seed)
    r = ate_pearson(ate, de)
    row["ate_pearson"] = r["mean"]
    row["ate_pearson_overall"] = r["overall"]
    if top_k is not None:
        row["ate_pearson_top"] = ate_pearson(ate, de, top_k=top_k)["mean"]
    if truth is not None and model.module.has_mask:
        probs = model.mask_probabilities().loc[model.perturbation_names].to_numpy()
        rec = mask_recovery(truth["mask"], probs)
        row["mask_accuracy"] = rec["accuracy"]
        row["mask_f1"] = rec["f1"]
        row["mask_recall"] = rec["recall"]
        row["mask_precision"] = rec["precision"]
        pw = pathway_accuracy(
            probs, truth["pathway"], n_repeats=rf_repeats, seed=seed, n_estimators=rf_trees
        )
        row["pathway_accuracy"] = pw["mean"]
    row["eval_seconds"] = time.perf_counter() - t0
    return row


def summarise(results: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Mean +- sd over seeds per (model, inference), in Table 1's row order and format."""
    order = {(m, GUIDE_LABELS[g]): i for i, (m, g) in enumerate(TABLE1_ROWS)}
    grouped = results.groupby(["model", "inference"], sort=False)[metrics]
    mean, sd = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    out = pd.DataFrame(index=mean.index)
    for col in metrics:
        out[col] = [
            "-" if np.isnan(m) else f"{m:.3f} ± {s:.3f}"
            for m, s in zip(mean[col], sd[col], strict=True)
        ]
    return out.iloc[np.argsort([order.get(i, 99) for i in out.index])]
