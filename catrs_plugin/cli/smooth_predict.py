"""``catrs smooth-predict``: soft labels for CAT-RS, the smoothed predictions of a checkpoint.

Writes the class frequencies of ``f(x + N(0, sigma^2 I))`` over ``N`` samples for every example
of a split (default: the training set, ``N = 10,000``, ``sigma = 0.25`` as in the paper) as an
``.npy`` of shape ``(examples, classes)``, which ``catrs train --soft-labels FILE`` takes. The
reference code's ``smooth_prediction.py`` plays this role.

Resumable (:func:`catrs_plugin.train.soft_labels.soft_labels_to_file`): finished rows are appended to
``OUTFILE.partial``; a rerun with the same teacher, data and settings continues after the last
complete row, and the finished ``.npy`` replaces it at the end. Noise is seeded per example, so a
resumed run writes the same numbers as an uninterrupted one. What produced the file is recorded
in ``OUTFILE.provenance.json``; a rerun reuses a finished file only when it matches.
"""

from __future__ import annotations

import argparse

from catrs_plugin.cli._common import (
    add_data_arguments,
    add_device_argument,
    for_argument,
    load_split,
    positive_int,
    resolve_device,
)
from catrs_plugin.cli._config import add_config_arguments, beside
from catrs_plugin.utils.defaults import AMP_NAMES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "smooth-predict",
        help="smoothed class frequencies of a checkpoint over a split, as soft labels for CAT-RS (resumable)",
        description="Write the smoothed predictions (class frequencies over N noisy samples) of every example "
                    "of a split to an .npy of shape (examples, classes), for `catrs train --soft-labels`.",
    )
    parser.add_argument("dataset", help="registered dataset name, e.g. digits or cifar10")
    parser.add_argument("base_classifier", help="checkpoint (ours or the reference code's), e.g. Gaussian sigma=0.25")
    parser.add_argument("outfile", help="output .npy; a finished or unfinished run with the same teacher, data and "
                                        "settings is reused or continued")
    parser.add_argument("--sigma", type=float, default=0.25, help="noise level (default: 0.25, as in the paper)")
    parser.add_argument("--N", type=positive_int, default=10_000, help="noisy samples per example (default: 10000)")
    parser.add_argument("--split", default="train", help="dataset split (default: train)")
    parser.add_argument("--batch", type=positive_int, default=1000,
                        help="noisy samples per forward batch (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-example noise streams (default: 0)")
    parser.add_argument("--amp", choices=AMP_NAMES, default=None,
                        help="run the classifier under autocast in this precision (default: fp32)")
    parser.add_argument("--restart", action="store_true", help="compute the soft labels afresh, replacing OUTFILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser)
    add_data_arguments(parser)
    add_config_arguments(parser, beside("outfile"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.train.checkpoint import load_checkpoint
    from catrs_plugin.train.loop import AMP_DTYPES
    from catrs_plugin.train.soft_labels import soft_labels_to_file
    from catrs_plugin.utils.validation import check_output_file, check_sigma

    sigma = check_sigma(args.sigma)
    outfile = check_output_file(args.outfile, "outfile")
    device = resolve_device(args.device)
    spec, x, _ = load_split(args.dataset, args.split, args.data_dir)
    with for_argument("base_classifier"):
        model = load_checkpoint(args.base_classifier, map_location=device, dataset=args.dataset)
    written = soft_labels_to_file(
        model, x, spec.num_classes, sigma, outfile, n=args.N, batch_size=args.batch, seed=args.seed,
        settings={"dataset": spec.name, "split": args.split}, autocast_dtype=AMP_DTYPES.get(args.amp),
        resume=not args.restart, progress=not args.quiet,
    )
    if written == 0:
        print(f"{outfile} already holds these soft labels (same teacher, data and settings); "
              "pass --restart to compute them again")
    else:
        print(f"wrote {outfile}: {len(x)} x {spec.num_classes} soft labels ({written} rows computed now)")
    return 0
