"""Evaluation metrics shared by the chapters (scikit-learn underneath where it applies).

SAMS-VAE: :func:`ate_pearson`, :func:`mask_recovery`, :func:`pathway_accuracy`,
:func:`mean_corr_coef`.
LIFT: :func:`pr_auc`, :func:`pr_curve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from numpy.typing import ArrayLike


# --------------------------------------------------------------------------- SAMS-VAE (perturb)
def ate_pearson(ate: ArrayLike, de: ArrayLike, top_k: int | None = None) -> dict[str, Any]:
    """ATE-Pearson (SAMS-VAE sec. 3.2): Pearson r between model ATE and data DE across genes.

    Parameters
    ----------
    ate, de
        Perturbations x genes arrays (or DataFrames, aligned on their index and columns).
    top_k
        If given, use only each perturbation's ``top_k`` genes by ``|DE|`` (the top-DE variant).

    Returns
    -------
    dict
        ``per_perturbation`` (array of r, one per row), ``mean`` (their mean) and ``overall``
        (r over all selected perturbation-gene pairs pooled).

    Raises
    ------
    ValueError
        Shapes that differ or are not 2-D, or ``top_k`` outside ``[2, n_genes]``.

    Examples
    --------
    >>> import numpy as np
    >>> r = ate_pearson(np.array([[1.0, 2, 3], [1, 0, 2]]), np.array([[2.0, 4, 7], [0, 1, 2]]))
    >>> r["per_perturbation"].round(3), round(r["mean"], 3)
    (array([0.993, 0.5  ]), 0.747)
    """
    import numpy as np
    import pandas as pd

    if isinstance(ate, pd.DataFrame) and isinstance(de, pd.DataFrame):
        ate = ate.loc[de.index, de.columns]
    a, b = np.asarray(ate, dtype=float), np.asarray(de, dtype=float)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ate and de must be equal-shape 2-D arrays, got {a.shape} and {b.shape}")
    if top_k is not None:
        if not 2 <= top_k <= a.shape[1]:
            raise ValueError(f"top_k must lie in [2, n_genes={a.shape[1]}], got {top_k}")
        idx = np.argsort(-np.abs(b), axis=1)[:, :top_k]
        a, b = np.take_along_axis(a, idx, 1), np.take_along_axis(b, idx, 1)
    ac = a - a.mean(1, keepdims=True)
    bc = b - b.mean(1, keepdims=True)
    denom = np.sqrt((ac**2).sum(1) * (bc**2).sum(1))
    per = np.where(denom > 0, (ac * bc).sum(1) / np.where(denom > 0, denom, 1.0), np.nan)
    overall = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    return {"per_perturbation": per, "mean": float(np.nanmean(per)), "overall": overall}


def mask_recovery(
    true_mask: ArrayLike, mask_probs: ArrayLike, threshold: float = 0.5
) -> dict[str, Any]:
    """Agreement of a learned latent mask with the true one, up to a permutation of latents.

    Latent dimensions are identifiable only up to order, so learned columns are matched to true
    columns (the true mask padded with all-zero columns when the model has more latents) by the
    assignment that maximises entrywise agreement (``scipy.optimize.linear_sum_assignment``).
    The SAMS-VAE paper could not score this on real data (no ground truth); our metric.

    Parameters
    ----------
    true_mask
        ``[T, D_true]`` 0/1.
    mask_probs
        ``[T, D_model]`` probabilities ``q(m = 1)``, thresholded at ``threshold`` (paper: 0.5).

    Returns
    -------
    dict
        ``accuracy`` (entrywise, after matching), ``precision``, ``recall``, ``f1`` of the
        non-zero entries, and ``columns`` (the true column matched to each learned column, -1
        for padding).

    Examples
    --------
    >>> import numpy as np
    >>> out = mask_recovery(np.array([[1, 0], [0, 1]]), np.array([[0.1, 0.9], [0.8, 0.2]]))
    >>> out["accuracy"], out["columns"]  # the learned columns are the true ones swapped
    (1.0, array([1, 0]))
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import f1_score, precision_score, recall_score

    t = np.asarray(true_mask).astype(int)
    m = (np.asarray(mask_probs, dtype=float) > threshold).astype(int)
    if t.ndim != 2 or m.ndim != 2 or t.shape[0] != m.shape[0]:
        raise ValueError(f"masks must be [T, D] with the same T, got {t.shape} and {m.shape}")
    d = max(t.shape[1], m.shape[1])
    tp = np.zeros((t.shape[0], d), int)
    tp[:, : t.shape[1]] = t
    mp = np.zeros((m.shape[0], d), int)
    mp[:, : m.shape[1]] = m
    agree = mp.T @ tp + (1 - mp).T @ (1 - tp)  # [learned, true] entrywise agreement
    rows, cols = linear_sum_assignment(-agree)
    matched = tp[:, cols[np.argsort(rows)]]
    yt, yp = matched.ravel(), mp.ravel()
    columns = np.where(cols[np.argsort(rows)] < t.shape[1], cols[np.argsort(rows)], -1)
    return {
        "accuracy": float((yt == yp).mean()),
        "precision": float(precision_score(yt, yp, zero_division=0)),
        "recall": float(recall_score(yt, yp, zero_division=0)),
        "f1": float(f1_score(yt, yp, zero_division=0)),
        "columns": columns[: m.shape[1]],
    }


