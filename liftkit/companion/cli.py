"""The ``liftkit`` command: run chapters with parameters, run sweeps, build the book, list and fetch data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_run(args: argparse.Namespace) -> int:
    from liftkit.companion.runner import default_output, parse_value, run_chapter

    params = {name: parse_value(value) for name, value in args.parameter}
    output = Path(args.output) if args.output else default_output(args.chapter)
    run_chapter(args.chapter, output, params, progress=not args.quiet, timeout=args.timeout)
    print(f"wrote {output}")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    import tempfile

    from liftkit.companion.build import build_book, subset_book
    from liftkit.utils import repo_root

    params = {"profile": args.profile} if args.profile else {}
    root, output = args.root, args.into
    if args.only:
        output = output or tempfile.mkdtemp(prefix="liftkit-book-")
        root = subset_book(args.root or repo_root(), args.only, Path(output) / "src")
    code = build_book(root, output=output, parameters=params, jobs=args.jobs,
                      check=not args.no_check)
    if output:
        print(f"book: {Path(output) / '_build' / 'html' / 'index.html'}")
    return code


def _cmd_check_html(args: argparse.Namespace) -> int:
    from liftkit.companion.browser import check_book, find_browser, print_report
    from liftkit.utils import repo_root

    if args.setup:
        print(f"browser: {find_browser()}")
        return 0
    reports = check_book(args.html or repo_root() / "_build" / "html")
    print_report(reports)
    return 0 if all(r.ok for r in reports) else 1


def _cmd_data(args: argparse.Namespace) -> int:
    import pandas as pd

    from liftkit import data

    if args.action == "list":
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(data.list_datasets().drop(columns="description").to_string(index=False))
        return 0
    if not args.name:
        raise ValueError("`liftkit data fetch` needs a dataset name; see `liftkit data list`")
    print(data.fetch(args.name, allow_unverified=args.allow_unverified, progressbar=True))
    return 0


def _cmd_regold(args: argparse.Namespace) -> int:
    from liftkit.companion.goldens import regold

    for path in regold(args.chapters):
        print(f"wrote {path}")
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from liftkit.companion.runner import parse_value
    from liftkit.companion.sweep import build_grid, run_sweep, verify_table

    if args.verify:
        report = verify_table(args.verify, args.rows, workers=args.workers,
                              scheduler=args.scheduler, show_progress=True)
        print(report.round(4).to_string(index=False))
        print(f"{int(report.ok.sum())} of {len(report)} recomputed values within tolerance")
        return 0 if bool(report.ok.all()) else 1
    if not args.name:
        raise ValueError("`liftkit sweep` needs a sweep name (fig2, lab-splits, table1, lifted) "
                         "or --verify")
    params = {name: parse_value(value) for name, value in args.parameter}
    if args.tasks:
        grid = build_grid(args.name, params).drop(columns="params")
        print(grid.to_string(index=False))
        return 0
    table = run_sweep(args.name, params, output=args.output, workers=args.workers,
                      scheduler=args.scheduler)
    failed = table[table.status != "ok"] if len(table) else table
    print(f"{len(table)} tasks, {len(failed)} failed")
    for _, row in failed.iterrows():
        print(f"  {row.task_id}: {row.error}")
    return 0 if failed.empty else 1


def _add_sweep_parser(sub: argparse._SubParsersAction) -> None:
    """The ``liftkit sweep`` sub-command (liftkit.companion.sweep)."""
    swp = sub.add_parser("sweep", help="run a named grid of fits on Dask into a Parquet table")
    swp.add_argument("name", nargs="?", help="fig2, lab-splits, table1 or lifted")
    swp.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="profile, seed, device, or a chapter profile value (YAML), e.g. -p n_cells 18000",
    )
    swp.add_argument("--workers", type=int, default=None,
                     help="local worker processes (default: the cores; 0: in this process)")
    swp.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    swp.add_argument("-o", "--output", help="Parquet table (default: runs/<name>.parquet)")
    swp.add_argument("--tasks", action="store_true", help="print the grid's tasks and exit")
    swp.add_argument("--verify", metavar="TABLE",
                     help="recompute the rows of a results table and compare (no NAME)")
    swp.add_argument("--rows", type=int, nargs="*", default=None,
                     help="with --verify: the row positions to recompute (default: all)")
    swp.set_defaults(func=_cmd_sweep)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``liftkit`` command (sub-commands run, build, regold, sweep,
    data)."""
    parser = argparse.ArgumentParser(prog="liftkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="execute a chapter with parameters (papermill)")
    run.add_argument("chapter", help="chapter file, e.g. book/moi_experiment.md")
    run.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="set a parameter; VALUE is read as YAML (20000, 0.5, cuda, '[1, 3, 10]')",
    )
    run.add_argument(
        "-o", "--output",
        help="executed notebook path (default: the repository's runs/<chapter>.ipynb)",
    )
    run.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    run.set_defaults(func=_cmd_run)

    build = sub.add_parser("build", help="build the book strictly (a failing chapter fails)")
    build.add_argument(
        "root", nargs="?", default=None,
        help="folder with _config.yml and _toc.yml (default: the repository root)",
    )
    build.add_argument("--profile", help="profile of every chapter (default: each chapter's own)")
    build.add_argument("--only", nargs="+", metavar="CHAPTER",
                       help="a small book of these chapters (file stems) and the pages without code")
    build.add_argument("--into", help="folder for _build (default: ROOT; with --only a new "
                       "temporary folder)")
    build.add_argument("-j", "--jobs", type=int, default=None,
                       help="chapters executed at once (default: one per core)")
    build.add_argument("--no-check", action="store_true", help="skip the browser check")
    build.set_defaults(func=_cmd_build)

    html = sub.add_parser("check-html", help="check a built book in headless chromium")
    html.add_argument("html", nargs="?", default=None,
                      help="the built book (default: the repository's _build/html)")
    html.add_argument("--setup", action="store_true",
                      help="only find the browser (as root, install chromium if missing)")
    html.set_defaults(func=_cmd_check_html)

    gold = sub.add_parser("regold", help="rewrite golden notebooks (tests/notebooks) on purpose")
    gold.add_argument("chapters", nargs="*", help="chapter stems (default: every chapter)")
    gold.set_defaults(func=_cmd_regold)

    _add_sweep_parser(sub)

    dat = sub.add_parser("data", help="list or fetch the manifest's datasets")
    dat.add_argument("action", choices=["list", "fetch"])
    dat.add_argument("name", nargs="?")
    dat.add_argument("--allow-unverified", action="store_true",
                     help="fetch an entry whose sha256 is not recorded yet, and print its hash")
    dat.set_defaults(func=_cmd_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``liftkit`` command; user errors print one line and exit 2.

    Examples
    --------
    >>> main(["data", "list"])  # doctest: +SKIP
    >>> main(["run", "book/coherence.md", "-p", "profile", "smoke"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"liftkit: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
