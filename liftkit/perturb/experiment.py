"""The Table 1 experiment of SAMS-VAE (section 4.1) as reusable functions for the chapter.

One row = one model x inference family x seed: train on the training cells, then score test
IWELBO (eqs. 6-7), ATE-Pearson against data DE (section 3.2), and, for models with masks,
mask recovery against the simulation's truth and pathway accuracy (section 4.1.1).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import torch

from liftkit.metrics import ate_pearson, mask_recovery, mean_corr_coef, pathway_accuracy
from liftkit.perturb.evaluation import differential_expression
from liftkit.perturb.model import MODELS, PerturbVAE
from liftkit.utils import atomic_path, progress, repo_root, resolve_device

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


def split_validation(
    train: ad.AnnData, val_frac: float = 0.1, min_cells: int = 100, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Hold out a validation set of guaranteed size: ``max(val_frac * n, min_cells)`` cells
    drawn at random (our choice; the paper trains a fixed number of steps without one)."""
    n_val = max(int(round(val_frac * train.n_obs)), min_cells)
    if n_val >= train.n_obs // 2:
        raise ValueError(
            f"{train.n_obs} training cells cannot spare {n_val} for validation: lower min_cells"
        )
    val = np.zeros(train.n_obs, bool)
    val[np.random.default_rng(seed + 7919).choice(train.n_obs, n_val, replace=False)] = True
    return train[~val].copy(), train[val].copy()


#: Training settings of :func:`fit_model` and their defaults (everything else goes to the model).
TRAIN_DEFAULTS: dict[str, Any] = dict(
    steps=None, max_epochs=None, batch_size=256, lr=1e-2, n_particles=1, val_frac=0.1,
    val_min_cells=100, val_particles=1, eval_every=50, patience=10, min_delta=0.01,
    lr_schedule="constant", clip_norm=None, mask_lr=None,
)


def fit_model(
    name: str,
    guide: str,
    train: ad.AnnData,
    *,
    seed: int = 0,
    device: str = "auto",
    **kw: Any,
) -> PerturbVAE:
    """Build ``MODELS[name]`` with ``guide`` and train it (SAMS-VAE App. A.1 minibatch SVI).

    A validation set (:func:`split_validation`, ``val_frac``/``val_min_cells``; ``val_frac=0``:
    none) is held out of ``train``; the fit stops early on it and keeps its best weights
    (:meth:`~liftkit.perturb.model.PerturbVAE.train`; ``model.record`` says whether the budget
    bound it).

    Parameters
    ----------
    name, guide
        A key of :data:`~liftkit.perturb.model.MODELS` and an inference family (sec. 2.3).
    train
        Training cells (the validation cells are taken from them).
    seed
        Seeds the validation split, the initialisation and the minibatches.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    **kw
        Training settings (the keys of :data:`TRAIN_DEFAULTS`: ``steps`` or ``max_epochs``,
        ``batch_size``, ``lr``, ...) and model options. The mask options (``mask_prior``,
        ``alpha``, ``beta_ab``, ``temperature``, ``mask_init``) are dropped for models without
        masks, and any option a model's module does not take (e.g. ``emb_layers`` for the
        conditional VAE) is dropped too, so that one set of options serves every row of
        Table 1.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {list(MODELS)}")
    fit = {**TRAIN_DEFAULTS, **{k: v for k, v in kw.items() if k in TRAIN_DEFAULTS}}
    model_kw = {k: v for k, v in kw.items() if k not in TRAIN_DEFAULTS}
    if not MODELS[name].module_class.has_mask:
        model_kw = {k: v for k, v in model_kw.items() if k not in MASK_OPTIONS}
    takes = inspect.signature(MODELS[name].module_class.__init__).parameters
    model_kw = {k: v for k, v in model_kw.items() if k in takes or k in ("layer", "dosage_key")}
    val = None
    if fit["val_frac"] > 0:
        train, val = split_validation(train, fit["val_frac"], fit["val_min_cells"], seed)
    model = MODELS[name](train, guide=guide, seed=seed, device=device, **model_kw)
    if fit["steps"] is None and fit["max_epochs"] is None:
        fit["steps"] = 1000
    model.train(
        fit["steps"], batch_size=fit["batch_size"], lr=fit["lr"],
        n_particles=fit["n_particles"], seed=seed, show_progress=False,
        max_epochs=fit["max_epochs"], validation=val, val_particles=fit["val_particles"],
        eval_every=fit["eval_every"], patience=fit["patience"], min_delta=fit["min_delta"],
        lr_schedule=fit["lr_schedule"], clip_norm=fit["clip_norm"], mask_lr=fit["mask_lr"],
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
    """Score a trained model: test IWELBO per cell, ATE-Pearson, mask recovery, pathway accuracy,
    and the MCC of the basal latent when the test cells carry ``obsm["z_basal_true"]``.

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
    if "z_basal_true" in test.obsm:
        row["mcc"] = mean_corr_coef(test.obsm["z_basal_true"], model.basal_latent(test))["mcc"]
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


