"""Checksummed downloads of the manifest's remote datasets, and the cache folder.

Downloads go through :mod:`pooch`, which writes to a temporary file and renames it only after
the checksum passed, so a failed or interrupted download leaves nothing behind. Mirrors are
tried in order; a checksum mismatch stops at once (the source changed, or is corrupt).
"""

from __future__ import annotations

import os
from pathlib import Path

from liftkit.data.manifest import DatasetEntry, get_entry

ENV_CACHE = "LIFTKIT_DATA_DIR"


class _ChecksumMismatch(RuntimeError):
    """A download whose hash differs from the manifest's: never retried from another mirror."""


def cache_dir() -> Path:
    """Where downloads (and the OLGA pools) are kept.

    Returns
    -------
    Path
        ``$LIFTKIT_DATA_DIR`` if set, else the operating system's cache folder for liftkit
        (e.g. ``~/.cache/liftkit``). It may not exist yet.

    Examples
    --------
    >>> import os
    >>> os.environ["LIFTKIT_DATA_DIR"] = "/tmp/liftkit-data"
    >>> str(cache_dir())
    '/tmp/liftkit-data'
    >>> del os.environ["LIFTKIT_DATA_DIR"]
    """
    # platformdirs (what pooch.os_cache uses) rather than pooch itself: importing pooch imports
    # tqdm.auto, which prints a widget warning into notebooks that only want the cache folder
    from platformdirs import user_cache_dir

    env = os.environ.get(ENV_CACHE)
    return Path(env) if env else Path(user_cache_dir("liftkit"))


def _cached_name(entry: DatasetEntry) -> str:
    """File name of a remote entry in the cache: ``filename``, else name + the url's suffix.

    Examples
    --------
    >>> e = DatasetEntry("norman", "remote", "h5ad", "d", "CC-BY-4.0", "c",
    ...                  urls=("https://host/files/x.h5ad?download=1",))
    >>> _cached_name(e)
    'norman.h5ad'
    """
    return entry.filename or f"{entry.name}{Path(entry.urls[0].split('?')[0]).suffix}"


def _check_fetchable(entry: DatasetEntry, allow_unverified: bool) -> None:
    if entry.kind != "remote":
        raise ValueError(
            f"dataset {entry.name!r} is synthetic: call liftkit.data.load({entry.name!r}) instead"
        )
    if entry.known_hash is None and not allow_unverified:
        raise RuntimeError(
            f"dataset {entry.name!r} has no checksum recorded in the manifest, so a download "
            "cannot be verified; pass allow_unverified=True (CLI: --allow-unverified) once and "
            "record the printed hash in data_manifest.yaml"
        )


def _retrieve(entry: DatasetEntry, url: str, folder: Path, progressbar: bool) -> Path:
    """One mirror through pooch; a checksum mismatch becomes a RuntimeError naming the fix."""
    import pooch

    known_hash = entry.known_hash
    try:
        local = pooch.retrieve(
            url, known_hash=known_hash, fname=_cached_name(entry), path=folder,
            progressbar=progressbar,
        )
    except ValueError as err:
        if "hash" in str(err).lower():
            raise _ChecksumMismatch(
                f"checksum mismatch for dataset {entry.name!r} from {url}: the download was "
                "discarded (truncated, corrupt, or the source changed); retry, or check the url "
                f"and checksum ({known_hash}) in data_manifest.yaml"
            ) from err
        raise
    if known_hash is None:
        print(
            f"sha256 of {entry.name!r} (record it in data_manifest.yaml as checksum: "
            f"sha256:{pooch.file_hash(local)})"
        )
    return Path(local)


def fetch(
    name: str,
    *,
    path: str | Path | None = None,
    allow_unverified: bool = False,
    progressbar: bool = False,
) -> Path:
    """Download a remote dataset (or reuse the cached copy) and return its local path.

    The file is checked against the manifest's checksum, in the provider's algorithm (``md5`` or
    ``sha256``, :attr:`~liftkit.data.manifest.DatasetEntry.known_hash`). An entry without one
    (not yet recorded) is refused unless ``allow_unverified=True``; the sha256 of what was
    downloaded is then printed so it can be added to the manifest.

    Parameters
    ----------
    name
        A remote entry of the manifest.
    path
        The manifest file (default :func:`liftkit.data.manifest.manifest_path`).
    allow_unverified
        Accept an entry without a recorded checksum (and print the hash to record).
    progressbar
        Show pooch's download progress bar.

    Raises
    ------
    ValueError
        Unknown name, or a synthetic entry (use :func:`liftkit.data.load`).
    RuntimeError
        Checksum mismatch (nothing is kept), no checksum recorded, or no network and no cached
        copy.

    Examples
    --------
    >>> fetch("norman2019")  # doctest: +SKIP
    PosixPath('.../liftkit/norman2019.h5ad')
    """
    entry = get_entry(name, path)
    _check_fetchable(entry, allow_unverified)
    folder = cache_dir()
    target = folder / _cached_name(entry)
    if target.exists() and entry.known_hash is None:
        return target
    errors = []
    for url in entry.urls:
        try:
            return _retrieve(entry, url, folder, progressbar)
        except (_ChecksumMismatch, ValueError):
            raise
        except Exception as err:  # noqa: BLE001 - any transport failure means: try the next mirror
            errors.append(f"{url}: {type(err).__name__}")
    raise RuntimeError(
        f"cannot download dataset {name!r} ({'; '.join(errors)}) and no verified copy is cached at "
        f"{target}; connect to the network, or put the file there (set {ENV_CACHE} to use another "
        "folder)"
    )
