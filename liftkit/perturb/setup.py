"""AnnData setup for the SAMS-VAE family: read and check counts and dosages, build designs.

Counts are raw integers in a layer, dosages a cells x perturbations 0/1 matrix in ``.obsm``
(a DataFrame names the perturbations), as :func:`~liftkit.perturb.simulate.simulate_perturb_seq`
writes them. Every check raises a ValueError that says what is wrong and how to fix it.

Both can be read as CSR matrices (``sparse=True``) that are never made dense: the models keep
them in :class:`CountRows` and make one minibatch of rows dense at a time, and the distinct
dosage rows (:func:`distinct_rows`, :class:`Conditions`) are found from the CSR structure.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from liftkit.data import validate_counts


def read_counts(
    adata: ad.AnnData, layer: str | None = "counts", *, sparse: bool = False
) -> np.ndarray | sp.csr_matrix:
    """Raw counts ``[N, G]`` after :func:`liftkit.data.validate_counts`: a dense float32 array,
    or with ``sparse=True`` a float32 CSR matrix that is never made dense (wrap it in
    :class:`CountRows` to train on it).

    Parameters
    ----------
    adata
        Cells x genes.
    layer
        Layer of raw counts; None reads ``adata.X``.
    sparse
        Return a CSR matrix (a dense layer is converted; a sparse one stays sparse).

    Raises
    ------
    ValueError
        Counts that are not non-negative integers, an empty matrix, or a cell without counts
        (the model conditions on a positive library size, SAMS-VAE sec. 2.2).

    Examples
    --------
    >>> import anndata as ad, numpy as np, scipy.sparse as sp
    >>> adata = ad.AnnData(sp.csr_matrix(np.array([[0, 2, 1], [3, 0, 0]], np.float32)))
    >>> read_counts(adata, layer=None, sparse=True).nnz
    3
    >>> read_counts(adata, layer=None).sum(1).tolist()
    [3.0, 3.0]
    """
    validate_counts(adata, layer)
    x = adata.X if layer is None else adata.layers[layer]
    if len(x.shape) != 2 or x.shape[0] < 1:
        raise ValueError(f"counts must be a non-empty cells x genes matrix, got shape {x.shape}")
    if sparse or sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32)
        empty = int((np.asarray(x.sum(1)).ravel() == 0).sum())  # stored zeros count as none
    else:
        x = np.asarray(x, dtype=np.float32)
        empty = int((x.sum(1) == 0).sum())
    if empty:
        raise ValueError(
            f"{empty} cells have zero total counts: filter empty cells "
            "(the model conditions on a positive library size)"
        )
    return x if sparse or not sp.issparse(x) else x.toarray()


class CountRows:
    """A cells x features matrix (raw counts ``[N, G]``, or dosages / designs ``[N, T]``) kept
    as CSR; only the rows asked for are made dense.

    Stands in for the dense tensor where the models read counts and dosages: ``shape``,
    ``device``, ``len``, ``rows[idx]`` (a tensor or array of cell indices, or a slice: dense
    float32 ``[B, G]`` on ``device``), ``rows.sum(1)`` (library sizes ``[N]``) and
    ``rows.sum(0)`` (per-perturbation cell counts ``n_t`` of SAMS-VAE App. A.1, summed in
    float64). Minibatch SVI (SAMS-VAE App. A.1) then holds one dense minibatch at a time, so a
    100k-cell screen is never made dense.

    Parameters
    ----------
    counts
        Cells x features (CSR, any scipy sparse format, or a dense array).
    device
        Where the dense rows go.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, torch
    >>> rows = CountRows(sp.csr_matrix(np.array([[0, 2], [3, 0], [1, 1]], np.float32)))
    >>> rows[torch.tensor([2, 0])].tolist()
    [[1.0, 1.0], [0.0, 2.0]]
    >>> rows.sum(1).tolist(), tuple(rows.shape)
    ([2.0, 3.0, 2.0], (3, 2))
    """

    def __init__(self, counts: sp.spmatrix | np.ndarray, device: torch.device | str = "cpu") -> None:
        self.csr = sp.csr_matrix(counts, dtype=np.float32)
        self.device = torch.device(device)

    @property
    def shape(self) -> torch.Size:
        """``(N, G)``."""
        return torch.Size(self.csr.shape)

    def __len__(self) -> int:
        return self.csr.shape[0]

    def __getitem__(self, idx: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
        if isinstance(idx, torch.Tensor):
            idx = idx.detach().cpu().numpy()
        return torch.from_numpy(self.csr[idx].toarray()).to(self.device)

    def sum(self, dim: int) -> torch.Tensor:
        """Sums over cells (``dim=0``, ``[G]``) or genes (``dim=1``, library sizes ``[N]``)."""
        total = np.asarray(self.csr.sum(axis=dim, dtype=np.float64)).ravel()
        return torch.from_numpy(total.astype(np.float32)).to(self.device)

    def moments(self, log1p: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-gene mean and sd (``n - 1`` denominator, as ``torch.std``) over the cells of
        ``log1p`` counts (``log1p=False``: of the counts), from the nonzero entries
        (``log1p(0) = 0``): the encoder's input standardisation (SAMS-VAE App. A.3) without a
        dense ``[N, G]`` matrix."""
        csr = self.csr if self.csr.has_canonical_format else sp.csr_matrix(self.csr, copy=True)
        csr.sum_duplicates()
        lx = csr.data.astype(np.float64)  # the stored values only: no index copies
        lx = np.log1p(lx, out=lx) if log1p else lx
        n, g = csr.shape
        mean = np.bincount(csr.indices, weights=lx, minlength=g) / n
        sq = np.bincount(csr.indices, weights=np.square(lx, out=lx), minlength=g)
        var = np.clip(sq - n * mean**2, 0.0, None) / (n - 1) if n > 1 else np.full_like(mean, np.nan)
        mean_sd = torch.from_numpy(np.stack([mean, np.sqrt(var)]).astype(np.float32))
        return tuple(mean_sd.to(self.device).unbind(0))


