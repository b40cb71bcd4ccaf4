"""Turn a manifest entry into its object: call a synthetic generator, or read a fetched file.

Synthetic entries name their generator as ``"package.module:function"`` (e.g.
``liftkit.lift.toy:toy_pooled_screen``, ``liftkit.perturb.simulate:simulate_perturb_seq``); it
is imported only when the entry is loaded, so :mod:`liftkit.data` does not import the papers'
subpackages.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liftkit.data.download import fetch
from liftkit.data.manifest import DatasetEntry, get_entry


def import_generator(spec: str) -> Callable[..., Any]:
    """The function named by a generator spec ``"package.module:function"``.

    Raises
    ------
    ValueError
        When the module or the function cannot be imported; the message says to fix the entry.

    Examples
    --------
    >>> import_generator("liftkit.lift.toy:toy_pooled_screen").__name__
    'toy_pooled_screen'
    """
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(
            f"generator {spec!r} cannot be imported ({err}); fix the manifest entry"
        ) from err


def _check_shape(entry: DatasetEntry, obj: Any, params: dict[str, Any]) -> None:
    """Compare ``obj.shape`` with the entry's expected shape (names resolved from ``params``).

    A shape entry that is a string names a generator parameter (``[n_cells, n_genes]``); entries
    that stay unresolved, or objects without a ``shape``, are not checked.

    Raises
    ------
    RuntimeError
        When the shapes differ: the file or the generator changed.

    Examples
    --------
    >>> import numpy as np
    >>> e = DatasetEntry("t", "synthetic", "arrays", "d", "l", "c", shape=("n", 2))
    >>> _check_shape(e, np.zeros((3, 2)), {"n": 3})  # passes silently
    """
    if entry.shape is None:
        return
    expected = tuple(params.get(s, s) if isinstance(s, str) else s for s in entry.shape)
    actual = getattr(obj, "shape", None)
    resolved = all(isinstance(s, int) for s in expected)
    if actual is not None and resolved and tuple(actual) != expected:
        raise RuntimeError(
            f"dataset {entry.name!r} has shape {tuple(actual)}, the manifest expects {expected}; "
            "the file or generator changed: check the entry"
        )


def _read_file(entry: DatasetEntry, local: str | Path) -> Any:
    """Read a fetched file by the entry's format: AnnData for ``anndata``/``h5ad``, a DataFrame
    for ``csv``.

    Raises
    ------
    ValueError
        A format with no reader for remote files, or a file that cannot be read (truncated or
        corrupt): the message says to delete it and fetch again.

    Examples
    --------
    >>> e = DatasetEntry("t", "remote", "csv", "d", "l", "c", urls=("https://x/t.csv",))
    >>> _read_file(e, "t.csv")  # doctest: +SKIP
    """
    if entry.format in ("anndata", "h5ad"):
        from liftkit.data.perturbseq import read_h5ad_checked

        return read_h5ad_checked(local)
    if entry.format == "csv":
        import pandas as pd

        return pd.read_csv(local)
    raise ValueError(
        f"dataset {entry.name!r}: no reader for format {entry.format!r} of a remote file"
    )


def load(
    name: str, *, path: str | Path | None = None, allow_unverified: bool = False, **params: Any
) -> Any:
    """Load a dataset by manifest name.

    Synthetic entries call their generator with the manifest's ``params`` updated by ``params``;
    remote entries are fetched with :func:`liftkit.data.fetch` (checksum verified), then given to
    their ``loader`` (``loader(path, **params)``, the manifest's ``params`` updated by
    ``params``; e.g. :func:`liftkit.data.perturbseq.load_scperturb`, which returns model-ready
    perturb-seq) or, without one, read by their format. The result's shape is checked against
    the manifest.

    Parameters
    ----------
    name
        The entry's name (``liftkit data list`` shows them).
    path
        The manifest file (default: the repository's ``data_manifest.yaml``).
    allow_unverified
        Remote entries only: accept one without a recorded checksum.
    **params
        Generator (synthetic) or loader (remote) parameters overriding the manifest's.

    Raises
    ------
    ValueError
        Unknown name, parameters given for a remote entry without a loader, or a generator or
        loader that cannot be imported.
    RuntimeError
        A shape that differs from the manifest's, or a failed download.

    Examples
    --------
    >>> screen = load("toy_pooled_screen", n_cells=400, moi=2.0)  # doctest: +SKIP
    >>> screen.shape  # doctest: +SKIP
    (400, 200)
    >>> norman = load("norman2019", n_top_genes=2000)  # doctest: +SKIP
    """
    entry = get_entry(name, path)
    if entry.kind == "synthetic":
        merged = {**entry.params, **params}
        obj = import_generator(entry.generator or "")(**merged)
        _check_shape(entry, obj, merged)
        return obj
    if params and not entry.loader:
        raise ValueError(
            f"dataset {name!r} is remote without a loader and takes no parameters, got "
            f"{sorted(params)}"
        )
    local = fetch(name, path=path, allow_unverified=allow_unverified)
    if entry.loader:
        merged = {**entry.params, **params}
        if entry.obs_columns:
            merged.setdefault("obs_columns", entry.obs_columns)
        obj = import_generator(entry.loader)(local, **merged)
    else:
        obj = _read_file(entry, local)
    _check_shape(entry, obj, {})
    return obj