def pathway_accuracy(
    mask_probs: ArrayLike,
    pathways: ArrayLike,
    threshold: float = 0.5,
    n_repeats: int = 10,
    test_size: float = 0.3,
    seed: int = 0,
    n_estimators: int = 100,
) -> dict[str, Any]:
    """Pathway prediction accuracy from thresholded masks (SAMS-VAE sec. 4.1.1).

    A random forest predicts each perturbation's pathway from its binary mask
    (``q(m) > threshold``); accuracy on held-out perturbations over ``n_repeats`` random
    70/30 splits.

    Returns
    -------
    dict
        ``mean``, ``sd`` and the per-split ``scores``.

    Examples
    --------
    >>> import numpy as np
    >>> masks = np.repeat(np.eye(3), 4, axis=0)  # 12 perturbations, one mask per pathway
    >>> pathway_accuracy(masks, np.repeat(["a", "b", "c"], 4), n_repeats=2, n_estimators=10)["mean"]
    1.0
    """
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    feats = (np.asarray(mask_probs, dtype=float) > threshold).astype(int)
    labels = np.asarray(pathways)
    if feats.shape[0] != labels.shape[0]:
        raise ValueError(f"{feats.shape[0]} mask rows but {labels.shape[0]} pathway labels")
    scores = []
    for r in range(n_repeats):
        xtr, xte, ytr, yte = train_test_split(
            feats, labels, test_size=test_size, random_state=seed + r
        )
        rf = RandomForestClassifier(n_estimators=n_estimators, random_state=seed + r, n_jobs=1)
        rf.fit(xtr, ytr)
        scores.append(accuracy_score(yte, rf.predict(xte)))
    scores = np.asarray(scores)
    return {
        "mean": float(scores.mean()),
        "sd": float(scores.std(ddof=1)) if n_repeats > 1 else 0.0,
        "scores": scores,
    }


# ------------------------------------------------------------------------------------ LIFT
def pr_auc(labels: ArrayLike | torch.Tensor, scores: ArrayLike | torch.Tensor) -> float:
    """Area under the precision-recall curve as average precision (LIFT Sec. 6, App. C).

    Parameters
    ----------
    labels
        Binary labels (e.g. ``y > 10`` on held-out sequences).
    scores
        Predicted activities f(x); higher means "more likely a hit".

    Raises
    ------
    ValueError
        If the lengths differ or there is no positive label (the metric is undefined).

    Examples
    --------
    >>> pr_auc([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.4])
    1.0
    """
    import numpy as np
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(bool).ravel()
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape} vs {s.shape}")
    if not y.any():
        raise ValueError("no positive label: PR AUC is undefined (use a larger test set)")
    return float(average_precision_score(y, s))


def pr_curve(
    labels: ArrayLike | torch.Tensor, scores: ArrayLike | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall arrays (``sklearn.metrics.precision_recall_curve``).

    Examples
    --------
    >>> precision, recall = pr_curve([0, 1, 1, 0], [0.1, 0.9, 0.6, 0.4])
    >>> recall
    array([1. , 1. , 1. , 0.5, 0. ])
    """
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).astype(bool).ravel()
    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, float).ravel()
    precision, recall, _ = precision_recall_curve(y, s)
    return precision, recall


def mean_corr_coef(true_latent: ArrayLike, learned_latent: ArrayLike) -> dict[str, Any]:
    """Mean correlation coefficient (MCC) after matching latent dimensions.

    The disentanglement score of identifiable-VAE work (Khemakhem et al. 2020); not in the
    SAMS-VAE paper, which had no true latents to compare with (our metric). Absolute Pearson correlations between every
    true and every learned latent dimension (over cells), the one-to-one matching that maximises
    their sum (``scipy.optimize.linear_sum_assignment``), and the mean over matched pairs. 1 means
    every true dimension is recovered up to scale, sign and order.

    Parameters
    ----------
    true_latent, learned_latent
        ``[N, D_true]`` and ``[N, D_model]``, the same cells in the same order.

    Returns
    -------
    dict
        ``mcc`` (mean over the ``min(D_true, D_model)`` matched pairs), ``per_dim`` (the matched
        absolute correlations, by true dimension; NaN if unmatched) and ``columns`` (the learned
        dimension matched to each true one, -1 if none).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.random.default_rng(0).standard_normal((200, 2))
    >>> round(mean_corr_coef(z, -3 * z[:, ::-1])["mcc"], 6)
    1.0
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    a, b = np.asarray(true_latent, float), np.asarray(learned_latent, float)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise ValueError(f"latents must be [N, D] with the same N, got {a.shape} and {b.shape}")
    corr = np.abs(np.corrcoef(a.T, b.T)[: a.shape[1], a.shape[1] :])  # [true, learned]
    corr = np.nan_to_num(corr)  # a constant learned dimension correlates with nothing
    rows, cols = linear_sum_assignment(-corr)
    per_dim = np.full(a.shape[1], np.nan)
    per_dim[rows] = corr[rows, cols]
    columns = np.full(a.shape[1], -1)
    columns[rows] = cols
    return {"mcc": float(corr[rows, cols].mean()), "per_dim": per_dim, "columns": columns}
