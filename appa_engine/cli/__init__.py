"""The ``appa`` command line.

One console script with subcommands. Each subcommand lives in a module of this package that
exposes ``register(subparsers)``; it only parses arguments and calls one library function.
Modules import heavy dependencies (torch, xarray, panel) inside their handlers so that
``appa --help`` stays fast.

Errors a user can fix (:class:`~appa_engine.errors.AppaError`) are printed without a traceback and
exit with status 2; ``APPA_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from appa_engine.errors import AppaError

__all__ = ["main", "build_parser", "report_error"]

#: Modules that register subcommands, in the order ``appa --help`` lists them.
COMMANDS = ("data", "train", "assimilate", "evaluate", "serve")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="appa",
        description="Appa Studio: score-based data assimilation of the global atmosphere.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"appa_engine.cli.{name}").register(subparsers)
    return parser


def report_error(e: AppaError) -> int:
    """Print what is wrong and how to fix it (``error: …`` and ``hint: …`` on stderr), as every
    command of ``appa`` and the project's scripts do; returns the exit status, 2."""

    print(f"error: {e.message}", file=sys.stderr)
    if e.hint:
        print(f"hint: {e.hint}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = args.handler(args)
    except AppaError as e:
        if os.environ.get("APPA_DEBUG"):
            raise
        return report_error(e)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
