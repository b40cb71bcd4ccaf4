"""The dataset manifest: its entries, reading and validating it, listing it.

Every dataset a chapter uses is an entry of the repository's ``data_manifest.yaml`` (its header
documents the fields). Synthetic entries name a generator ``"package.module:function"`` and its
default parameters; remote entries list URLs (mirrors, tried in order), the checksum every
download must match (in the provider's algorithm: ``checksum: "md5:..."`` or
``"sha256:..."``), and optionally a ``loader`` that turns the file into a model-ready object. :mod:`liftkit.data.download` fetches remote entries and
:mod:`liftkit.data.loaders` turns any entry into its object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from liftkit.utils import repo_root

if TYPE_CHECKING:
    import pandas as pd

#: Allowed values of an entry's ``kind``.
KINDS = ("synthetic", "remote")
#: Allowed values of an entry's ``format``.
FORMATS = ("anndata", "h5ad", "screen", "arrays", "csv")
#: Fields every entry must have.
REQUIRED = ("name", "kind", "format", "description", "license", "citation")
ENV_MANIFEST = "LIFTKIT_MANIFEST"
_HEX = frozenset("0123456789abcdef")
#: Checksum algorithms a manifest may record, and the hex length of each (pooch verifies both).
HASH_LENGTHS = {"md5": 32, "sha256": 64}


@dataclass(frozen=True)
class DatasetEntry:
    """One validated entry of the manifest (see the header of ``data_manifest.yaml``).

    Examples
    --------
    >>> entry = DatasetEntry("toy", "synthetic", "arrays", "a toy", "CC0-1.0", "us",
    ...                      generator="liftkit.lift.toy:toy_pooled_screen")
    >>> entry.kind, entry.urls
    ('synthetic', ())
    """

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
    checksum: str | None = None
    size: int | None = None
    shape: tuple[Any, ...] | None = None
    filename: str | None = None
    loader: str | None = None
    obs_columns: tuple[str, ...] = ()
    unverified: str | None = None

    @property
    def known_hash(self) -> str | None:
        """The checksum every download must match, as ``"algorithm:hex"`` (pooch's form).

        ``checksum`` when given (the provider's algorithm, e.g. ``"md5:..."``), else the legacy
        ``sha256`` field; ``None`` when neither is recorded.

        Examples
        --------
        >>> DatasetEntry("d", "remote", "h5ad", "d", "l", "c", sha256="a" * 64).known_hash[:9]
        'sha256:aa'
        """
        if self.checksum:
            return self.checksum
        return f"sha256:{self.sha256}" if self.sha256 else None


def manifest_path() -> Path:
    """The manifest in use: ``$LIFTKIT_MANIFEST`` if set, else the repository's.

    Returns
    -------
    Path
        ``$LIFTKIT_MANIFEST``, or ``data_manifest.yaml`` of :func:`liftkit.utils.repo_root`.

    Examples
    --------
    >>> manifest_path().name  # doctest: +SKIP
    'data_manifest.yaml'
    """
    env = os.environ.get(ENV_MANIFEST)
    return Path(env) if env else repo_root() / "data_manifest.yaml"


def _check_fields(raw: dict[str, Any], where: str) -> None:
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        raise ValueError(f"{where} lacks field(s) {missing}; see the file's header")
    unknown = sorted(set(raw) - set(DatasetEntry.__dataclass_fields__))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {unknown}")
    if raw["kind"] not in KINDS:
        raise ValueError(f"{where} has kind {raw['kind']!r}; use one of {KINDS}")
    if raw["format"] not in FORMATS:
        raise ValueError(f"{where} has format {raw['format']!r}; use one of {FORMATS}")


def _check_kind(raw: dict[str, Any], where: str) -> None:
    if raw["kind"] == "synthetic" and ":" not in str(raw.get("generator", "")):
        raise ValueError(f"{where} is synthetic and needs generator: 'package.module:function'")
    if raw["kind"] == "remote":
        if not raw.get("urls"):
            raise ValueError(f"{where} is remote and needs at least one url in urls:")
        sha = raw.get("sha256")
        if sha is not None and (len(str(sha)) != 64 or not set(str(sha)) <= _HEX):
            raise ValueError(f"{where}: sha256 must be 64 lowercase hex digits or null")
        _check_checksum(raw.get("checksum"), sha, where)
    if raw.get("loader") is not None and ":" not in str(raw["loader"]):
        raise ValueError(f"{where}: loader must be 'package.module:function'")


def _check_checksum(checksum: Any, sha: Any, where: str) -> None:
    """``checksum`` is ``"md5:<32 hex>"`` or ``"sha256:<64 hex>"``; not given with ``sha256``."""
    if checksum is None:
        return
    if sha is not None:
        raise ValueError(f"{where} gives both sha256 and checksum: keep one (checksum)")
    algorithm, _, digest = str(checksum).partition(":")
    if HASH_LENGTHS.get(algorithm) != len(digest) or not set(digest) <= _HEX:
        raise ValueError(
            f"{where}: checksum {checksum!r} must be 'md5:<32 hex digits>' or "
            "'sha256:<64 hex digits>' (lowercase), or null"
        )


def _parse_entry(raw: dict[str, Any], source: str | Path = "<manifest>") -> DatasetEntry:
    """Validate one raw manifest entry (a dict read from YAML) and build its :class:`DatasetEntry`.

    Parameters
    ----------
    raw
        The entry as read from the manifest.
    source
        The manifest's path, named in error messages.

    Raises
    ------
    ValueError
        A missing or unknown field, an unknown kind or format, a synthetic entry without a
        generator, a remote one without urls, or a malformed sha256; the message names the entry.

    Examples
    --------
    >>> _parse_entry({"name": "t", "kind": "remote", "format": "csv", "urls": ["https://x/t.csv"],
    ...              "sha256": None, "description": "d", "license": "CC0-1.0",
    ...              "citation": "c"}).urls
    ('https://x/t.csv',)
    """
    where = f"{source}: dataset {raw.get('name', '<unnamed>')!r}"
    _check_fields(raw, where)
    _check_kind(raw, where)
    values = dict(raw)
    values["urls"] = tuple(raw.get("urls") or ())
    values["params"] = dict(raw.get("params") or {})
    values["obs_columns"] = tuple(raw.get("obs_columns") or ())
    if raw.get("shape") is not None:
        values["shape"] = tuple(raw["shape"])
    return DatasetEntry(**values)


def read_manifest(path: str | Path | None = None) -> dict[str, DatasetEntry]:
    """Read and validate the manifest.

    Parameters
    ----------
    path
        A manifest file; default :func:`manifest_path`.

    Returns
    -------
    dict
        ``{name: DatasetEntry}`` in file order.

    Raises
    ------
    FileNotFoundError
        No manifest at ``path``.
    ValueError
        An invalid entry, or a name used twice.

    Examples
    --------
    >>> "toy_pooled_screen" in read_manifest()  # doctest: +SKIP
    True
    """
    source = Path(path) if path is not None else manifest_path()
    if not source.exists():
        raise FileNotFoundError(f"no dataset manifest at {source}; set {ENV_MANIFEST} to its path")
    doc = yaml.safe_load(source.read_text()) or {}
    entries: dict[str, DatasetEntry] = {}
    for raw in doc.get("datasets") or []:
        entry = _parse_entry(raw, source)
        if entry.name in entries:
            raise ValueError(f"{source}: dataset name {entry.name!r} appears twice")
        entries[entry.name] = entry
    return entries


def list_datasets(path: str | Path | None = None) -> pd.DataFrame:
    """The manifest as a table, one row per dataset (what ``liftkit data list`` prints).

    The ``checksum`` column is :attr:`DatasetEntry.known_hash` (``"md5:..."``, ``"sha256:..."``
    or ``None`` for synthetic entries and remote ones not yet recorded).

    Examples
    --------
    >>> list_datasets()[["name", "kind"]].head(1)  # doctest: +SKIP
                    name       kind
    0  toy_pooled_screen  synthetic
    """
    import pandas as pd

    columns = ("name", "kind", "format", "shape", "license", "checksum", "description")
    rows = [
        {c: e.known_hash if c == "checksum" else getattr(e, c) for c in columns}
        for e in read_manifest(path).values()
    ]
    return pd.DataFrame(rows, columns=list(columns))


def get_entry(name: str, path: str | Path | None = None) -> DatasetEntry:
    """The manifest entry called ``name``.

    Raises
    ------
    ValueError
        Unknown ``name``; the message lists the known ones.

    Examples
    --------
    >>> get_entry("toy_pooled_screen").generator  # doctest: +SKIP
    'liftkit.lift.toy:toy_pooled_screen'
    """
    entries = read_manifest(path)
    if name not in entries:
        raise ValueError(
            f"unknown dataset {name!r}: known datasets are {', '.join(entries) or '(none)'}; "
            "run `liftkit data list` to see them"
        )
    return entries[name]