def _record_columns(model: PerturbVAE) -> dict[str, Any]:
    """The training record of a fit as flat columns (steps, epochs, bound by the budget, CPU)."""
    rec = model.record
    return dict(
        max_steps=rec.max_steps, steps=rec.steps, best_step=rec.best_step,
        epochs=rec.epochs, stopped_early=rec.stopped_early,
        bound_by_budget=rec.bound_by_budget, cpu_seconds=rec.cpu_seconds,
        train_seconds=rec.wall_seconds,
    )


def table1_fit(
    name: str,
    guide: str,
    train: ad.AnnData,
    test: ad.AnnData,
    de: pd.DataFrame,
    truth: dict | None,
    *,
    seed: int = 0,
    fit_kw: dict[str, Any] | None = None,
    eval_kw: dict[str, Any] | None = None,
    device: str = "auto",
) -> tuple[dict, PerturbVAE]:
    """One row of :func:`run_table1`: fit (model, inference family) with ``seed`` and score it
    (SAMS-VAE Table 1; trained on the ELBO of eq. 3, App. A.1). A task of the ``table1`` sweep.

    Returns
    -------
    row, model
        The metrics with the training record, and the trained model.

    Examples
    --------
    >>> row, _ = table1_fit("SAMS-VAE", "corr", train, test, de, truth)  # doctest: +SKIP
    >>> row["inference"]  # doctest: +SKIP
    'corr. z_basal and E'
    """
    model = fit_model(name, guide, train, seed=seed, device=device, **(fit_kw or {}))
    row = evaluate_model(model, test, de, truth, seed=seed, **(eval_kw or {}))
    row.update(model=name, inference=GUIDE_LABELS[guide], guide=guide, seed=seed)
    row.update(_record_columns(model))
    return row, model


def run_table1(
    train: ad.AnnData,
    test: ad.AnnData,
    de: pd.DataFrame,
    truth: dict | None,
    *,
    seeds: list[int],
    rows: list[tuple[str, str]] | None = None,
    fit_kw: dict[str, Any] | None = None,
    eval_kw: dict[str, Any] | None = None,
    device: str = "auto",
    keep_seed: int | None = None,
    show_progress: bool = False,
) -> tuple[pd.DataFrame, dict[tuple[str, str], PerturbVAE]]:
    """Train and score every (model, inference family) of ``rows`` for every seed (Table 1).

    Parameters
    ----------
    train, test, de, truth
        Training and test cells, data DE, and the simulation's truth (None: real data).
    seeds
        Training seeds (validation split, initialisation, minibatches).
    rows
        ``(model, guide)`` pairs; default :data:`TABLE1_ROWS`.
    fit_kw, eval_kw
        Passed to :func:`fit_model` and :func:`evaluate_model`.
    device
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    keep_seed
        The trained models of this seed are returned (None: the first seed).
    show_progress
        A progress bar over the fits.

    Returns
    -------
    results, models
        One row per fit (metrics, training record: steps, epochs, best step, bound by budget,
        CPU seconds) and the kept models by ``(model, guide)``.
    """
    rows = TABLE1_ROWS if rows is None else rows
    keep = seeds[0] if keep_seed is None else keep_seed
    grid = [(s, name, guide) for s in seeds for name, guide in rows]
    out, models = [], {}
    for s, name, guide in progress(grid, desc="Table 1") if show_progress else grid:
        row, model = table1_fit(name, guide, train, test, de, truth, seed=s, fit_kw=fit_kw,
                                eval_kw=eval_kw, device=device)
        out.append(row)
        if s == keep:
            models[name, guide] = model
    return pd.DataFrame(out), models


