"""The ``catrs`` command. Each module of this package adds one or more sub-commands.

A module defines ``register(subparsers)``, which adds its sub-parsers and sets ``func`` on
each to a function taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from catrs_plugin import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``catrs`` parser with every sub-command found in this package."""
    parser = argparse.ArgumentParser(
        prog="catrs", description="CAT-RS training and randomized-smoothing certification"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``catrs``; bad arguments and invalid values exit with status 2 and a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"catrs {args.command}: error: {error}", file=sys.stderr)
        return 2

