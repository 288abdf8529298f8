"""``catrs certify-corruptions``: CERTIFY over CIFAR-10-C, one Cohen-format TSV per corruption.

The CAT-RS paper's CIFAR-10-C evaluation (every 100th of the 50,000 rows of each corruption,
all severities, sigma = 0.25) is::

    catrs certify-corruptions MODEL.pth 0.25 OUTDIR --skip 100 --data-dir DATA

Each corruption is a split of the dataset holding the five severities as equal consecutive
blocks (CIFAR-10-C's layout); row indices in the files are those of the whole corruption file.
``--sequential`` certifies sequentially, as ``catrs certify --sequential`` does: mAcc stays
comparable with exact CERTIFY's, mACR does not (a stopped example's radius may be smaller).
Each TSV is resumable like ``catrs certify`` (and records its run the same way, in
``<corruption>.tsv.provenance.json``); ``catrs analyze --corruptions OUTDIR`` summarises.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from catrs_plugin.cli._common import (
    add_data_arguments,
    add_device_argument,
    batch_size_argument,
    for_argument,
    positive_int,
    resolve_device,
)
from catrs_plugin.cli._config import add_config_arguments, in_folder
from catrs_plugin.cli.certify import add_sequential_arguments, sequential_options
from catrs_plugin.utils.defaults import AMP_NAMES

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "certify-corruptions",
        help="run CERTIFY over CIFAR-10-C: one TSV per corruption (resumable)",
        description="Certify every --skip-th row of each chosen corruption at the chosen severities.",
    )
    parser.add_argument("base_classifier", help="checkpoint of the base classifier (ours or the reference code's)")
    parser.add_argument("sigma", type=float, help="noise level")
    parser.add_argument("outdir", help="folder for <corruption>.tsv; existing files are continued")
    parser.add_argument("--dataset", default="cifar10c", help="corruption dataset; its splits are the corruptions "
                                                              "(default: cifar10c)")
    parser.add_argument("--corruptions", nargs="+", default=None, metavar="NAME",
                        help="corruptions to certify (default: all 15)")
    parser.add_argument("--severities", nargs="+", type=int, default=None, metavar="S",
                        help="severities 1..5 to certify (default: all)")
    parser.add_argument("--skip", type=positive_int, default=100,
                        help="certify every skip-th row (default: 100, as the paper)")
    parser.add_argument("--max", type=int, default=-1, help="stop before this row index (default: -1, all)")
    parser.add_argument("--N0", type=positive_int, default=100, help="selection samples (default: 100)")
    parser.add_argument("--N", type=positive_int, default=100_000, help="estimation samples (default: 100000)")
    parser.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
    parser.add_argument("--batch", type=batch_size_argument, default="auto",
                        help="noisy samples per forward batch, or auto (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-example noise streams (default: 0)")
    parser.add_argument("--amp", choices=AMP_NAMES, default=None,
                        help="run the classifier under autocast in this precision (default: fp32)")
    add_sequential_arguments(parser)
    parser.add_argument("--restart", action="store_true", help="overwrite existing TSVs instead of continuing them")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(parser)
    add_data_arguments(parser)
    add_config_arguments(parser, in_folder("outdir"))
    parser.set_defaults(func=run)


def severity_rows(count: int, severities: list[int], skip: int, max_index: int = -1) -> np.ndarray:
    """Every ``skip``-th row index below ``count`` (and ``max_index``) whose severity is chosen.

    Row ``i`` of a corruption file with ``count`` rows has severity ``i // (count / 5) + 1``.
    """
    import numpy as np

    from catrs_plugin.certify.files import select_indices
    from catrs_plugin.results.corruptions import SEVERITIES

    if not severities or any(s not in SEVERITIES for s in severities):
        raise ValueError(f"--severities must lie in 1..5, got {severities}")
    if count % len(SEVERITIES):
        raise ValueError(f"a corruption split must hold 5 equal severity blocks, got {count} rows")
    rows = select_indices(count, skip, max_index)
    return rows[np.isin(rows // (count // len(SEVERITIES)) + 1, severities)]


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.certify.files import certify_to_file
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.results.corruptions import SEVERITIES
    from catrs_plugin.train.checkpoint import load_checkpoint
    from catrs_plugin.train.loop import AMP_DTYPES
    from catrs_plugin.utils import provenance
    from catrs_plugin.utils.validation import check_output_dir, check_sigma

    sequential = sequential_options(args)
    sigma = check_sigma(args.sigma)
    spec = get_registry().dataset(args.dataset)
    corruptions = args.corruptions or list(spec.splits)
    unknown = sorted(set(corruptions) - set(spec.splits))
    if unknown:
        raise ValueError(f"unknown corruptions {unknown} for {spec.name}; valid: {', '.join(sorted(spec.splits))}")
    outdir = check_output_dir(args.outdir, "outdir")
    device = resolve_device(args.device)
    with for_argument("base_classifier"):
        model = load_checkpoint(args.base_classifier, map_location=device, dataset=spec.name)
    digest = provenance.weights_digest(model)  # once, not once per corruption
    for corruption in corruptions:
        with for_argument("--data-dir"):
            x, y = spec.load(corruption, data_dir=args.data_dir)
        rows = severity_rows(len(x), args.severities or list(SEVERITIES), args.skip, args.max)
        outfile = outdir / f"{corruption}.tsv"
        written = certify_to_file(
            model, spec.num_classes, sigma, x, y, outfile, rows,
            n0=args.N0, n=args.N, alpha=args.alpha, batch_size=args.batch, seed=args.seed,
            autocast_dtype=AMP_DTYPES.get(args.amp), resume=not args.restart, progress=not args.quiet,
            settings={"model": digest, "dataset": spec.name, "split": corruption}, **sequential,
        )
        print(f"{corruption}: wrote {written} rows to {outfile} ({len(rows) - written} already done)")
    return 0
