"""Real perturb-seq screens (scPerturb releases) as model-ready AnnData, preprocessed with scanpy.

:func:`load_scperturb` turns a provider's h5ad (Norman et al. 2019, Replogle et al. 2022, as
released by scPerturb, Peidli et al. 2024) into what the SAMS-VAE models read, in the
conventions of :func:`~liftkit.perturb.simulate.simulate_perturb_seq`:

- ``layers["counts"]``: raw integer UMI counts, scipy CSR (float32 storage);
- ``X``: ``log1p(normalize_total(counts, 1e4))`` (scanpy), CSR, for DE and embeddings;
- ``obsm["dosage"]``: cells x perturbations 0/1 float32 DataFrame with *sparse* columns (one
  per perturbed gene, combinations have several ones, controls an all-zero row); its columns
  name the perturbations, as :func:`liftkit.perturb.setup.read_dosage` reads them;
- ``obs["perturbation"]``: ``"control"``, ``"KLF1"``, ``"CEBPE+KLF1"`` (the provider's label is
  kept in ``obs["provider_perturbation"]``), ``obs["n_guides"]``, ``obs["library_size"]``;
- ``uns["preprocessing"]``: what was done, with counts before and after each step.

Every step keeps matrices sparse: a 100k-cell file is never made dense here (the models densify
only the selected genes, see :func:`liftkit.perturb.setup.read_counts`).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from liftkit.data.validate import validate_counts

#: scPerturb's label of control cells (non-targeting guides).
CONTROL = "control"
#: Where the perturbation names wait in ``uns`` while the dosages are a CSR matrix.
NAMES_KEY = "dosage_names"


def read_h5ad_checked(path: str | Path) -> ad.AnnData:
    """Read an h5ad file; a truncated or corrupt file is a one-line error saying what to do.

    Raises
    ------
    ValueError
        When h5py/anndata cannot read the file.

    Examples
    --------
    >>> read_h5ad_checked("no/such/file.h5ad")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: cannot read no/such/file.h5ad as h5ad (...): ...
    """
    try:
        return ad.read_h5ad(path)
    except Exception as err:  # noqa: BLE001 - h5py raises OSError, KeyError, ... on bad files
        raise ValueError(
            f"cannot read {path} as h5ad ({type(err).__name__}; truncated or corrupt?): delete "
            "it and run `liftkit data fetch NAME` again"
        ) from None


def check_obs_columns(adata: ad.AnnData, required: Sequence[str], source: str = "file") -> None:
    """Raise a one-line ValueError unless ``adata.obs`` has every column of ``required``.

    Examples
    --------
    >>> import anndata, pandas as pd
    >>> a = anndata.AnnData(obs=pd.DataFrame({"perturbation": ["control"]}, index=["c0"]))
    >>> check_obs_columns(a, ["perturbation"])  # passes silently
    >>> check_obs_columns(a, ["perturbation", "nperts"])
    Traceback (most recent call last):
    ...
    ValueError: file lacks obs column(s) ['nperts'] (has ['perturbation']): not the expected release; check the manifest's url and obs_columns
    """
    missing = [c for c in required if c not in adata.obs.columns]
    if missing:
        raise ValueError(
            f"{source} lacks obs column(s) {missing} (has {list(adata.obs.columns)[:12]}): not "
            "the expected release; check the manifest's url and obs_columns"
        )


def _label_tokens(
    label: str, separator: str | None, controls: frozenset[str]
) -> list[str]:
    """Perturbed genes named by one provider label (control tokens, e.g. ``ctrl``, dropped)."""
    parts = label.split(separator) if separator else [label]
    return sorted({p.strip() for p in parts if p.strip() and p.strip() not in controls})


def scperturb_dosage(
    labels: Sequence[str] | pd.Series,
    separator: str | None = "_",
    control_labels: Sequence[str] = (CONTROL,),
) -> tuple[sp.csr_matrix, list[str], np.ndarray]:
    """Dosage matrix (cells x perturbed genes) from scPerturb ``perturbation`` labels.

    A label names one gene (``"KLF1"``), several joined by ``separator`` (``"CEBPE_KLF1"``), or
    a control (one of ``control_labels``; tokens that are control labels, such as ``ctrl`` in
    ``"KLF1_ctrl"``, are dropped). Parsed once per distinct label, then indexed per cell.

    Parameters
    ----------
    labels
        One label per cell.
    separator
        What joins genes of a combination; ``None``: labels are single genes.
    control_labels
        Labels (and tokens) that mean "no perturbation".

    Returns
    -------
    dosage, names, label
        CSR float32 ``[N, T]`` 0/1 dosages, the ``T`` gene names (sorted), and each cell's
        label in liftkit form (``"control"``, ``"A"``, ``"A+B"``).

    Raises
    ------
    ValueError
        Missing labels, or no control cell.

    Examples
    --------
    >>> d, names, lab = scperturb_dosage(["control", "KLF1", "CEBPE_KLF1", "KLF1_ctrl"],
    ...                                  control_labels=["control", "ctrl"])
    >>> names, list(lab)
    (['CEBPE', 'KLF1'], ['control', 'KLF1', 'CEBPE+KLF1', 'KLF1'])
    >>> d.toarray().astype(int).tolist()
    [[0, 0], [0, 1], [1, 1], [0, 1]]
    """
    cat = pd.Categorical(np.asarray(labels, dtype=object))
    if (cat.codes < 0).any():
        raise ValueError(
            f"{int((cat.codes < 0).sum())} cells have no perturbation label: drop them or label "
            "them (controls: one of control_labels)"
        )
    controls = frozenset(map(str, control_labels))
    tokens = [_label_tokens(str(c), separator, controls) for c in cat.categories]
    names = sorted({t for toks in tokens for t in toks})
    col = {n: j for j, n in enumerate(names)}
    rows = np.repeat(np.arange(len(tokens)), [len(t) for t in tokens])
    cols = np.array([col[t] for toks in tokens for t in toks], dtype=np.int64)
    per_label = sp.csr_matrix(
        (np.ones(len(cols), np.float32), (rows, cols)), shape=(len(tokens), len(names))
    )
    text = np.array(["+".join(t) or CONTROL for t in tokens], dtype=object)
    dosage = per_label[cat.codes].tocsr()
    if len(names) and dosage.getnnz(axis=1).min() > 0:
        raise ValueError(
            f"no control cells: none is labelled one of {sorted(controls)}; pass the provider's "
            "control label as control_labels"
        )
    return dosage, names, text[cat.codes]


def _check_nperts(adata: ad.AnnData, dosage: sp.csr_matrix) -> None:
    """scPerturb's ``nperts`` must equal the genes parsed from each label."""
    if "nperts" not in adata.obs:
        return
    parsed = np.asarray(dosage.sum(1)).ravel()
    given = pd.to_numeric(adata.obs["nperts"], errors="coerce").to_numpy()
    bad = ~np.isclose(parsed, given)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        label = adata.obs["provider_perturbation"].iloc[i]
        raise ValueError(
            f"{int(bad.sum())} cells have nperts different from the genes parsed from their "
            f"label (e.g. {label!r}: nperts={given[i]}, parsed {parsed[i]:.0f}); check "
            "separator and control_labels, or pass check_nperts=False"
        )


