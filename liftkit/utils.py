"""Seeding, device resolution, atomic writes, progress bars and the repository root."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a seeded torch generator.

    Parameters
    ----------
    seed
        Any non-negative integer. The same seed gives the same numbers on CPU; for
        bit-identical goldens also set ``OMP_NUM_THREADS=1``.
    """
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries (scikit-learn) draw from it
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; validate anything else.

    Raises
    ------
    ValueError
        If the name is not a torch device, or CUDA is asked for on a machine without it.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError as err:
            raise ValueError(
                f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda' (optionally 'cuda:N')"
            ) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} requested but CUDA is not available here: use device='cpu' or 'auto'"
        )
    return dev


@contextmanager
def atomic_path(target: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    Readers never see a half-written file: on any error the temporary file is removed and
    ``target`` is left as it was. Parent folders are created.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress_enabled() -> bool:
    """Progress bars are on unless ``LIFTKIT_PROGRESS=0`` or running under CI (``CI`` set)."""
    flag = os.environ.get("LIFTKIT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "False", "")
    return not os.environ.get("CI")


def progress(iterable=None, **kwargs):
    """``tqdm.auto.tqdm`` that honours :func:`progress_enabled` (off in CI and nbval runs)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


_ENV_ROOT = "LIFTKIT_ROOT"
_MARKERS = ("_toc.yml", "data_manifest.yaml")


def _is_repo(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _MARKERS)


def repo_root(start: str | Path | None = None) -> Path:
    """The liftkit repository this code runs in: the folder holding ``_toc.yml`` and
    ``data_manifest.yaml``.

    Looked for in ``$LIFTKIT_ROOT`` if set, else in ``start`` (default: the working directory)
    and its parents, else beside the package (an editable install). Chapters run in ``book/``
    and nbval in ``tests/notebooks/``, so the upward search finds the checkout from both.

    Raises
    ------
    FileNotFoundError
        When no such folder is found (liftkit installed without a checkout), naming the fix.

    Examples
    --------
    >>> (repo_root() / "_toc.yml").is_file()  # doctest: +SKIP
    True
    """
    env = os.environ.get(_ENV_ROOT)
    if env:
        if not _is_repo(Path(env)):
            raise FileNotFoundError(
                f"${_ENV_ROOT}={env} has no {' and '.join(_MARKERS)}: point it at a liftkit checkout"
            )
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents, Path(__file__).resolve().parents[1]):
        if _is_repo(folder):
            return folder
    raise FileNotFoundError(
        f"no liftkit repository (a folder with {' and '.join(_MARKERS)}) at or above {here}: "
        f"run from a checkout of the liftkit repository, or set {_ENV_ROOT} to one"
    )
