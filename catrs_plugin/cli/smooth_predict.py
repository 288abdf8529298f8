"""``catrs smooth-predict``: soft labels for CAT-RS, the smoothed predictions of a checkpoint.

Writes the class frequencies of ``f(x + N(0, sigma^2 I))`` over ``N`` samples for every example
of a split (default: the training set, ``N = 10,000``, ``sigma = 0.25`` as in the paper) as an
``.npy`` of shape ``(examples, classes)``, which ``catrs train --soft-labels FILE`` takes. The
reference code's ``smooth_prediction.py --split train`` plays this role, and as there each
training example is seen once through the dataset's training augmentation (one random crop and
flip per CIFAR image, :func:`catrs_plugin.train.data.training_soft_labels`); ``--views as-loaded``
uses the images as loaded instead. Other splits are never augmented.

Resumable (:func:`catrs_plugin.train.soft_labels.soft_labels_to_file`): finished rows are appended to
``OUTFILE.partial``; a rerun with the same teacher, data and settings continues after the last
complete row, and the finished ``.npy`` replaces it at the end. Noise is seeded per example, so a
resumed run writes the same numbers as an uninterrupted one. What produced the file is recorded
in ``OUTFILE.provenance.json``; a rerun reuses a finished file only when it matches.
"""

from __future__ import annotations

import argparse

import numpy as np

from catrs_plugin.cli._common import (
    add_data_arguments,
    add_device_argument,
    for_argument,
    load_split,
    positive_int,
    resolve_device,
)
from catrs_plugin.cli._config import add_config_arguments, beside
from catrs_plugin.utils.defaults import AMP_NAMES, DEFAULT_WORKERS

#: ``--views`` choices: the training augmentation's one view per image (the reference's way), or the images as loaded.
VIEWS = ("augmented", "as-loaded")


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
    parser.add_argument("--views", choices=VIEWS, default=None,
                        help="the training split through one draw of the dataset's training augmentation (augmented: "
                        "the default, as the reference computes CAT-RS's soft labels) or as loaded; other splits are "
                        "always as loaded")
    parser.add_argument("--batch", type=positive_int, default=1000,
                        help="noisy samples per forward batch (default: 1000)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the per-example noise streams and of the augmented views (default: 0)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"data-loading worker processes for file-based data, ImageNet (default: {DEFAULT_WORKERS})")
    parser.add_argument("--amp", choices=AMP_NAMES, default=None,
                        help="run the classifier under autocast in this precision (default: fp32)")
    parser.add_argument("--restart", action="store_true", help="compute the soft labels afresh, replacing OUTFILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_argument(parser)
    add_data_arguments(parser)
    add_config_arguments(parser, beside("outfile"))
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.checkpoint import load_checkpoint
    from catrs_plugin.train.data import training_soft_labels_to_file
    from catrs_plugin.train.loop import AMP_DTYPES
    from catrs_plugin.train.soft_labels import soft_labels_to_file
    from catrs_plugin.utils.validation import check_output_file, check_sigma

    sigma = check_sigma(args.sigma)
    outfile = check_output_file(args.outfile, "outfile")
    views = args.views or ("augmented" if args.split == "train" else "as-loaded")
    if views == "augmented" and args.split != "train":
        raise ValueError(f"--views augmented applies to the training split only (the reference never augments "
                         f"--split {args.split}); leave --views out")
    device = resolve_device(args.device)
    # The training split of file-based data (ImageNet) is read through its training dataset, not loaded.
    spec, x, _ = (get_registry().dataset(args.dataset), None, None) if views == "augmented" else \
        load_split(args.dataset, args.split, args.data_dir)
    with for_argument("base_classifier"):
        model = load_checkpoint(args.base_classifier, map_location=device, dataset=args.dataset)
    options = dict(batch_size=args.batch, seed=args.seed, autocast_dtype=AMP_DTYPES.get(args.amp),
                   resume=not args.restart, progress=not args.quiet)
    if views == "augmented":
        written = training_soft_labels_to_file(model, spec, sigma, args.N, outfile, data_dir=args.data_dir,
                                               workers=args.workers, **options)
    else:
        written = soft_labels_to_file(model, x, spec.num_classes, sigma, outfile, n=args.N,
                                      settings={"dataset": spec.name, "split": args.split, "views": "as loaded"},
                                      **options)
    if written == 0:
        print(f"{outfile} already holds these soft labels (same teacher, data and settings); "
              "pass --restart to compute them again")
    else:
        rows = len(np.load(outfile, mmap_mode="r"))
        print(f"wrote {outfile}: {rows} x {spec.num_classes} soft labels of the {views} images "
              f"({written} rows computed now)")
    return 0
