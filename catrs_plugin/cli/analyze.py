"""``catrs analyze``: ACR and certified accuracy of Cohen-format result files, or, with
``--corruptions DIR...``, per-corruption ACR and accuracy and their means (mACR, mAcc)."""

from __future__ import annotations

import argparse
from pathlib import Path

from catrs_plugin.results.corruptions import format_corruption_table, summarize_corruptions
from catrs_plugin.results.metrics import default_radii, summarize
from catrs_plugin.results.report import format_table, to_json
from catrs_plugin.results.tsv import read_certify_results

DEFAULT_RADII = default_radii(2.0)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="ACR and certified accuracy of CERTIFY result files (or of corruption folders)",
        description="Summarise Cohen-format CERTIFY files: ACR and certified accuracy at chosen radii. "
                    "With --corruptions, summarise folders of <corruption>.tsv files (from "
                    "`catrs certify-corruptions`): ACR and accuracy per corruption, and mACR and mAcc.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="Cohen-format TSV files")
    parser.add_argument("--corruptions", nargs="+", default=None, metavar="DIR",
                        help="folders of <corruption>.tsv CERTIFY files, one per model")
    parser.add_argument("--radii", type=float, nargs="+", default=None, metavar="R",
                        help="radii for certified accuracy (default: 0.0 to 2.0 in steps of 0.25)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="output format")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if bool(args.files) == bool(args.corruptions):
        raise ValueError("give either result FILEs or --corruptions DIR..., not both or neither")
    if args.corruptions:
        return _run_corruptions(args)
    radii = args.radii if args.radii is not None else DEFAULT_RADII
    summaries = [summarize(_read(path), radii) for path in args.files]
    if args.format == "json":
        print(to_json(summaries))
    else:
        print(format_table(summaries, radii, markdown=args.format == "markdown"))
    return 0


def _read(path: str):
    if Path(path).is_dir():
        raise ValueError(f"FILE {path!r} is a folder: pass the result files in it (e.g. {path}/*.tsv), or "
                         f"--corruptions {path} for a folder of <corruption>.tsv files")
    results = read_certify_results(path)
    if not len(results):
        raise ValueError(f"FILE {path!r} holds no result rows (only the header); nothing to summarise")
    return results


def _run_corruptions(args: argparse.Namespace) -> int:
    summaries = [summarize_corruptions(directory) for directory in args.corruptions]
    if args.format == "json":
        print(to_json(summaries))
    else:
        print(format_corruption_table(summaries, markdown=args.format == "markdown"))
    return 0
