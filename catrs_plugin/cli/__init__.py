"""The ``catrs`` command: each module of this package adds one or more sub-commands.
May import every layer of catrs_plugin; nothing in catrs_plugin imports it.

A module defines ``register(subparsers)``, which adds its sub-parsers and sets ``func`` on
each to a function taking the parsed ``argparse.Namespace`` and returning an exit code. Every
sub-command takes ``--config FILE`` and ``--save-config FILE`` (:mod:`catrs_plugin.cli._config`); a
module says where its command writes its config by itself with
:func:`~catrs_plugin.cli._config.add_config_arguments`. Building the parser imports no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import pkgutil
import sys
import traceback
from typing import Iterator, NoReturn, Sequence

from catrs_plugin.cli import _config
from catrs_plugin.cli._common import say


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``catrs CMD: error: ...``), exit status 2.

    ``commands``: the sub-commands' parsers by name (set on the ``catrs`` parser by :func:`build_parser`).
    """

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

from catrs_plugin import __version__

DEBUG_HELP = "on an error, also print the traceback (for bug reports)"


def build_parser() -> argparse.ArgumentParser:
    """The ``catrs`` parser with every sub-command found in this package (each also takes ``--debug``)."""
    parser = Parser(
        prog="catrs", description="CAT-RS training and randomized-smoothing certification"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    for subparser in subparsers.choices.values():
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        if not any(action.dest == "config" for action in subparser._actions):
            _config.add_config_arguments(subparser)
    parser.commands = dict(subparsers.choices)
    return parser


class _StdoutHandler(logging.Handler):
    """Writes each message to whatever ``sys.stdout`` is at the time (as ``print`` does), through
    :func:`say`, so that open progress bars are redrawn below it instead of being broken."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            say(self.format(record))
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _progress_messages() -> Iterator[None]:
    """While a command runs, print the package's INFO log messages (per-epoch lines, "resuming from
    epoch N") like the command's own output; the logger is as it was once the command returns, so that
    calling :func:`main` in a Python session leaves that session's logging alone."""
    logger = logging.getLogger("catrs_plugin")
    if any(isinstance(handler, _StdoutHandler) for handler in logger.handlers):  # main() within main()
        yield
        return
    handler, level = _StdoutHandler(), logger.level
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``catrs``; bad arguments, invalid values and unusable files exit with status 2 and a one-line
    message naming the argument, before anything is written.

    Every argument is checked before the sub-command starts (:mod:`catrs_plugin.cli._checks`), and
    a failure only the system can tell (no memory, a failing device, a full disk, a damaged file,
    a missing optional package: :mod:`catrs_plugin.cli._failures`) ends the same way; ``--debug``
    also prints the traceback. Anything else is a bug and ends with its traceback (status 1). A command
    that finishes writes its config file (:mod:`catrs_plugin.cli._config`).
    """
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _config.apply_config(argv, parser.commands)
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a one-line argument error (2)
        return int(stop.code or 0)
    except (ValueError, OSError) as error:  # an unusable --config FILE
        print(f"catrs {_config.find_command(argv)}: error: {error}", file=sys.stderr)
        return 2
    from catrs_plugin.cli._checks import check_arguments, option_names
    from catrs_plugin.cli._failures import explain
    from catrs_plugin.utils.provenance import DEFAULT_HINT, ProvenanceError

    options = option_names(parser._subparsers._group_actions[0].choices[args.command])
    try:
        with contextlib.ExitStack() as held_outputs:  # outputs a sub-command locks until it ends (claim_output)
            held_outputs.enter_context(_progress_messages())
            args.held_outputs = held_outputs
            check_arguments(args, options)
            code = int(args.func(args) or 0)
            if code == 0:
                _config.save(parser.commands[args.command], args, __version__)
            return code
    except ProvenanceError as error:  # with the caller's hint, e.g. how to redo the shards of a distributed run
        failure, message = error, str(error)
        if hasattr(args, "restart"):
            message = f"{error.problem}; pass --restart to start afresh, or choose another output path"
        elif error.hint == DEFAULT_HINT:  # the Python wording (resume=False) means nothing here
            message = f"{error.problem}; delete it to start afresh, or choose another output path"
    except Exception as error:  # noqa: BLE001 - known failures become one line, the others are re-raised
        failure, message = error, explain(error, args, options)
        if message is None and isinstance(error, (ValueError, OSError)):
            message = str(error)
        if message is None:
            raise
    if args.debug:
        traceback.print_exception(failure)
    print(f"catrs {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
    return 2

