"""The ``catrs`` command: each module of this package adds one or more sub-commands.
May import every layer of catrs_plugin; nothing in catrs_plugin imports it.

A module defines ``register(subparsers)``, which adds its sub-parsers and sets ``func`` on
each to a function taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import NoReturn, Sequence

from catrs_plugin.utils.provenance import DEFAULT_HINT, ProvenanceError


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``catrs CMD: error: ...``), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

from catrs_plugin import __version__


def build_parser() -> argparse.ArgumentParser:
    """The ``catrs`` parser with every sub-command found in this package."""
    parser = Parser(
        prog="catrs", description="CAT-RS training and randomized-smoothing certification"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


class _StdoutHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` is at the time of each message (as ``print`` does)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass


def _show_progress_messages() -> None:
    """Print the package's INFO log messages (e.g. "resuming from epoch N") like the commands' own output."""
    logger = logging.getLogger("catrs_plugin")
    if not any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``catrs``; bad arguments, invalid values and unusable files exit with status 2 and a one-line
    message naming the argument, before anything is written."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a one-line argument error (2)
        return int(stop.code or 0)
    _show_progress_messages()
    try:
        return int(args.func(args) or 0)
    except ProvenanceError as error:
        message = str(error)  # with the caller's hint, e.g. how to redo the shards of a distributed run
        if hasattr(args, "restart"):
            message = f"{error.problem}; pass --restart to start afresh, or choose another output path"
        elif error.hint == DEFAULT_HINT:  # the Python wording (resume=False) means nothing here
            message = f"{error.problem}; delete it to start afresh, or choose another output path"
        print(f"catrs {args.command}: error: {message}", file=sys.stderr)
    except (ValueError, OSError) as error:
        print(f"catrs {args.command}: error: {error}", file=sys.stderr)
    return 2

