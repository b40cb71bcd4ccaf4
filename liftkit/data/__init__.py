"""Datasets: the manifest, checksummed downloads, loaders and count validation.

Every dataset a chapter uses is an entry of the repository's ``data_manifest.yaml``.

- :mod:`~liftkit.data.manifest`: :class:`DatasetEntry`, :func:`read_manifest`,
  :func:`list_datasets`, :func:`get_entry`.
- :mod:`~liftkit.data.download`: :func:`fetch` (pooch, checksum verified) and :func:`cache_dir`.
- :mod:`~liftkit.data.loaders`: :func:`load` (a synthetic generator's output, or a fetched file).
- :mod:`~liftkit.data.validate`: :func:`validate_counts`.

Examples
--------
>>> from liftkit import data
>>> screen = data.load("toy_pooled_screen", n_cells=400)  # doctest: +SKIP
"""

from liftkit.data.download import cache_dir, fetch
from liftkit.data.loaders import load
from liftkit.data.manifest import (
    DatasetEntry,
    get_entry,
    list_datasets,
    manifest_path,
    read_manifest,
)
from liftkit.data.validate import validate_counts

__all__ = [
    "DatasetEntry",
    "cache_dir",
    "fetch",
    "get_entry",
    "list_datasets",
    "load",
    "manifest_path",
    "read_manifest",
    "validate_counts",
]
