"""``catrs analyze``: ACR and certified accuracy of Cohen-format result files."""

from __future__ import annotations

import argparse
import json

from catrs_plugin.metrics import default_radii, summarize
from catrs_plugin.report import format_table
from catrs_plugin.results import read_certify_results

DEFAULT_RADII = default_radii(2.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="ACR and certified accuracy of CERTIFY result files",
        description="Summarise Cohen-format CERTIFY files: ACR and certified accuracy at chosen radii.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="Cohen-format TSV files")
    parser.add_argument("--radii", type=float, nargs="+", default=None, metavar="R",
                        help="radii for certified accuracy (default: 0.0 to 2.0 in steps of 0.25)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="output format")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    radii = args.radii if args.radii is not None else DEFAULT_RADII
    if any(r < 0 for r in radii):
        raise ValueError(f"--radii must be >= 0, got {radii}")
    summaries = [summarize(read_certify_results(path), radii) for path in args.files]
    if args.format == "json":
        print(json.dumps(summaries, indent=2))
    else:
        print(format_table(summaries, radii, markdown=args.format == "markdown"))
    return 0
