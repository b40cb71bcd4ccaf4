"""Datasets: the manifest reader, checksummed downloads and count validation.

Every dataset a chapter uses is an entry of the repository's ``data_manifest.yaml``;
:func:`load` returns one, :func:`fetch` downloads a remote one with its checksum verified.
"""

from liftkit.data.manifest import (
    DatasetEntry,
    cache_dir,
    fetch,
    get_entry,
    list_datasets,
    load,
    manifest_path,
    read_manifest,
    validate_counts,
)

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
