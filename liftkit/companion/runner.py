"""Run a book chapter with parameters: jupytext -> papermill -> deterministic executed notebook.

Chapters are MyST-markdown Jupytext notebooks with one cell tagged ``parameters``. Papermill
cannot read ``.md`` files, so the chapter is converted in memory, executed by papermill in the
chapter's own folder, stripped of timing metadata, given stable cell ids (``cell-0``, ...), and
written atomically. Goldens in ``tests/notebooks`` are produced the same way.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import nbformat

from liftkit.companion.profiles import load_profiles, profile_path
from liftkit.utils import atomic_path, repo_root

PARAMETERS_TAG = "parameters"
_VOLATILE_CELL_KEYS = ("papermill", "execution", "ExecuteTime")


def resolve_chapter(path: str | Path) -> Path:
    """The chapter file ``path`` names: as given if it exists, else relative to the repository.

    So ``book/lab_splits.md`` works from any folder of the checkout.

    Raises
    ------
    FileNotFoundError
        When neither exists.

    Examples
    --------
    >>> resolve_chapter("book/intro.md").is_file()  # doctest: +SKIP
    True
    """
    path = Path(path)
    if path.exists():
        return path
    if not path.is_absolute():
        try:
            candidate = repo_root() / path
        except FileNotFoundError:
            candidate = path
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no chapter at {path}; chapters live in book/ (e.g. book/intro.md)")


def default_output(chapter: str | Path) -> Path:
    """Where ``liftkit run`` writes by default: ``runs/<chapter>.ipynb`` of the repository (of
    the working directory when there is no checkout).

    Examples
    --------
    >>> default_output("book/coherence.md").name
    'coherence.ipynb'
    """
    return runs_path(f"{Path(chapter).stem}.ipynb")


def runs_path(filename: str) -> Path:
    """``runs/<filename>`` of the repository, or of the working directory outside a checkout:
    where commands write their results by default.

    Examples
    --------
    >>> runs_path("fig2.parquet").parts[-2:]
    ('runs', 'fig2.parquet')
    """
    try:
        base = repo_root()
    except FileNotFoundError:
        base = Path.cwd()
    return base / "runs" / filename


def read_chapter(path: str | Path) -> nbformat.NotebookNode:
    """Read a chapter (``.md`` via jupytext, or ``.ipynb``) as a notebook node with stable ids.

    ``path`` is found as :func:`resolve_chapter` says.

    Examples
    --------
    >>> nb = read_chapter("book/coherence.md")  # doctest: +SKIP
    >>> nb.cells[0].id  # doctest: +SKIP
    'cell-0'
    """
    import jupytext

    nb = jupytext.read(resolve_chapter(path))
    set_cell_ids(nb)
    return nb


def set_cell_ids(nb: nbformat.NotebookNode) -> None:
    """Give cells the ids ``cell-0``, ``cell-1``, ... so regenerated notebooks diff cleanly.

    Examples
    --------
    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    >>> set_cell_ids(nb); nb.cells[0].id
    'cell-0'
    """
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The one code cell tagged ``parameters``.

    Raises
    ------
    ValueError
        When there is none, or several.
    """
    cells = [
        c for c in nb.cells
        if c.cell_type == "code" and PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])
    ]
    if len(cells) != 1:
        raise ValueError(
            f"a chapter needs exactly one code cell tagged {PARAMETERS_TAG!r}, found {len(cells)}"
        )
    return cells[0]


def chapter_parameters(nb: nbformat.NotebookNode) -> dict[str, str]:
    """Names assigned in the parameters cell, mapped to the source text of their defaults.

    Examples
    --------
    >>> cell = nbformat.v4.new_code_cell("profile = 'default'\\nn: int = 3",
    ...                                  metadata={"tags": ["parameters"]})
    >>> chapter_parameters(nbformat.v4.new_notebook(cells=[cell]))
    {'profile': "'default'", 'n': '3'}
    """
    source = parameters_cell(nb).source
    params: dict[str, str] = {}
    for node in ast.parse(source).body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        for target in targets:
            if isinstance(target, ast.Name):
                value = getattr(node, "value", None)
                params[target.id] = ast.get_source_segment(source, value) if value else ""
    return params