def _to_model_ready(
    raw: ad.AnnData,
    separator: str | None,
    control_labels: Sequence[str],
    check_nperts: bool,
) -> ad.AnnData:
    """Counts as CSR in ``layers["counts"]``, sparse dosages, liftkit labels (no filtering)."""
    counts = raw.X if sp.issparse(raw.X) else sp.csr_matrix(raw.X)
    counts = sp.csr_matrix(counts, dtype=np.float32)
    counts.sum_duplicates()
    obs = raw.obs.rename(columns={"perturbation": "provider_perturbation"})
    adata = ad.AnnData(X=counts, obs=obs, var=raw.var.copy())
    adata.var_names_make_unique()
    validate_counts(adata, layer=None)
    dosage, names, labels = scperturb_dosage(
        adata.obs["provider_perturbation"].astype(str), separator, control_labels
    )
    if check_nperts:
        _check_nperts(adata, dosage)
    adata.obs["perturbation"] = pd.Categorical(labels)
    # CSR while filtering (anndata subsets it fast); a named DataFrame at the end (_finish)
    adata.obsm["dosage"] = dosage
    adata.uns[NAMES_KEY] = np.asarray(names, dtype=object)
    return adata


def _dosage_csr(adata: ad.AnnData) -> sp.csr_matrix:
    """``obsm["dosage"]`` (CSR, or a DataFrame with sparse or dense columns) as CSR."""
    d = adata.obsm["dosage"]
    if isinstance(d, pd.DataFrame):
        sparse_cols = all(isinstance(t, pd.SparseDtype) for t in d.dtypes)
        return sp.csr_matrix(d.sparse.to_coo() if sparse_cols and d.shape[1] else d.to_numpy())
    return sp.csr_matrix(d)


