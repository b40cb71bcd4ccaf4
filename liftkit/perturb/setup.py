"""AnnData setup for the SAMS-VAE family: read and check counts and dosages, build designs.

Counts are raw integers in a layer, dosages a cells x perturbations 0/1 matrix in ``.obsm``
(a DataFrame names the perturbations), as :func:`~liftkit.perturb.simulate.simulate_perturb_seq`
writes them. Every check raises a ValueError that says what is wrong and how to fix it.
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
    """Raw counts ``[N, G]`` kept as CSR; only the rows asked for are made dense.

    Stands in for the dense count tensor where the models read counts: ``shape``, ``device``,
    ``len``, ``rows[idx]`` (a tensor or array of cell indices, or a slice: dense float32
    ``[B, G]`` on ``device``) and ``rows.sum(1)`` (library sizes ``[N]``). Minibatch SVI
    (SAMS-VAE App. A.1) then holds one dense minibatch at a time, so a 100k-cell screen is
    never made dense.

    Parameters
    ----------
    counts
        Cells x genes counts (CSR, any scipy sparse format, or a dense array).
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
        lx = self.csr.astype(np.float64)
        lx = lx.log1p() if log1p else lx
        n = lx.shape[0]
        mean = np.asarray(lx.sum(0)).ravel() / n
        sq = np.asarray(lx.multiply(lx).sum(0)).ravel()
        var = np.clip(sq - n * mean**2, 0.0, None) / (n - 1) if n > 1 else np.full_like(mean, np.nan)
        mean_sd = torch.from_numpy(np.stack([mean, np.sqrt(var)]).astype(np.float32))
        return tuple(mean_sd.to(self.device).unbind(0))


def read_dosage(adata: ad.AnnData, dosage_key: str = "dosage") -> tuple[np.ndarray, list[str]]:
    """Perturbation dosages ``d`` (cells x perturbations, float32 0/1) and perturbation names.

    Parameters
    ----------
    adata
        Cells x genes.
    dosage_key
        Key of the dosage matrix in ``adata.obsm``; a DataFrame's columns name the
        perturbations, otherwise they are ``pert0, pert1, ...``.

    Raises
    ------
    ValueError
        A missing key, a wrong shape, or NaN, inf or negative dosages.
    """
    if dosage_key not in adata.obsm:
        raise ValueError(
            f"adata.obsm[{dosage_key!r}] is missing: store a cells x perturbations 0/1 dosage "
            "matrix there (a DataFrame names the perturbations), e.g. from simulate_perturb_seq"
        )
    raw = adata.obsm[dosage_key]
    names = [str(c) for c in raw.columns] if isinstance(raw, pd.DataFrame) else None
    d = np.asarray(raw.todense() if sp.issparse(raw) else raw, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] != adata.n_obs:
        raise ValueError(f"dosage must be cells x perturbations, got shape {d.shape}")
    if not np.isfinite(d).all() or (d < 0).any():
        raise ValueError("dosage contains NaN, inf or negative values: use 0/1 per perturbation")
    if names is None:
        names = [f"pert{t}" for t in range(d.shape[1])]
    return d.astype(np.float32), names


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


class Conditions:
    """SVAE+ conditions: each distinct non-empty dosage row of the training cells (App. A.2.2).

    SVAE+ has no way to compose perturbations, so a guide combination is a condition of its own.

    Parameters
    ----------
    d
        Training dosages ``[N, T]`` (float32, from :func:`read_dosage`).
    names
        Perturbation names.
    """

    def __init__(self, d: np.ndarray, names: list[str]) -> None:
        self.rows = np.unique(d[d.sum(1) > 0], axis=0)
        self._index = {r.tobytes(): c for c, r in enumerate(self.rows)}
        self.names = [combination_label(r, names) for r in self.rows]

    def __len__(self) -> int:
        return len(self.rows)

    def design(self, d: np.ndarray) -> np.ndarray:
        """Dosages ``[N, T]`` as one-hot conditions ``[N, C]`` (controls: all zeros).

        Raises
        ------
        ValueError
            If a row is a combination not seen in training.
        """
        rows, inverse = np.unique(d, axis=0, return_inverse=True)
        out_rows = np.zeros((len(rows), len(self)), dtype=np.float32)
        for k, r in enumerate(rows):  # loop over distinct conditions, not cells
            if r.sum() == 0:
                continue
            c = self._index.get(r.astype(np.float32).tobytes())
            if c is None:
                raise ValueError(
                    "SVAE+ treats each guide combination as its own condition and cannot score "
                    "one unseen in training; drop those cells or use SAMS-VAE/CPA-VAE"
                )
            out_rows[k, c] = 1.0
        return out_rows[inverse.reshape(-1)]
