"""Seeding, device resolution, atomic writes, progress bars and the repository root."""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

if TYPE_CHECKING:
    from tqdm import tqdm as tqdm_type

T = TypeVar("T")


def set_seed(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA) and return a seeded torch generator.

    Parameters
    ----------
    seed
        Any non-negative integer. The same seed gives the same numbers on CPU; for
        bit-identical goldens also set ``OMP_NUM_THREADS=1``.

    Raises
    ------
    ValueError
        If ``seed`` is not a non-negative integer.

    Examples
    --------
    >>> gen = set_seed(0)
    >>> a = torch.rand(2, generator=gen)
    >>> torch.equal(a, torch.rand(2, generator=set_seed(0)))
    True
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

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("auto").type in ("cpu", "cuda")
    True
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
            f"device {device!r} requested but CUDA is not available here: "
            "use device='cpu' or 'auto'"
        )
    return dev


def _current_umask() -> int:
    """The process's umask (``os.umask`` can only be read by setting it, so set it back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_path(target: str | Path, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; it replaces ``target`` only if the block succeeds.

    Readers never see a half-written file: on any error the temporary file is removed and
    ``target`` is left as it was. Parent folders are created.

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    >>> oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_current_umask())
    True
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=suffix)
    os.close(fd)
    mode = 0o666 & ~_current_umask()
    try:
        yield Path(tmp)
        # mkstemp creates the file readable by its owner only; give it the mode of a plain open()
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress_enabled() -> bool:
    """Progress bars are on unless ``LIFTKIT_PROGRESS=0`` or running under CI (``CI`` set).

    Examples
    --------
    >>> isinstance(progress_enabled(), bool)
    True
    """
    flag = os.environ.get("LIFTKIT_PROGRESS")
    if flag is not None:
        return flag not in ("0", "false", "False", "")
    return not os.environ.get("CI")


def progress(iterable: Iterable[T] | None = None, **kwargs: Any) -> tqdm_type[T]:
    """A tqdm progress bar that honours :func:`progress_enabled` (off in CI and nbval runs).

    The notebook widget bar when ipywidgets is installed, else the text bar: importing
    ``tqdm.auto`` without ipywidgets prints a warning (with a local path) into the notebook.

    Examples
    --------
    >>> sum(progress(range(3), desc="demo"))
    3
    """
    import importlib.util

    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


ENV_ROOT = "LIFTKIT_ROOT"
#: Files that mark the top folder of a liftkit checkout.
ROOT_MARKERS = ("_toc.yml", "data_manifest.yaml")
#: The folder holding the ``liftkit`` package: the checkout itself for an editable install.
PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def is_repo_root(folder: str | Path) -> bool:
    """True when ``folder`` holds every file of :data:`ROOT_MARKERS`.

    Examples
    --------
    >>> is_repo_root("/")
    False
    """
    return all((Path(folder) / name).is_file() for name in ROOT_MARKERS)


def repo_root(
    start: str | Path | None = None, *, fallback: str | Path | None = PACKAGE_PARENT
) -> Path:
    """The liftkit repository this code runs in: the folder holding ``_toc.yml`` and
    ``data_manifest.yaml``.

    Looked for in ``$LIFTKIT_ROOT`` if set, else in ``start`` (default: the working directory)
    and its parents, else in ``fallback`` (default: the folder holding the package, which is the
    checkout for an editable install). Chapters run in ``book/`` and nbval in
    ``tests/notebooks/``, so the upward search finds the checkout from both.

    Parameters
    ----------
    start
        Where the upward search begins (default: the working directory).
    fallback
        The folder tried last; ``None`` tries none.

    Returns
    -------
    Path
        The repository's top folder, resolved.

    Raises
    ------
    FileNotFoundError
        When ``$LIFTKIT_ROOT`` is not a checkout, or no checkout is found (liftkit installed
        without one); the message names the fix.

    Examples
    --------
    >>> (repo_root() / "_toc.yml").is_file()  # doctest: +SKIP
    True
    >>> repo_root("book") == repo_root()  # doctest: +SKIP
    True
    """
    markers = " and ".join(ROOT_MARKERS)
    env = os.environ.get(ENV_ROOT)
    if env:
        if not is_repo_root(env):
            raise FileNotFoundError(
                f"${ENV_ROOT}={env} has no {markers}: point {ENV_ROOT} at a liftkit checkout, "
                "or unset it to search from the working directory"
            )
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    candidates = [here, *here.parents]
    if fallback is not None:
        candidates.append(Path(fallback).resolve())
    for folder in candidates:
        if is_repo_root(folder):
            return folder
    raise FileNotFoundError(
        f"no liftkit repository (a folder with {markers}) at or above {here}: "
        f"run from a checkout of the liftkit repository, or set {ENV_ROOT} to one"
    )
