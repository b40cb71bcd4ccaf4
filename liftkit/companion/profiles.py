"""Chapter parameters: profiles declared once, in ``book/profiles/<chapter>.yaml``.

Profiles: ``"smoke"`` (seconds: does the chapter run; the goldens), ``"check"`` (the smallest
scale at which each of the chapter's registered claims is decided, run by ``make test``),
``"default"`` (what the book shows) and ``"paper"`` (the papers' scale, meant for a GPU or a
sweep). A profile file has an optional ``common:`` mapping, merged into each profile, and one
mapping per profile. A chapter's ``parameters`` cell holds only ``profile``, ``seed`` and
``device``; the next cell calls :func:`chapter_config`, which takes the profile's values and
replaces each one that papermill injected (``liftkit run book/x.md -p n_cells 20000``), so one
value can change and the profile supplies the rest. Sweeps (``liftkit.companion.sweep``) read
the same files through :func:`load_profile`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import yaml

from liftkit.utils import repo_root

PROFILES = ("smoke", "check", "default", "paper")
PROFILE_DIR = Path("book") / "profiles"
# Values a chapter's parameters cell sets itself; carried into the resolved configuration.
RUN_SETTINGS = ("seed", "device", "results")


def profile_path(chapter: str, root: str | Path | None = None) -> Path:
    """The profile file of ``chapter`` (a name such as ``"moi_experiment"`` or a chapter path)."""
    name = Path(chapter).stem
    return (repo_root() if root is None else Path(root)) / PROFILE_DIR / f"{name}.yaml"


def load_profiles(chapter: str, root: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Every profile of a chapter, ``common`` merged in.

    Raises
    ------
    FileNotFoundError
        When the chapter has no profile file (the message names the expected path).
    ValueError
        When the file is not a mapping of profiles to mappings.

    Examples
    --------
    >>> table = load_profiles("getting_started")
    >>> sorted(table) == sorted(PROFILES) and "n_cells" in table["smoke"]
    True
    """
    path = profile_path(chapter, root)
    if not path.exists():
        raise FileNotFoundError(f"no profile file for chapter {chapter!r}: expected {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    common = raw.pop("common", {}) or {}
    bad = [k for k, v in raw.items() if k not in PROFILES or not isinstance(v, dict)]
    if bad or not isinstance(common, dict):
        raise ValueError(
            f"{path}: top-level keys must be 'common' and profiles {PROFILES}, each a mapping; "
            f"bad keys: {bad}"
        )
    return {name: {**common, **values} for name, values in raw.items()}


def load_profile(chapter: str, profile: str = "default", **overrides: Any) -> dict[str, Any]:
    """One resolved profile of a chapter as a dict, with ``overrides`` applied.

    Examples
    --------
    >>> load_profile("getting_started", "smoke", n_cells=999)["n_cells"]
    999
    """
    return vars(configure(profile, load_profiles(chapter), **overrides)) | {"profile": profile}


def configure(profile: str, table: dict[str, dict[str, Any]], **given: Any) -> SimpleNamespace:
    """Resolve parameters from a ``{profile: {name: value}}`` table.

    Parameters
    ----------
    profile
        One of :data:`PROFILES`.
    table
        ``{profile: {name: value}}`` giving each parameter's value per profile.
    **given
        Overrides; ``None`` means "take it from the profile".

    Returns
    -------
    SimpleNamespace
        Every parameter resolved, plus ``profile``.

    Raises
    ------
    ValueError
        An unknown profile, one the chapter does not define, or a parameter absent from it.

    Examples
    --------
    >>> table = {"smoke": {"n_cells": 200, "moi": 1.0}, "default": {"n_cells": 5000, "moi": 1.0}}
    >>> cfg = configure("default", table, n_cells=None, moi=3.0)
    >>> cfg.n_cells, cfg.moi, cfg.profile
    (5000, 3.0, 'default')
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
    if profile not in table:
        raise ValueError(f"this chapter defines no {profile!r} profile; it has {sorted(table)}")
    values = dict(table[profile])
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise ValueError(
            f"parameters {unknown} have no value in the {profile!r} profile; "
            f"known parameters: {sorted(values)}"
        )
    for name, value in given.items():
        if value is not None:
            values[name] = value
    return SimpleNamespace(profile=profile, **values)


def chapter_config(chapter: str, namespace: dict[str, Any], show: bool = True) -> SimpleNamespace:
    """Resolve a chapter's parameters from its profile file and the notebook's namespace.

    ``namespace`` is the chapter's ``globals()``: its ``profile`` picks the profile, any name of
    the profile that papermill injected overrides that value, and ``seed``/``device``/
    ``results`` are carried over when the parameters cell sets them.

    Parameters
    ----------
    chapter
        The chapter's name (``"moi_experiment"``).
    namespace
        The notebook's global namespace.
    show
        Display the resolved values as a compact two-column table (overridden values marked ``*``).

    Examples
    --------
    >>> cfg = chapter_config("getting_started", {"profile": "smoke", "n_cells": 99, "seed": 1},
    ...                      show=False)
    >>> cfg.n_cells, cfg.seed, cfg.profile
    (99, 1, 'smoke')
    """
    profile = namespace.get("profile", "default")
    table = load_profiles(chapter)
    names = table.get(profile, {})
    given = {k: namespace[k] for k in names if namespace.get(k) is not None}
    cfg = configure(profile, table, **given)
    for key in RUN_SETTINGS:
        if key in namespace:
            setattr(cfg, key, namespace[key])
    if show:
        from IPython.display import display

        display(config_table(cfg, changed=set(given)))
    return cfg


def config_table(cfg: SimpleNamespace, changed: set[str] = frozenset(), columns: int = 2) -> pd.DataFrame:
    """The resolved values laid out in ``columns`` (parameter, value) pairs per row.

    Examples
    --------
    >>> t = config_table(SimpleNamespace(profile="smoke", n=2, m=[1, 2]), changed={"n"}, columns=2)
    >>> t.shape, t.iloc[1, 0], t.iloc[0, 3]
    ((2, 4), 'n*', '[1, 2]')
    """
    items = [(k + ("*" if k in changed else ""), repr(v)) for k, v in vars(cfg).items()]
    rows = -(-len(items) // columns)
    blocks = []
    for c in range(columns):
        chunk = items[c * rows:(c + 1) * rows]
        chunk += [("", "")] * (rows - len(chunk))
        blocks.append(pd.DataFrame(chunk, columns=["parameter", "value"]))
    return pd.concat(blocks, axis=1)

