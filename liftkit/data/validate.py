"""Checks of count data handed to the models (clear errors, never silent coercion)."""

from __future__ import annotations

from typing import Any


def validate_counts(adata: Any, layer: str | None = "counts") -> None:
    """Check that an AnnData holds finite, non-negative integer counts in ``layer``.

    Parameters
    ----------
    adata
        An :class:`anndata.AnnData`.
    layer
        The layer holding raw counts; ``None`` checks ``adata.X``.

    Raises
    ------
    ValueError
        Naming what is wrong (not an AnnData, missing layer, NaN/inf, negative or non-integer
        values) and how to fix it.

    Examples
    --------
    >>> import anndata, numpy as np
    >>> adata = anndata.AnnData(np.ones((2, 3), dtype=np.float32))
    >>> adata.layers["counts"] = np.array([[0, 1, 2], [3, 0, 1]], dtype=np.float32)
    >>> validate_counts(adata)  # passes silently
    >>> validate_counts(adata, layer=None)  # adata.X holds ones: also counts
    """
    import anndata
    import numpy as np
    import scipy.sparse as sp

    if not isinstance(adata, anndata.AnnData):
        raise ValueError(f"expected an AnnData object, got {type(adata).__name__}")
    if layer is not None and layer not in adata.layers:
        raise ValueError(
            f"layer {layer!r} not in adata.layers (have {list(adata.layers)}): store raw counts "
            f"with adata.layers[{layer!r}] = counts, or pass layer=None to use adata.X"
        )
    mat = adata.X if layer is None else adata.layers[layer]
    values = mat.data if sp.issparse(mat) else np.asarray(mat)
    where = ".X" if layer is None else f"layers[{layer!r}]"
    if not np.isfinite(values).all():
        raise ValueError(f"{where} contains NaN or inf: pass raw integer UMI counts")
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        raise ValueError(
            f"{where} must hold non-negative integers but found {float(values[bad][0])!r}: pass "
            "the raw counts layer, not normalised or log-transformed data"
        )
