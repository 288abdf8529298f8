"""``catrs methods``: every registered training method, its paper, hyper-parameters and presets."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from catrs_plugin.methods.base import Method


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "methods",
        help="list the registered training methods (built-in and from plugins)",
        description="List every training method registered through the `catrs` entry points: name, paper, "
        "hyper-parameters with their defaults, and presets with the sigmas they are defined for.",
    )
    parser.add_argument("--format", choices=("table", "json"), default="table",
                        help="plain-text table or a JSON list of objects (default: table)")
    parser.set_defaults(func=run)


def describe(method: Method) -> dict[str, Any]:
    """A JSON-ready description of ``method`` (preset sigmas become strings, as JSON keys must be)."""
    return {
        "name": method.name,
        "paper": method.paper,
        "description": method.description,
        "hyperparameters": dict(method.defaults),
        "accepted": {name: declaration.describe() for name, declaration in sorted(method.declared.items())},
        "presets": {
            preset: {str(sigma): dict(values) for sigma, values in sorted(table.items())}
            for preset, table in method.presets.items()
        },
        "needs_soft_labels": method.needs_soft_labels,
        "chunks": method.chunks,
        "data_schedule": method.schedule is not None,
    }


def format_methods(descriptions: list[dict[str, Any]]) -> str:
    """One block per method: name and paper, its description, hyper-parameter defaults, presets."""
    blocks = []
    for item in descriptions:
        defaults = " ".join(f"{key}={value}" for key, value in item["hyperparameters"].items()) or "(none)"
        accepted = "; ".join(f"{key}: {text}" for key, text in item["accepted"].items())
        presets = ", ".join(
            f"{preset} (sigma {', '.join(table)})" for preset, table in item["presets"].items()
        ) or "(none)"
        lines = [f"{item['name']}: {item['paper']}"]
        if item["description"]:
            lines.append(f"  {item['description']}")
        lines.append(f"  hyper-parameters: {defaults}")
        if accepted:
            lines.append(f"  accepted values: {accepted}")
        lines.append(f"  presets: {presets}")
        if item["needs_soft_labels"]:
            lines.append("  needs soft labels (smoothed predictions of a teacher)")
        if item.get("data_schedule"):
            lines.append("  has a data schedule: chooses which training examples each epoch draws, and how often")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.plugins.registry import get_registry

    registry = get_registry()
    for plugin, error in sorted(registry.failures.items()):
        print(f"catrs methods: warning: plugin {plugin!r} failed to load and is skipped: {error}", file=sys.stderr)
    descriptions = [describe(registry.methods[name]) for name in sorted(registry.methods)]
    if args.format == "json":
        print(json.dumps(descriptions, indent=2))
    else:
        print(format_methods(descriptions))
    return 0