def _git(*args: str) -> str | None:
    """Output of a read-only git command in the repository (None if git is unavailable)."""
    try:
        return subprocess.run(["git", *args], cwd=repo_root(), capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(device: str = "auto") -> dict[str, str]:
    """Where a result came from: liftkit and torch versions, git commit and whether the package
    had uncommitted changes (``git_tree``), device, CPU threads."""
    import liftkit

    commit = _git("rev-parse", "HEAD") or "unknown"
    modified = _git("status", "--porcelain", "--untracked-files=no", "--", "liftkit")
    return dict(
        liftkit_version=liftkit.__version__, git_commit=commit,
        git_tree="unknown" if modified is None else ("modified" if modified else "clean"),
        torch_version=torch.__version__,
        device=str(resolve_device(device)), torch_threads=str(torch.get_num_threads()),
        python=platform.python_version(),
    )


#: The SAMS-VAE chapter's default profile (book/sams_vae.md): data, training and evaluation
#: settings of the converged Table 1 that ``python -m liftkit.perturb.experiment table1`` writes.
TABLE1_SETTINGS: dict[str, dict[str, Any]] = {
    "data": dict(n_cells=2400, n_genes=100, n_latent=8, n_pathways=4, perts_per_pathway=5,
                 pathway_dims=2, effect_scale=1.5, seed=0),
    "fit": dict(max_epochs=1000, batch_size=256, lr=1e-2, mask_lr=0.1, eval_every=50,
                patience=10, min_delta=0.01, val_frac=0.1, val_min_cells=100, val_particles=1,
                lr_schedule="plateau", n_latent=8, hidden=64, alpha=0.01),
    "eval": dict(iwelbo_particles=200, ate_particles=300, rf_repeats=10, rf_trees=50, top_k=20),
}


def table1_data(data_params: dict[str, Any], dataset: str = "synthetic_perturb_seq") -> tuple:
    """The chapter's data: cells, train/test split (20% test), data DE, truth (None if real)."""
    from liftkit import data  # the loaders name generators by string: no import cycle

    params = dict(data_params)
    seed = params.pop("seed", 0)
    if dataset == "synthetic_perturb_seq":
        adata = data.load(dataset, seed=seed, **params)
    else:
        adata = data.load(dataset)
    train, test = split_cells(adata, test_frac=0.2, seed=seed)
    truth = adata.uns.get("truth")
    return adata, train, test, differential_expression(adata), truth


def write_table1(
    out: str | Path, seeds: list[int], settings: dict[str, dict[str, Any]] | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Run the converged Table 1 grid and write it as CSV with provenance columns (atomically).

    Columns: the metrics and training record of :func:`run_table1`, then ``liftkit_version``,
    ``git_commit``, ``git_tree``, ``torch_version``, ``device``, ``torch_threads``, ``python`` and
    ``settings`` (JSON of the data, fit and evaluation settings, which the chapter compares with
    its own before using the file).
    """
    settings = TABLE1_SETTINGS if settings is None else settings
    torch.set_num_threads(1)  # CPU seconds are then comparable between fits
    _, train, test, de, truth = table1_data(settings["data"])
    results, _ = run_table1(train, test, de, truth, seeds=seeds, fit_kw=settings["fit"],
                            eval_kw=settings["eval"], device=device, show_progress=True)
    for key, value in provenance(device).items():
        results[key] = value
    results["settings"] = json.dumps(settings, sort_keys=True)
    with atomic_path(Path(out)) as tmp:
        results.to_csv(tmp, index=False)
    return results


def read_table1(path: str | Path, settings: dict[str, dict[str, Any]]) -> pd.DataFrame | None:
    """The committed Table 1 at ``path`` if it was run with ``settings`` (else None)."""
    path = Path(path)
    if not path.is_file():
        return None
    results = pd.read_csv(path)
    if results["settings"].iloc[0] != json.dumps(settings, sort_keys=True):
        return None
    return results


def _main(argv: list[str] | None = None) -> None:
    """``python -m liftkit.perturb.experiment table1 --out book/results/table1.csv --seeds 0 1 2``."""
    parser = argparse.ArgumentParser(prog="python -m liftkit.perturb.experiment")
    sub = parser.add_subparsers(dest="command", required=True)
    t1 = sub.add_parser("table1", help="the converged Table 1 of the SAMS-VAE chapter, as CSV")
    t1.add_argument("--out", required=True, help="CSV to write (atomically)")
    t1.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    t1.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    results = write_table1(args.out, args.seeds, device=args.device)
    print(f"wrote {len(results)} fits to {args.out}")


if __name__ == "__main__":
    _main()


def settling_curve(model: PerturbVAE, true_mask: np.ndarray, band: float = 0.1) -> pd.DataFrame:
    """How a fit's masks moved: per evaluation, the step, validation value, mask F1 against the
    truth and the share of mask probabilities still inside ``(band, 1 - band)``."""
    hist = model.record.history
    rows = []
    for step, val, probs in zip(hist["step"], hist["val"], hist["mask_probs"], strict=True):
        rows.append(dict(
            step=step, val=val, mask_f1=mask_recovery(true_mask, probs)["f1"],
            unsettled=float(((probs > band) & (probs < 1 - band)).mean()),
        ))
    return pd.DataFrame(rows)


def settling_summary(curve: pd.DataFrame, tol: float = 0.05, f1_tol: float = 0.02) -> dict:
    """When a curve's masks settled: the first step with at most ``tol`` of the probabilities
    inside the band (NaN if never), the first step after which mask F1 stays within
    ``f1_tol`` of its final value, and the step of the best validation value (our
    definitions of "settled")."""
    left = curve.loc[curve["unsettled"] <= tol, "step"]
    final = curve["mask_f1"].iloc[-1]
    off = np.flatnonzero(np.abs(curve["mask_f1"].to_numpy() - final) > f1_tol)
    f1_step = curve["step"].iloc[off[-1] + 1] if len(off) else curve["step"].iloc[0]
    best = curve["val"].idxmin() if curve["val"].notna().any() else curve.index[-1]
    return dict(
        settle_step=float(left.iloc[0]) if len(left) else math.nan,
        f1_stable_step=float(f1_step), final_f1=float(final),
        final_unsettled=float(curve["unsettled"].iloc[-1]),
        best_val_step=float(curve.loc[best, "step"]),
        f1_at_best_val=float(curve.loc[best, "mask_f1"]),
    )


def mask_settling(
    train: ad.AnnData,
    true_mask: np.ndarray,
    settings: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    device: str = "auto",
    **fit_kw: Any,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit fully correlated SAMS-VAE once per named setting and trace its masks.

    ``settings`` maps a label to options that override ``fit_kw`` (e.g. ``{"lr 1e-2": {},
    "mask rate 0.1": {"mask_lr": 0.1}}``). Returns the curves (one row per evaluation, with
    ``setting``) and one summary row per setting (:func:`settling_summary`, plus CPU seconds).
    """
    curves, summary = [], []
    for label, over in settings.items():
        model = fit_model("SAMS-VAE", "corr", train, seed=seed, device=device,
                          **{**fit_kw, **over})
        curve = settling_curve(model, true_mask).assign(setting=label)
        curves.append(curve)
        summary.append(dict(setting=label, **settling_summary(curve),
                            cpu_seconds=model.record.cpu_seconds))
    return pd.concat(curves, ignore_index=True), pd.DataFrame(summary).set_index("setting")