def _dosage_names(adata: ad.AnnData) -> list[str]:
    """Perturbation names: the DataFrame's columns, else ``uns[NAMES_KEY]`` (while filtering)."""
    d = adata.obsm["dosage"]
    return [str(c) for c in (d.columns if isinstance(d, pd.DataFrame) else adata.uns[NAMES_KEY])]


def _drop_rare_perturbations(adata: ad.AnnData, min_cells: int) -> ad.AnnData:
    """Remove perturbations given to fewer than ``min_cells`` cells, and the cells that got them
    (they would otherwise look like controls or a different combination)."""
    d = _dosage_csr(adata)
    rare = np.asarray(d.sum(0)).ravel() < min_cells
    if not rare.any():
        return adata
    keep_cells = np.asarray(d[:, np.flatnonzero(rare)].sum(1)).ravel() == 0
    return _subset(adata, keep_cells, ~rare)


def _de_mask(
    adata: ad.AnnData, pval: float, min_effect: float, min_detected: float
) -> tuple[list[str], np.ndarray]:
    """Group names (control included) and a ``[groups, genes]`` mask of DE genes against the
    controls, as described in :func:`strong_perturbations`."""
    import scanpy as sc
    from scipy import stats

    single = np.asarray(_dosage_csr(adata).sum(1)).ravel() <= 1
    labels = adata.obs["perturbation"][single].astype(str)
    if not (labels == CONTROL).any():
        raise ValueError("no control cells: strong_perturbations compares each group to them")
    light = ad.AnnData(X=adata.X[np.flatnonzero(single)], obs=pd.DataFrame(
        {"group": pd.Categorical(labels)}, index=labels.index))
    agg = sc.get.aggregate(light, by="group", func=["mean", "var", "count_nonzero"])
    groups = list(agg.obs_names)
    sizes = light.obs["group"].value_counts().reindex(groups).to_numpy(float)[:, None]
    mean, sd = agg.layers["mean"], np.sqrt(agg.layers["var"])
    c = groups.index(CONTROL)
    detected = agg.layers["count_nonzero"] / sizes >= min_detected
    candidate = (np.abs(mean - mean[c]) > min_effect) & (detected | detected[c])
    candidate[c] = False
    rows, cols = np.nonzero(candidate)
    p = np.ones_like(mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        p[rows, cols] = stats.ttest_ind_from_stats(
            mean[rows, cols], sd[rows, cols], sizes[rows, 0], mean[c, cols], sd[c, cols],
            sizes[c, 0], equal_var=True,
        ).pvalue
    padj = stats.false_discovery_control(np.nan_to_num(p, nan=1.0), axis=1)
    return groups, (padj < pval) & candidate




def strong_perturbations(
    adata: ad.AnnData,
    min_de_genes: int,
    pval: float = 0.05,
    min_effect: float = 0.1,
    min_detected: float = 0.1,
) -> list[str]:
    """Perturbations whose single-perturbation cells differ from controls in many genes.

    Stands in for the "strong transcriptional phenotype" filter of Replogle et al. 2022 that the
    SAMS-VAE paper's replogle-filtered set uses (sec. 4.1, after Lopez et al.; Replogle et al.
    used an energy-distance test). Per perturbation and gene: means and variances of the
    log-normalised ``X`` per group (``scanpy.get.aggregate``, one sparse product); a DE gene has
    a mean difference of log-normalised expression from the controls (the paper's DE, sec. 3.2)
    above ``min_effect`` and a Benjamini-Hochberg adjusted p below ``pval`` (``scipy.stats``:
    ``ttest_ind_from_stats``, pooled variance, which stays sane for small groups with genes
    never seen in them; ``false_discovery_control`` per perturbation). Only genes past
    ``min_effect`` and detected in at least ``min_detected`` of the perturbation's cells or of
    the controls are tested (a gene seen in one cell of a small group is not evidence); the
    others count as p = 1, which makes the correction conservative and keeps the cost low.

    Parameters
    ----------
    adata
        Log-normalised ``X``, ``obs["perturbation"]`` with ``"control"``, ``obsm["dosage"]``.
    min_de_genes
        Keep perturbations with at least this many DE genes.
    pval, min_effect, min_detected
        Thresholds of a DE gene (our choices, marked (S): the paper gives none).

    Returns
    -------
    list of str
        Names of the strong perturbations (combinations are not scored).

    Raises
    ------
    ValueError
        No control cells.
    """
    groups, de = _de_mask(adata, pval, min_effect, min_detected)
    n_de = de.sum(1)
    return [g for g, n in zip(groups, n_de, strict=True) if g != CONTROL and n >= min_de_genes]


def associated_genes(
    adata: ad.AnnData,
    pval: float = 0.05,
    min_effect: float = 0.1,
    min_detected: float = 0.1,
) -> list[str]:
    """Genes DE (as in :func:`strong_perturbations`) in at least one perturbation's cells.

    The gene selection of the SAMS-VAE paper's replogle-filtered set (sec. 4.1, after Lopez et
    al.): "genes that were associated with these perturbations". The provider's association
    calls are not in the scPerturb file, so the same DE test as :func:`strong_perturbations`
    rebuilds them (our choice of test and thresholds, marked (S)); highly variable genes
    (``gene_selection="hvg"`` in :func:`load_scperturb`) are the fallback.

    Parameters
    ----------
    adata
        Log-normalised ``X``, ``obs["perturbation"]`` with ``"control"``, ``obsm["dosage"]``.
    pval, min_effect, min_detected
        Thresholds of a DE gene (:func:`strong_perturbations`).

    Returns
    -------
    list of str
        Gene names, in ``adata.var_names`` order.

    Examples
    --------
    >>> genes = associated_genes(lognormalised_screen)  # doctest: +SKIP
    """
    groups, de = _de_mask(adata, pval, min_effect, min_detected)
    de[groups.index(CONTROL)] = False
    return [g for g, hit in zip(adata.var_names, de.any(0), strict=True) if hit]


def _keep_perturbations(adata: ad.AnnData, names: Sequence[str]) -> ad.AnnData:
    """Only cells whose perturbations are all in ``names`` (and controls); drop other columns."""
    keep = np.isin(np.asarray(_dosage_names(adata), dtype=object), list(names))
    d = _dosage_csr(adata)
    keep_cells = np.asarray(d[:, np.flatnonzero(~keep)].sum(1)).ravel() == 0
    return _subset(adata, keep_cells, keep)


def _subset(adata: ad.AnnData, cells: np.ndarray, perts: np.ndarray) -> ad.AnnData:
    """Cells ``cells`` and dosage columns ``perts`` (boolean masks) of a CSR-dosage AnnData."""
    out = adata[cells].copy()
    out.obsm["dosage"] = _dosage_csr(out)[:, np.flatnonzero(perts)]
    out.uns[NAMES_KEY] = np.asarray(_dosage_names(adata), dtype=object)[perts]
    return out


def _select_genes(
    adata: ad.AnnData, n_top_genes: int | None, include_targets: bool, how: str = "hvg"
) -> list[str]:
    """Highly variable genes (scanpy, Seurat flavour on log-normalised ``X``) or the DE genes of
    the perturbations (``how="de"``), plus, optionally, every perturbed gene in the screen."""
    import scanpy as sc

    if how not in ("hvg", "de"):
        raise ValueError(f"gene_selection must be 'hvg' or 'de', got {how!r}")
    if how == "de":
        chosen = set(associated_genes(adata))
        if include_targets:
            chosen |= set(_dosage_names(adata)) & set(adata.var_names)
        return [g for g in adata.var_names if g in chosen]
    if n_top_genes is None or n_top_genes >= adata.n_vars:
        return list(adata.var_names)
    hvg = sc.pp.highly_variable_genes(
        adata, n_top_genes=n_top_genes, flavor="seurat", inplace=False
    )
    # scanpy's flag can exceed n_top_genes on ties; rank its normalised dispersion instead
    score = np.nan_to_num(hvg["dispersions_norm"].to_numpy(float), nan=-np.inf)
    top = np.argsort(-score, kind="stable")[:n_top_genes]
    chosen = set(adata.var_names[top])
    if include_targets:
        chosen |= set(_dosage_names(adata)) & set(adata.var_names)
    return [g for g in adata.var_names if g in chosen]


def _lognormal(adata: ad.AnnData, target_sum: float) -> ad.AnnData:
    """A light AnnData with ``X = log1p(normalize_total(counts))`` (scanpy, sparse), the labels
    and the dosages of ``adata`` (whose ``X`` holds raw counts): for DE and gene selection."""
    import scanpy as sc

    out = ad.AnnData(
        X=adata.X.copy(), obs=adata.obs[["perturbation"]].copy(), var=pd.DataFrame(
            index=adata.var_names)
    )
    out.obsm["dosage"] = adata.obsm["dosage"]
    out.uns[NAMES_KEY] = adata.uns[NAMES_KEY]
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    return out


def _step(log: dict[str, list[Any]], name: str, adata: ad.AnnData) -> None:
    """Record cells, genes and perturbations after a preprocessing step."""
    for key, value in (("step", name), ("cells", adata.n_obs), ("genes", adata.n_vars),
                       ("perturbations", adata.obsm["dosage"].shape[1])):
        log[key].append(value)


def _finish(out: ad.AnnData, target_sum: float, sparse_dosage: bool) -> ad.AnnData:
    """In place on ``out`` (its genes selected): drop cells left without counts, move counts to
    ``layers["counts"]``, set ``X`` to log-normalised counts, store float32 dosages (sparse
    columns or dense), and add the per-cell summaries of simulate_perturb_seq."""
    import scanpy as sc

    n_counts = np.asarray(out.X.sum(1)).ravel()
    if (n_counts == 0).any():  # filter_cells copies X even when every cell stays
        sc.pp.filter_cells(out, min_counts=1)
    else:
        out.obs["n_counts"] = n_counts  # what filter_cells records
    out.layers["counts"] = out.X
    out.X = out.layers["counts"].copy()
    sc.pp.normalize_total(out, target_sum=target_sum)
    sc.pp.log1p(out)
    out.uns.pop("log1p", None)
    d = _dosage_csr(out).astype(np.float32)
    columns = _dosage_names(out)
    del out.uns[NAMES_KEY]
    out.obsm["dosage"] = (
        pd.DataFrame.sparse.from_spmatrix(d, index=out.obs_names, columns=columns)
        if sparse_dosage
        else pd.DataFrame(d.toarray(), index=out.obs_names, columns=columns)
    )
    out.obs["n_guides"] = np.asarray(d.sum(1)).ravel().astype(np.int64)
    out.obs["library_size"] = np.asarray(out.layers["counts"].sum(1)).ravel().astype(np.float64)
    out.obs["perturbation"] = out.obs["perturbation"].cat.remove_unused_categories()
    return out


def load_scperturb(
    path: str | Path,
    *,
    source: str = "file",
    obs_columns: Sequence[str] = ("perturbation",),
    separator: str | None = "_",
    control_labels: Sequence[str] = (CONTROL,),
    check_nperts: bool = True,
    max_cells: int | None = None,
    min_genes: int = 200,
    min_cells: int = 3,
    min_cells_per_perturbation: int = 1,
    perturbations: Sequence[str] | None = None,
    min_de_genes: int = 0,
    n_top_genes: int | None = 5000,
    include_targets: bool = True,
    target_sum: float = 1e4,
    sparse_dosage: bool = True,
    seed: int = 0,
    gene_selection: str = "hvg",
) -> ad.AnnData:
    """A scPerturb perturb-seq h5ad as model-ready AnnData, preprocessed with scanpy.

    Steps, all on sparse matrices: read and check the obs columns; parse labels into dosages
    (:func:`scperturb_dosage`); optionally subsample cells (``max_cells``); ``filter_cells``
    (``min_genes``) and ``filter_genes`` (``min_cells``); drop perturbations given to fewer than
    ``min_cells_per_perturbation`` cells (with their cells); keep ``perturbations`` if given, and
    those with at least ``min_de_genes`` DE genes (:func:`strong_perturbations`); select
    ``n_top_genes`` highly variable genes (Seurat flavour on ``log1p(normalize_total)``), or with
    ``gene_selection="de"`` the genes DE in some kept perturbation (:func:`associated_genes`,
    the SAMS-VAE paper's Replogle selection as rebuilt here), plus the perturbed genes
    (``include_targets``); drop cells left without counts.

    Parameters
    ----------
    path
        The h5ad file (raw integer counts in ``X``).
    source
        Name used in error messages (the manifest entry).
    obs_columns
        Columns ``obs`` must have (the manifest's ``obs_columns``); ``perturbation`` is read.
    separator, control_labels
        How labels join combinations, and which labels mean control (:func:`scperturb_dosage`).
    check_nperts
        Check scPerturb's ``nperts`` against the parsed labels.
    max_cells, seed
        Subsample to at most this many cells first (for quick runs), with this seed.
    min_genes, min_cells, min_cells_per_perturbation, perturbations, min_de_genes
        Filters above.
    n_top_genes, include_targets, gene_selection
        Gene selection: ``"hvg"`` (``n_top_genes`` highly variable genes; ``None`` keeps every
        gene) or ``"de"`` (:func:`associated_genes`; ``n_top_genes`` unused).
    target_sum
        ``normalize_total`` target of the log-normalised ``X``.
    sparse_dosage
        ``obsm["dosage"]`` with sparse columns (small in memory; anndata cannot write it to
        h5ad), or a dense float32 DataFrame (``False``: writable with ``write_h5ad``).

    Returns
    -------
    anndata.AnnData
        See the module docstring; ``uns["preprocessing"]`` records each step's size.

    Raises
    ------
    ValueError
        An unreadable file, missing obs columns, non-integer counts, labels that disagree with
        ``nperts``, no control cells, or filters that leave no cell.

    Examples
    --------
    >>> adata = load_scperturb("NormanWeissman2019_filtered.h5ad")  # doctest: +SKIP
    >>> adata.layers["counts"], adata.obsm["dosage"].shape  # doctest: +SKIP
    """
    import scanpy as sc

    raw = read_h5ad_checked(path)
    check_obs_columns(raw, list(dict.fromkeys(["perturbation", *obs_columns])), source)
    adata = _to_model_ready(raw, separator, control_labels, check_nperts)
    del raw
    log: dict[str, list[Any]] = {"step": [], "cells": [], "genes": [], "perturbations": []}
    _step(log, "read", adata)
    if max_cells is not None and adata.n_obs > max_cells:
        sc.pp.subsample(adata, n_obs=max_cells, random_state=seed)
        _step(log, "subsample", adata)
    sc.pp.filter_cells(adata, min_genes=min_genes)
    sc.pp.filter_genes(adata, min_cells=min_cells)
    _step(log, "filter_cells_genes", adata)
    adata = _drop_rare_perturbations(adata, min_cells_per_perturbation)
    if perturbations is not None:
        adata = _keep_perturbations(adata, perturbations)
    _step(log, "perturbation_filter", adata)
    lognorm = _lognormal(adata, target_sum)
    if min_de_genes > 0:
        adata = _keep_perturbations(adata, strong_perturbations(lognorm, min_de_genes))
        lognorm = lognorm[adata.obs_names]
        _step(log, "strong_perturbations", adata)
    genes = _select_genes(lognorm, n_top_genes, include_targets, gene_selection)
    del lognorm
    gc.collect()
    if adata.n_obs == 0 or not genes or adata.obsm["dosage"].shape[1] == 0:
        raise ValueError(
            f"{source}: the filters left no cells, genes or perturbations "
            f"({' -> '.join(map(str, log['perturbations']))} perturbations); relax them "
            "(min_de_genes, min_cells_per_perturbation, min_genes)"
        )
    adata = adata[:, genes].copy()
    gc.collect()  # AnnData objects hold reference cycles: free the all-genes matrix before _finish
    out = _finish(adata, target_sum, sparse_dosage)
    _step(log, "genes_selected", out)
    out.uns["preprocessing"] = {**log, "source": source, "n_top_genes": n_top_genes or 0,
                                "gene_selection": gene_selection}
    return out


def norman_ood_split(
    adata: ad.AnnData,
    combo_frac: float = 1.0,
    test_frac: float = 0.25,
    val_frac: float = 0.1,
    seed: int = 0,
) -> pd.Series:
    """The ``norman-ood`` split of the SAMS-VAE paper (sec. 4.2): held-out combinations.

    The distinct combinations (cells with two or more perturbations) are shuffled with ``seed``;
    the last ``test_frac`` of them are the test set. Training cells are the controls, every
    single-perturbation cell, and the cells of the first ``combo_frac`` of the remaining
    combinations (the paper: 0, 25, 50, 75 or 100%); the other combinations are ``"unused"``. A
    random ``val_frac`` of the training cells is ``"val"`` (our choice: the paper does not say).

    Parameters
    ----------
    adata
        Model-ready AnnData (``obs["perturbation"]``, ``obsm["dosage"]``).
    combo_frac
        Fraction of the non-test combinations used in training.
    test_frac, val_frac
        Fractions of combinations (test) and of training cells (validation).
    seed
        Seed of the shuffles (the paper uses 5 random splits: seeds 0-4).

    Returns
    -------
    pandas.Series
        ``"train"``, ``"val"``, ``"test"`` or ``"unused"`` per cell, indexed like ``obs``.

    Examples
    --------
    >>> import anndata, pandas as pd, numpy as np
    >>> labels = ["control", "A", "B", "A+B", "A+C", "B+C", "C"] * 3
    >>> a = anndata.AnnData(obs=pd.DataFrame({"perturbation": labels},
    ...                     index=[f"c{i}" for i in range(21)]))
    >>> a.obs["n_guides"] = [lab.count("+") + (lab != "control") for lab in labels]
    >>> split = norman_ood_split(a, combo_frac=1.0, test_frac=0.34, val_frac=0.0)
    >>> sorted(split[a.obs["n_guides"].to_numpy() == 2].unique())
    ['test', 'train']
    """
    if not (0 <= combo_frac <= 1 and 0 < test_frac < 1 and 0 <= val_frac < 1):
        raise ValueError("combo_frac must lie in [0, 1], test_frac in (0, 1), val_frac in [0, 1)")
    rng = np.random.default_rng(seed)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    is_combo = _n_perturbations(adata) >= 2
    combos = np.array(sorted(set(labels[is_combo])), dtype=object)
    combos = combos[rng.permutation(len(combos))]
    n_test = int(np.ceil(test_frac * len(combos))) if len(combos) else 0
    test, rest = combos[len(combos) - n_test:], combos[: len(combos) - n_test]
    used = rest[: int(round(combo_frac * len(rest)))]
    split = np.where(is_combo, "unused", "train").astype(object)
    split[np.isin(labels, used)] = "train"
    split[np.isin(labels, test)] = "test"
    train = np.flatnonzero(split == "train")
    split[train[rng.random(len(train)) < val_frac]] = "val"
    return pd.Series(pd.Categorical(split), index=adata.obs_names, name="split")


def replogle_random_split(
    adata: ad.AnnData, val_frac: float = 0.1, test_frac: float = 0.1, seed: int = 0
) -> pd.Series:
    """The SAMS-VAE paper's Replogle split (sec. 4.1): cells sampled at random into train,
    validation and test (the fractions are not given in the paper: ours).

    Examples
    --------
    >>> import anndata, numpy as np
    >>> a = anndata.AnnData(np.zeros((1000, 1)))
    >>> replogle_random_split(a, 0.1, 0.2).value_counts().sort_index().tolist()
    [193, 723, 84]
    """
    if not (0 <= val_frac < 1 and 0 < test_frac < 1 and val_frac + test_frac < 1):
        raise ValueError("val_frac and test_frac must lie in [0, 1) and sum below 1")
    u = np.random.default_rng(seed).random(adata.n_obs)
    split = np.where(u < test_frac, "test", np.where(u < test_frac + val_frac, "val", "train"))
    return pd.Series(pd.Categorical(split), index=adata.obs_names, name="split")


def _n_perturbations(adata: ad.AnnData) -> np.ndarray:
    """Perturbations per cell: ``obs["n_guides"]`` when present, else the dosage row sums."""
    if "n_guides" in adata.obs:
        return adata.obs["n_guides"].to_numpy()
    return np.asarray(_dosage_csr(adata).sum(1)).ravel()
