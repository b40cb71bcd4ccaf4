"""Helpers every chapter uses: parameter profiles and their display.

Profiles: ``"smoke"`` (seconds: does the chapter run; the goldens), ``"check"`` (the smallest
scale at which each of the chapter's registered claims is decided, run by ``make test``),
``"default"`` (what the book shows) and ``"paper"`` (the papers' scale, meant for a GPU or a
sweep). A chapter's ``parameters`` cell sets ``profile`` and every other
parameter to ``None``; :func:`configure` fills each ``None`` from the profile's table, so a
papermill parameter (``liftkit run book/x.md -p n_cells 20000``) overrides one value and the
profile supplies the rest.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

PROFILES = ("smoke", "check", "default", "paper")


def configure(profile: str, table: dict[str, dict[str, Any]], **given: Any) -> SimpleNamespace:
    """Resolve a chapter's parameters.

    Parameters
    ----------
    profile
        One of ``"smoke"`` (seconds, for tests), ``"check"`` (claims decided, for tests),
        ``"default"`` (the book, minutes on a 2-core CPU) or ``"paper"`` (paper scale, meant for
        a GPU).
    table
        ``{profile: {name: value}}`` giving each parameter's value per profile.
    **given
        The values from the parameters cell; ``None`` means "take it from the profile".

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


def show_config(cfg: SimpleNamespace) -> None:
    """Print the resolved parameters, one per line, so the rendered page records them.

    Examples
    --------
    >>> show_config(SimpleNamespace(profile="smoke", n_cells=200))
    profile = 'smoke'
    n_cells = 200
    """
    width = max(len(k) for k in vars(cfg))
    for key, value in vars(cfg).items():
        print(f"{key:<{width}} = {value!r}")
