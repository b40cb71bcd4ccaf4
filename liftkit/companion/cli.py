"""The ``liftkit`` command: run chapters with parameters, build the book, list and fetch data."""

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
    from liftkit.companion.build import build_book

    return build_book(args.root)


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``liftkit`` command (sub-commands run, build, regold, data)."""
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
    build.set_defaults(func=_cmd_build)

    gold = sub.add_parser("regold", help="rewrite golden notebooks (tests/notebooks) on purpose")
    gold.add_argument("chapters", nargs="*", help="chapter stems (default: every chapter)")
    gold.set_defaults(func=_cmd_regold)

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
