"""Datasets of the book: the manifest reader, synthetic generators and checksummed downloads.

Every dataset a chapter uses is an entry of ``data_manifest.yaml`` (its header documents the
fields). Synthetic entries name a generator ``"package.module:function"`` and its default
parameters; remote entries list URLs (mirrors, tried in order) and a sha256 that every download
must match. Downloads go through :mod:`pooch`, which writes to a temporary file and renames it
only after the checksum passed, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from liftkit.utils import repo_root

KINDS = ("synthetic", "remote")
FORMATS = ("anndata", "h5ad", "screen", "arrays", "csv")
REQUIRED = ("name", "kind", "format", "description", "license", "citation")
_ENV_CACHE = "LIFTKIT_DATA_DIR"
_ENV_MANIFEST = "LIFTKIT_MANIFEST"


@dataclass(frozen=True)
class DatasetEntry:
    """One validated entry of the manifest (see the header of data_manifest.yaml)."""

    name: str
    kind: str
    format: str
    description: str
    license: str
    citation: str
    generator: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    urls: tuple[str, ...] = ()
    sha256: str | None = None
    size: int | None = None
    shape: tuple[Any, ...] | None = None
    filename: str | None = None


def manifest_path() -> Path:
    """``$LIFTKIT_MANIFEST`` if set, else the ``data_manifest.yaml`` of :func:`~liftkit.utils.repo_root`."""
    env = os.environ.get(_ENV_MANIFEST)
    return Path(env) if env else repo_root() / "data_manifest.yaml"


def cache_dir() -> Path:
    """Where downloads are kept: ``$LIFTKIT_DATA_DIR``, else the OS cache folder for liftkit."""
    import pooch

    env = os.environ.get(_ENV_CACHE)
    return Path(env) if env else Path(pooch.os_cache("liftkit"))


def _parse_entry(raw: dict[str, Any], source: Path) -> DatasetEntry:
    name = raw.get("name", "<unnamed>")
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise ValueError(f"{source}: dataset {name!r} lacks field(s) {missing}; see the file's header")
    unknown = sorted(set(raw) - set(DatasetEntry.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{source}: dataset {name!r} has unknown field(s) {unknown}")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{source}: dataset {name!r} has kind {raw['kind']!r}; use one of {KINDS}")
    if raw["format"] not in FORMATS:
        raise ValueError(f"{source}: dataset {name!r} has format {raw['format']!r}; use one of {FORMATS}")
    if raw["kind"] == "synthetic" and ":" not in str(raw.get("generator", "")):
        raise ValueError(
            f"{source}: synthetic dataset {name!r} needs generator: 'package.module:function'"
        )
    if raw["kind"] == "remote":
        if not raw.get("urls"):
            raise ValueError(f"{source}: remote dataset {name!r} needs at least one url in urls:")
        sha = raw.get("sha256")
        if sha is not None and (len(str(sha)) != 64 or not all(c in "0123456789abcdef" for c in str(sha))):
            raise ValueError(f"{source}: dataset {name!r} sha256 must be 64 lowercase hex digits or null")
    values = dict(raw)
    values["urls"] = tuple(raw.get("urls") or ())
    values["params"] = dict(raw.get("params") or {})
    if raw.get("shape") is not None:
        values["shape"] = tuple(raw["shape"])
    return DatasetEntry(**values)


def read_manifest(path: str | Path | None = None) -> dict[str, DatasetEntry]:
    """Read and validate the manifest; returns ``{name: DatasetEntry}`` in file order."""
    source = Path(path) if path is not None else manifest_path()
    if not source.exists():
        raise FileNotFoundError(f"no dataset manifest at {source}; set {_ENV_MANIFEST} to its path")
    doc = yaml.safe_load(source.read_text()) or {}
    entries: dict[str, DatasetEntry] = {}
    for raw in doc.get("datasets") or []:
        entry = _parse_entry(raw, source)
        if entry.name in entries:
            raise ValueError(f"{source}: dataset name {entry.name!r} appears twice")
        entries[entry.name] = entry
    return entries


def list_datasets(path: str | Path | None = None):
    """The manifest as a table (a pandas DataFrame), one row per dataset."""
    import pandas as pd

    rows = [
        {
            "name": e.name,
            "kind": e.kind,
            "format": e.format,
            "shape": e.shape,
            "license": e.license,
            "description": e.description,
        }
        for e in read_manifest(path).values()
    ]
    return pd.DataFrame(rows)


def get_entry(name: str, path: str | Path | None = None) -> DatasetEntry:
    """The manifest entry called ``name``; a clear error lists the known names otherwise."""
    entries = read_manifest(path)
    if name not in entries:
        raise ValueError(
            f"unknown dataset {name!r}: known datasets are {', '.join(entries) or '(none)'}; "
            "run `liftkit data list` to see them"
        )
    return entries[name]


def _import_generator(spec: str):
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"generator {spec!r} cannot be imported ({err}); fix the manifest entry") from err


def fetch(
    name: str,
    *,
    path: str | Path | None = None,
    allow_unverified: bool = False,
    progressbar: bool = False,
) -> Path:
    """Download a remote dataset (or reuse the cached copy) and return its local path.

    The file is checked against the manifest's sha256. An entry whose sha256 is ``null`` (not yet
    recorded) is refused unless ``allow_unverified=True``; the hash of what was downloaded is
    then printed so it can be added to the manifest.

    Raises
    ------
    ValueError
        Unknown name, or a synthetic entry (use :func:`load`).
    RuntimeError
        Checksum mismatch (nothing is kept), or no network and no cached copy.
    """
    import pooch

    entry = get_entry(name, path)
    if entry.kind != "remote":
        raise ValueError(f"dataset {name!r} is synthetic: call liftkit.data.load({name!r}) instead")
    if entry.sha256 is None and not allow_unverified:
        raise RuntimeError(
            f"dataset {name!r} has no sha256 recorded in the manifest, so a download cannot be "
            "verified; pass allow_unverified=True (CLI: --allow-unverified) once and record the "
            "printed hash in data_manifest.yaml"
        )
    fname = entry.filename or f"{entry.name}{Path(entry.urls[0].split('?')[0]).suffix}"
    folder = cache_dir()
    target = folder / fname
    known_hash = f"sha256:{entry.sha256}" if entry.sha256 else None
    if target.exists() and known_hash is None:
        return target
    errors = []
    for url in entry.urls:
        try:
            local = pooch.retrieve(
                url, known_hash=known_hash, fname=fname, path=folder, progressbar=progressbar
            )
        except ValueError as err:
            if "hash" in str(err).lower():
                raise RuntimeError(
                    f"checksum mismatch for dataset {name!r} from {url}: the download was discarded. "
                    "The source changed or is corrupt; check the url and sha256 in data_manifest.yaml"
                ) from err
            raise
        except Exception as err:  # noqa: BLE001 - any transport failure means: try the next mirror
            errors.append(f"{url}: {type(err).__name__}")
            continue
        if known_hash is None:
            print(f"sha256 of {name!r} (record it in data_manifest.yaml): {pooch.file_hash(local)}")
        return Path(local)
    raise RuntimeError(
        f"cannot download dataset {name!r} ({'; '.join(errors)}) and no verified copy is cached at "
        f"{target}; connect to the network, or put the file there (set {_ENV_CACHE} to use another folder)"
    )


def _check_shape(entry: DatasetEntry, obj: Any, params: dict[str, Any]) -> None:
    if entry.shape is None:
        return
    expected = tuple(params.get(s, s) if isinstance(s, str) else s for s in entry.shape)
    actual = getattr(obj, "shape", None)
    if actual is not None and all(isinstance(s, int) for s in expected) and tuple(actual) != expected:
        raise RuntimeError(
            f"dataset {entry.name!r} has shape {tuple(actual)}, the manifest expects {expected}; "
            "the file or generator changed: check the entry"
        )


def load(name: str, *, path: str | Path | None = None, allow_unverified: bool = False, **params: Any):
    """Load a dataset by manifest name.

    Synthetic entries call their generator with the manifest's ``params`` updated by ``params``
    (e.g. ``load("toy_pooled_screen", moi=3.0, seed=1)``); remote entries are fetched with
    :func:`fetch` and read according to their format.
    """
    entry = get_entry(name, path)
    if entry.kind == "synthetic":
        func = _import_generator(entry.generator or "")
        merged = {**entry.params, **params}
        obj = func(**merged)
        _check_shape(entry, obj, merged)
        return obj
    if params:
        raise ValueError(f"dataset {name!r} is remote and takes no parameters, got {sorted(params)}")
    local = fetch(name, path=path, allow_unverified=allow_unverified)
    if entry.format in ("anndata", "h5ad"):
        import anndata

        obj = anndata.read_h5ad(local)
    elif entry.format == "csv":
        import pandas as pd

        obj = pd.read_csv(local)
    else:
        raise ValueError(f"dataset {name!r}: no reader for format {entry.format!r} of a remote file")
    _check_shape(entry, obj, {})
    return obj


def validate_counts(adata, layer: str | None = "counts") -> None:
    """Check that an AnnData holds finite, non-negative integer counts in ``layer`` (``None``: ``.X``).

    Raises
    ------
    ValueError
        Naming what is wrong (not an AnnData, missing layer, NaN/inf, negative or non-integer
        values) and how to fix it.
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
            f"{where} must hold non-negative integers but found {float(values[bad][0])!r}: pass the raw "
            "counts layer, not normalised or log-transformed data"
        )