def parse_value(text: str) -> Any:
    """Parse a command-line parameter value as YAML; text that is not YAML stays a string.

    Examples
    --------
    >>> parse_value("20000"), parse_value("[1, 3]"), parse_value("cuda")
    (20000, [1, 3], 'cuda')
    """
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def strip_volatile(nb: nbformat.NotebookNode) -> None:
    """Remove timings and run-specific paths so that two runs give identical files."""
    for cell in nb.cells:
        for key in _VOLATILE_CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
    pm = nb.metadata.get("papermill")
    if pm is not None:
        nb.metadata["papermill"] = {"parameters": pm.get("parameters", {})}
    set_cell_ids(nb)


def write_notebook(nb: nbformat.NotebookNode, output: str | Path) -> Path:
    """Write ``nb`` atomically: a temporary file in the same folder, then a rename.

    Examples
    --------
    >>> write_notebook(nbformat.v4.new_notebook(), "runs/empty.ipynb")  # doctest: +SKIP
    PosixPath('runs/empty.ipynb')
    """
    output = Path(output)
    with atomic_path(output, ".ipynb.part") as tmp:
        nbformat.write(nb, str(tmp))
    return output


def _check_parameters(chapter: Path, nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> None:
    known = chapter_parameters(nb)
    # A chapter with a profile file (book/profiles/<chapter>.yaml) takes each of its names too.
    if profile_path(chapter).exists():
        table = load_profiles(chapter.stem)
        default = table.get("default", {})
        for name in sorted({k for values in table.values() for k in values}):
            known.setdefault(name, f"{default.get(name)!r} in the default profile")
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        listing = ", ".join(f"{k} (default {v})" for k, v in known.items())
        raise ValueError(
            f"{chapter.name} has no parameter(s) {unknown}; its parameters are: {listing}"
        )


def run_chapter(
    chapter: str | Path,
    output: str | Path | None = None,
    parameters: dict[str, Any] | None = None,
    *,
    kernel_name: str = "python3",
    progress: bool = False,
    timeout: int | None = None,
) -> nbformat.NotebookNode:
    """Execute ``chapter`` with ``parameters`` and return (and optionally write) the notebook.

    Parameters
    ----------
    chapter
        Path of a chapter, e.g. ``book/moi_experiment.md`` (relative to the working directory
        or to the repository, see :func:`resolve_chapter`).
    output
        Where to write the executed ``.ipynb``; ``None`` writes nothing.
    parameters
        Values injected after the ``parameters`` cell (papermill). Unknown names are an error
        that lists the chapter's parameters.
    kernel_name, progress, timeout
        Passed to papermill (``timeout`` is per cell, in seconds).

    Raises
    ------
    ValueError
        Unknown parameter names.
    RuntimeError
        A cell raised; the message names the cell and the error. Nothing is written.

    Examples
    --------
    >>> run_chapter("book/coherence.md", "runs/c.ipynb", {"profile": "smoke"})  # doctest: +SKIP
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    chapter = resolve_chapter(chapter)
    nb = read_chapter(chapter)
    parameters = dict(parameters or {})
    _check_parameters(chapter, nb, parameters)
    try:
        executed = papermill.execute_notebook(
            nb, None, parameters=parameters, kernel_name=kernel_name,
            cwd=str(chapter.resolve().parent), progress_bar=progress, execution_timeout=timeout,
        )
    except PapermillExecutionError as err:
        raise RuntimeError(
            f"{chapter.name} failed in cell {err.cell_index} ({err.ename}: {err.evalue}); "
            "no output was written"
        ) from None
    strip_volatile(executed)
    if output is not None:
        write_notebook(executed, output)
    return executed
