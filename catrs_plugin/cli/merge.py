"""``catrs merge-shards``: merge per-rank result files of a distributed run into one TSV.

``catrs certify`` under ``torchrun`` merges by itself when all ranks share a file system;
this command does it by hand, e.g. after copying the shards of several machines together.
"""

from __future__ import annotations

import argparse

from catrs_plugin.cli._config import add_config_arguments, beside


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-shards",
        help="merge OUTFILE.rank0, OUTFILE.rank1, ... of a distributed certify/predict run into OUTFILE",
        description="Merge per-rank Cohen-format files into one, sorted by example index; an example "
                    "present in several shards must have the same row apart from the time column.",
    )
    parser.add_argument("outfile", help="merged file to write (its shards are OUTFILE.rank{r})")
    parser.add_argument("--shards", nargs="+", default=None, metavar="FILE",
                        help="shard files to merge (default: every OUTFILE.rank{r})")
    add_config_arguments(parser, beside("outfile"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.certify.distributed import find_shards, merge_shards
    from catrs_plugin.utils.validation import check_output_file

    check_output_file(args.outfile, "outfile")
    shards = args.shards or find_shards(args.outfile)
    rows = merge_shards(args.outfile, shards)
    print(f"merged {len(shards)} shards into {args.outfile} ({rows} rows)")
    return 0
