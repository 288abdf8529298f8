"""Config files: every ``catrs`` sub-command writes its full settings, and reads them back with ``--config FILE``.

A command that finishes (exit status 0) writes every one of its options, defaults included, to
its config file: ``CHECKPOINT.config.json`` for ``catrs train``, ``OUTFILE.config.json`` for
``certify``, ``predict``, ``smooth-predict`` and ``merge-shards``, ``OUTPUT/config.json`` for
``demo``, ``compare`` and ``certify-corruptions``, and, for any command, the file named by
``--save-config FILE``. ``catrs CMD --config FILE`` runs the same command with those settings;
options given on the command line override the file (an option that may be repeated, such as
``--hp``, adds to the file's list; a flag the file sets cannot be unset, edit the file instead).
``--restart`` (an action rather than a setting) and ``--debug`` are never written.

The file is JSON: ``{"command": "train", "version": "0.1.0", "settings": {"dataset": "digits", ...}}``.
Its values are checked as the command line's are (types, ranges, choices) before the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

#: Namespace entries that are not settings: never written, never read.
NOT_SETTINGS = frozenset({"help", "func", "command", "config", "save_config", "restart", "config_place", "debug",
                          "held_outputs"})

#: Name of the config file inside an output folder, and the suffix added to an output file's name.
FOLDER_CONFIG, FILE_CONFIG_SUFFIX = "config.json", ".config.json"


def add_config_arguments(parser: argparse.ArgumentParser,
                         place: Callable[[argparse.Namespace], Path | None] | None = None) -> None:
    """``--config FILE`` and ``--save-config FILE`` on a sub-command's parser; ``place`` says where the
    command writes its config file by itself (from its parsed arguments), if anywhere."""
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="take every setting from FILE, the config an earlier run of this command wrote; "
                             "options given here override it")
    parser.add_argument("--save-config", default=None, metavar="FILE",
                        help="also write this command's settings to FILE when it finishes")
    parser.set_defaults(config_place=place)


def in_folder(option: str) -> Callable[[argparse.Namespace], Path]:
    """``place`` of a command whose output is the folder ``option`` names: ``FOLDER/config.json``."""
    return lambda args: Path(getattr(args, option)) / FOLDER_CONFIG


def beside(option: str) -> Callable[[argparse.Namespace], Path]:
    """``place`` of a command whose output is the file ``option`` names: ``FILE.config.json``."""
    return lambda args: Path(getattr(args, option)).with_name(Path(getattr(args, option)).name + FILE_CONFIG_SUFFIX)


def settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """Every setting of ``args`` that ``parser`` defines, by destination name."""
    return {action.dest: getattr(args, action.dest) for action in parser._actions
            if action.dest not in NOT_SETTINGS and hasattr(args, action.dest)}


def write_config(path: str | os.PathLike, command: str, values: Mapping[str, Any], version: str) -> Path:
    """Write the config file of ``catrs COMMAND`` (of catrs-plugin ``version``) with ``values``, atomically."""
    from catrs_plugin.utils.atomic import write_atomic

    path = Path(path)
    write_atomic(path, json.dumps({"command": command, "version": version, "settings": dict(values)},
                                  indent=2) + "\n")
    return path


def save(parser: argparse.ArgumentParser, args: argparse.Namespace, version: str) -> list[Path]:
    """Write the config file(s) of the finished command ``args`` (rank 0 only under ``torchrun``)."""
    if os.environ.get("RANK", "0") != "0":
        return []
    places = [args.config_place(args) if args.config_place else None, args.save_config]
    values = settings(parser, args)
    return [write_config(place, args.command, values, version) for place in dict.fromkeys(places)
            if place is not None]


def find_command(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` runs: its first word that is not an option (``catrs`` has no options with values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def config_file(argv: Sequence[str]) -> str | None:
    """The FILE of ``--config FILE`` or ``--config=FILE`` in ``argv`` (the last one), or None."""
    found = None
    for position, word in enumerate(argv):
        if word == "--config" and position + 1 < len(argv):
            found = argv[position + 1]
        elif word.startswith("--config="):
            found = word.partition("=")[2]
    return found


def read_config(path: str, command: str, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The settings of config ``path`` for ``catrs COMMAND``, each checked as the command line checks it.

    Raises
    ------
    ValueError
        Naming ``--config FILE`` and what is wrong: not a config file, one of another command, an
        unknown setting, or a value its option does not accept.
    """
    from catrs_plugin.cli._common import for_argument
    from catrs_plugin.utils.provenance import read_json

    label = f"--config {path}"
    with for_argument("--config"):
        document = read_json(path, "config file")
    if not isinstance(document.get("settings"), dict) or not isinstance(document.get("command"), str):
        raise ValueError(f"{label}: not a catrs config file (it needs \"command\" and \"settings\")")
    if document["command"] != command:
        raise ValueError(f"{label} holds the settings of `catrs {document['command']}`, not of `catrs {command}`")
    actions = {action.dest: action for action in parser._actions if action.dest not in NOT_SETTINGS}
    unknown = sorted(set(document["settings"]) - set(actions))
    if unknown:
        raise ValueError(f"{label}: `catrs {command}` has no setting {', '.join(map(repr, unknown))}; "
                         f"valid: {', '.join(sorted(actions))}")
    return {dest: _checked(actions[dest], value, label) for dest, value in document["settings"].items()}


def _checked(action: argparse.Action, value: Any, label: str) -> Any:
    """``value`` as the command line would have given it to ``action``: each item converted by its type
    (from its text, so ranges are checked too) and within its choices."""
    if value is None:
        return None
    many = isinstance(value, list)
    if many != (action.nargs in ("*", "+") or isinstance(action, argparse._AppendAction)):
        raise ValueError(f"{label}: {_name(action)} takes {'a list' if not many else 'one value'}, got {value!r}")
    items = value if many else [value]
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ValueError(f"{label}: {_name(action)} is true or false, got {value!r}")
        return value
    converted = []
    for item in items:
        if action.type is not None:
            try:
                item = action.type(item if isinstance(item, str) else json.dumps(item))
            except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
                raise ValueError(f"{label}: {_name(action)}: {error}") from None
        if action.choices is not None and item not in action.choices:
            raise ValueError(f"{label}: {_name(action)} must be one of {', '.join(map(str, action.choices))}, "
                             f"got {item!r}")
        converted.append(item)
    return converted if many else converted[0]


def _name(action: argparse.Action) -> str:
    return action.option_strings[-1] if action.option_strings else action.dest


def apply_config(argv: Sequence[str], commands: Mapping[str, argparse.ArgumentParser]) -> None:
    """When ``argv`` has ``--config FILE``, make its settings the defaults of its sub-command's parser, so that
    options given in ``argv`` override them and options the file sets are no longer required."""
    path = config_file(argv)
    command = find_command(argv)
    if path is None or command not in commands:
        return
    parser = commands[command]
    values = read_config(path, command, parser)
    for action in parser._actions:
        if action.dest in values:
            action.required = False
            if not action.option_strings and action.nargs is None:  # a positional the file gives
                action.nargs = "?"
    parser.set_defaults(**values)


__all__ = ["add_config_arguments", "apply_config", "beside", "in_folder", "read_config", "save", "settings",
           "write_config"]