def read_dosage(
    adata: ad.AnnData, dosage_key: str = "dosage", *, sparse: bool = False
) -> tuple[np.ndarray | sp.csr_matrix, list[str]]:
    """Perturbation dosages ``d`` (cells x perturbations, float32 0/1) and perturbation names.

    Parameters
    ----------
    adata
        Cells x genes.
    dosage_key
        Key of the dosage matrix in ``adata.obsm`` (dense, scipy sparse, or a DataFrame); a
        DataFrame's columns name the perturbations, otherwise they are ``pert0, pert1, ...``.
    sparse
        Return a float32 CSR matrix (a sparse ``.obsm`` entry is never made dense; wrap it in
        :class:`CountRows` to train on it); default: a dense float32 array.

    Raises
    ------
    ValueError
        A missing key, a wrong shape, or NaN, inf or negative dosages.

    Examples
    --------
    >>> import anndata as ad, numpy as np, scipy.sparse as sp
    >>> adata = ad.AnnData(np.ones((3, 2), np.float32))
    >>> adata.obsm["dosage"] = sp.csr_matrix(np.array([[0, 1], [1, 1], [0, 0]], np.float32))
    >>> d, names = read_dosage(adata, sparse=True)
    >>> d.format, d.nnz, names
    ('csr', 3, ['pert0', 'pert1'])
    >>> read_dosage(adata)[0].tolist()
    [[0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]
    """
    if dosage_key not in adata.obsm:
        raise ValueError(
            f"adata.obsm[{dosage_key!r}] is missing: store a cells x perturbations 0/1 dosage "
            "matrix there (a DataFrame names the perturbations), e.g. from simulate_perturb_seq"
        )
    raw = adata.obsm[dosage_key]
    names = [str(c) for c in raw.columns] if isinstance(raw, pd.DataFrame) else None
    if isinstance(raw, pd.DataFrame) and len(raw.columns) and all(
        isinstance(t, pd.SparseDtype) for t in raw.dtypes
    ):
        raw = raw.sparse.to_coo()  # a sparse DataFrame (liftkit.data) stays sparse
    if sp.issparse(raw):
        d = sp.csr_matrix(raw)
        values = d.data
    else:
        d = values = np.asarray(raw.to_numpy() if isinstance(raw, pd.DataFrame) else raw)
    if d.ndim != 2 or d.shape[0] != adata.n_obs:
        raise ValueError(f"dosage must be cells x perturbations, got shape {d.shape}")
    if values.dtype.kind not in "iuf":  # bool or object columns: checked as numbers
        values = np.asarray(values, dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError("dosage contains NaN, inf or negative values: use 0/1 per perturbation")
    if names is None:
        names = [f"pert{t}" for t in range(d.shape[1])]
    if sparse:
        return sp.csr_matrix(d, dtype=np.float32), names
    return (d.toarray() if sp.issparse(d) else d).astype(np.float32), names


def combination_label(row: np.ndarray, names: list[str]) -> str:
    """``"A+B"`` for a dosage row with perturbations A and B (empty for control)."""
    return "+".join(names[t] for t in np.flatnonzero(row))


def dosage_rows(
    perturbations: list[str] | np.ndarray, names: list[str]
) -> tuple[np.ndarray, list[str]]:
    """Dosage rows to evaluate (e.g. an ATE) and their labels.

    Parameters
    ----------
    perturbations
        Names of single perturbations, or a dosage matrix ``[Q, T]`` (rows may combine several).
    names
        The model's perturbation names (``T``).

    Returns
    -------
    dose, labels
        ``[Q, T]`` float32 dosages and one label per row (``"A+B"`` for combinations).

    Raises
    ------
    ValueError
        If a name is not one of ``names``.
    """
    if isinstance(perturbations, np.ndarray):
        dose = perturbations.astype(np.float32)
        return dose, [combination_label(r, names) for r in dose]
    lookup = {n: i for i, n in enumerate(names)}
    missing = [p for p in perturbations if p not in lookup]
    if missing:
        raise ValueError(f"unknown perturbations {missing[:3]}: use names from the dosage")
    dose = np.zeros((len(perturbations), len(names)), np.float32)
    dose[np.arange(len(perturbations)), [lookup[p] for p in perturbations]] = 1.0
    return dose, list(perturbations)


def distinct_rows(d: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a cells x perturbations matrix and each cell's row among them,
    found from its CSR structure without making the ``[N, T]`` matrix dense.

    Each row is keyed by its stored column indices and values, padded to the largest number
    of nonzeros per row (``k``: 1-2 in a perturb-seq screen), and the ``[N, 2k]`` keys are
    deduplicated by ``np.unique``; only the distinct rows are made dense.

    Parameters
    ----------
    d
        Dosages ``[N, T]`` (dense or scipy sparse).

    Returns
    -------
    rows, inverse
        Dense float32 distinct rows ``[R, T]`` in the order of ``np.unique(d, axis=0)``, and
        ``inverse`` ``[N]`` with ``rows[inverse]`` equal to ``d``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> rows, inverse = distinct_rows(sp.csr_matrix(np.array([[0, 1], [0, 0], [0, 1.0]])))
    >>> rows.tolist(), inverse.tolist()
    ([[0.0, 0.0], [0.0, 1.0]], [1, 0, 1])
    """
    m = sp.csr_matrix(d, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    n, nnz = m.shape[0], np.diff(m.indptr)
    k = int(nnz.max(initial=0))
    cell = np.repeat(np.arange(n), nnz)
    pos = np.arange(m.nnz) - m.indptr[cell]  # rank of each entry within its row
    key = np.full((n, 2 * k + 1), -1.0)  # [indices..., values..., 0]: exact, padded with -1
    key[:, -1] = 0.0
    key[cell, pos], key[cell, k + pos] = m.indices, m.data
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    rows, order = np.unique(m[first].toarray(), axis=0, return_inverse=True)
    return rows, order.reshape(-1)[inverse.reshape(-1)]


class Conditions:
    """SVAE+ conditions: each distinct non-empty dosage row of the training cells (App. A.2.2).

    SVAE+ has no way to compose perturbations, so a guide combination is a condition of its own.

    Parameters
    ----------
    d
        Training dosages ``[N, T]`` (float32, dense or CSR, from :func:`read_dosage`); the
        distinct rows are found without making a CSR matrix dense (:func:`distinct_rows`).
    names
        Perturbation names.
    """

    def __init__(self, d: np.ndarray | sp.spmatrix, names: list[str]) -> None:
        rows, _ = distinct_rows(d)
        self.rows = rows[rows.sum(1) > 0]
        self._index = {r.tobytes(): c for c, r in enumerate(self.rows)}
        self.names = [combination_label(r, names) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def design(self, d: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
        """Dosages ``[N, T]`` as one-hot conditions ``[N, C]`` (controls: all zeros), float32,
        CSR for a sparse ``d`` and dense for a dense one.

        Raises
        ------
        ValueError
            If a row is a combination not seen in training.
        """
        rows, inverse = distinct_rows(d)
        condition = np.full(len(rows), -1)
        for k, r in enumerate(rows):  # loop over distinct conditions, not cells
            if r.sum() == 0:
                continue
            c = self._index.get(r.tobytes())
            if c is None:
                raise ValueError(
                    "SVAE+ treats each guide combination as its own condition and cannot score "
                    "one unseen in training; drop those cells or use SAMS-VAE/CPA-VAE"
                )
            condition[k] = c
        cell = condition[inverse]
        hit = np.flatnonzero(cell >= 0)
        out = sp.csr_matrix(
            (np.ones(len(hit), np.float32), (hit, cell[hit])), shape=(len(cell), len(self))
        )
        return out if sp.issparse(d) else out.toarray()
