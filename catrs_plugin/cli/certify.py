"""``catrs certify`` and ``catrs predict``: the reference ``certify.py`` / ``predict.py`` arguments.

Rerunning an interrupted command continues after the last complete row of OUTFILE, provided
the checkpoint's weights, the data, the selected examples and every setting are those recorded
in ``OUTFILE.provenance.json``; otherwise it stops and names what differs. Under ``torchrun``,
each rank writes every world-th example to ``OUTFILE.rank{r}`` and rank 0 merges the shards
into OUTFILE (see :mod:`catrs_plugin.certify.distributed`).

``catrs certify --sequential [--radii 0,0.25,...] [--alpha-sequence A]`` runs sequential
CERTIFY (:mod:`catrs_plugin.certify.sequential`): each example stops as soon as every radius of
``--radii`` is decided, with CERTIFY's guarantee; the TSV gets a ``samples`` column.
"""

from __future__ import annotations

import argparse

from catrs_plugin.cli._common import (
    add_data_arguments,
    add_device_argument,
    batch_size_argument,
    for_argument,
    load_split,
    positive_int,
    resolve_device,
)
from catrs_plugin.cli._config import add_config_arguments, beside
from catrs_plugin.utils.defaults import AMP_NAMES, SEQUENCE_SHARE


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, helper in (("certify", "CERTIFY"), ("predict", "PREDICT")):
        parser = subparsers.add_parser(
            name,
            help=f"run Cohen et al.'s {helper} over a dataset split into a Cohen-format TSV (resumable)",
            description=f"Run {helper} (Cohen et al., 2019) on every --skip-th example of a split.",
        )
        parser.add_argument("dataset", help="registered dataset name, e.g. digits or cifar10")
        parser.add_argument("base_classifier", help="checkpoint of the base classifier (ours or the reference code's)")
        parser.add_argument("sigma", type=float, help="noise level")
        parser.add_argument("outfile", help="output TSV; an existing file of the same run is continued, not "
                                            "overwritten (OUTFILE.provenance.json records the run)")
        parser.add_argument("--batch", type=batch_size_argument, default="auto",
                            help="noisy samples per forward batch, or auto: from free GPU memory, "
                                 "1000 on the CPU (default: auto; results do not depend on it)")
        parser.add_argument("--skip", type=positive_int, default=1, help="certify every skip-th example (default: 1)")
        parser.add_argument("--max", type=int, default=-1, help="stop before this example index (default: -1, all)")
        parser.add_argument("--split", default="test", help="dataset split (default: test)")
        if name == "certify":
            parser.add_argument("--N0", type=positive_int, default=100, help="selection samples (default: 100)")
        parser.add_argument("--N", type=positive_int, default=100_000, help="estimation samples (default: 100000)")
        parser.add_argument("--alpha", type=float, default=0.001, help="failure probability (default: 0.001)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the per-example noise streams (default: 0)")
        add_fast_argument(parser)
        if name == "certify":
            add_sequential_arguments(parser)
        parser.add_argument("--amp", choices=AMP_NAMES, default=None,
                            help="run the classifier under autocast in this precision (default: fp32; with "
                                 "--fast: bf16)")
        parser.add_argument("--channels-last", action="store_true",
                            help="channels_last memory format (faster convolutions on recent GPUs)")
        parser.add_argument("--compile", default=None, metavar="MODE",
                            choices=("default", "reduce-overhead", "max-autotune"),
                            help="run the classifier through torch.compile in this mode (default: off; not "
                                 "with --fast)")
        parser.add_argument("--restart", action="store_true", help="overwrite OUTFILE instead of continuing it")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        add_device_argument(parser)
        add_data_arguments(parser)
        add_config_arguments(parser, beside("outfile"))
        parser.set_defaults(func=run_certify if name == "certify" else run_predict)


def add_fast_argument(parser: argparse.ArgumentParser) -> None:
    """``--fast``: the fast certification path of :class:`~catrs_plugin.certify.smoothing.Smooth`."""
    parser.add_argument("--fast", action="store_true",
                        help="fast path: bf16, batch norm folded into the convolutions, channels_last, "
                             "torch.compile (once per model and shape; its time is printed), CUDA graphs on CUDA; "
                             "not bit-exact (see docs/benchmarks.rst for the agreement)")


def add_sequential_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sequential``, ``--radii`` and ``--alpha-sequence``: sequential CERTIFY (see :func:`sequential_options`)."""
    parser.add_argument("--sequential", action="store_true",
                        help="sequential CERTIFY: stop each example as soon as every radius of --radii is decided "
                             "(same guarantee; certified accuracy at --radii is comparable with CERTIFY's, ACR is "
                             "not); examples whose selected class is not the label stop after the selection")
    parser.add_argument("--radii", type=radii_argument, default=None, metavar="R[,R...]",
                        help="with --sequential: the radii to decide, e.g. 0,0.25,0.5 (default: those of "
                             "`catrs analyze`'s table, 0 to 2 in steps of 0.25; 0 is always decided)")
    parser.add_argument("--alpha-sequence", type=float, default=None, metavar="A",
                        help="with --sequential: the confidence sequence's share of --alpha, in (0, alpha); "
                             f"the exact Clopper-Pearson fallback at N gets the rest (default: {SEQUENCE_SHARE:g} "
                             "x alpha)")


def radii_argument(text: str) -> tuple[float, ...]:
    """argparse type of ``--radii``: comma-separated numbers >= 0."""
    from catrs_plugin.utils.validation import parse_numbers

    try:
        values = tuple(parse_numbers(text, "--radii"))
    except ValueError:
        values = ()
    if not values or any(not (value >= 0 and value != float("inf")) for value in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated radii >= 0, e.g. 0,0.25,0.5; got {text!r}")
    return values


def sequential_options(args: argparse.Namespace) -> dict:
    """``certify_to_file``'s sequential keywords from the command line (refuses ``--radii`` or
    ``--alpha-sequence`` without ``--sequential``)."""
    from catrs_plugin.certify.sequential import DEFAULT_RADII

    if not args.sequential:
        for option, value in (("--radii", args.radii), ("--alpha-sequence", args.alpha_sequence)):
            if value is not None:
                raise ValueError(f"{option} needs --sequential (it only applies to sequential CERTIFY)")
        return {}
    alpha = getattr(args, "alpha", None)  # `catrs compare` checks against its budget's alpha itself
    if args.alpha_sequence is not None and alpha is not None and not 0 < args.alpha_sequence < alpha:
        raise ValueError(f"--alpha-sequence must lie in (0, --alpha) = (0, {alpha:g}), got {args.alpha_sequence:g}")
    return {"sequential": True, "radii": DEFAULT_RADII if args.radii is None else args.radii,
            "alpha_sequence": args.alpha_sequence}


def _prepare(args: argparse.Namespace):
    from catrs_plugin.certify.distributed import SHARD_TIMEOUT, init_from_env
    from catrs_plugin.certify.fast_inference import compilation_messages_on_stderr
    from catrs_plugin.certify.files import select_indices
    from catrs_plugin.train.checkpoint import load_checkpoint
    from catrs_plugin.utils.provenance import indices_record
    from catrs_plugin.utils.validation import check_output_file, check_sigma

    sigma = check_sigma(args.sigma)
    check_output_file(args.outfile, "outfile")
    if args.fast and args.compile:
        raise ValueError("pass either --fast or --compile, not both (--fast compiles in its own way)")
    if args.fast or args.compile:
        args.held_outputs.enter_context(compilation_messages_on_stderr())
    device = init_from_env(resolve_device(args.device), backend="gloo", timeout=SHARD_TIMEOUT)
    spec, x, y = load_split(args.dataset, args.split, args.data_dir)
    with for_argument("base_classifier"):
        model = load_checkpoint(args.base_classifier, map_location=device, dataset=args.dataset)
    indices = select_indices(len(x), args.skip, args.max)
    # Recorded with the rows; a shard of a distributed run records the selection of the whole run.
    settings = {"dataset": spec.name, "split": args.split, "indices": indices_record(indices)}
    return sigma, spec, model, x, y, indices, settings


def run_certify(args: argparse.Namespace) -> int:
    from catrs_plugin.certify.distributed import sharded_output
    from catrs_plugin.certify.files import certify_to_file
    from catrs_plugin.train.loop import AMP_DTYPES

    sequential = sequential_options(args)
    sigma, spec, model, x, y, indices, settings = _prepare(args)
    with sharded_output(args.outfile, indices) as (outfile, mine):
        written = certify_to_file(
            model, spec.num_classes, sigma, x, y, outfile, mine,
            n0=args.N0, n=args.N, alpha=args.alpha, batch_size=args.batch, seed=args.seed, fast=args.fast,
            autocast_dtype=AMP_DTYPES.get(args.amp), channels_last=args.channels_last, compile_mode=args.compile,
            resume=not args.restart, progress=not args.quiet, settings=settings, **sequential,
        )
        print(f"wrote {written} rows to {outfile} ({len(mine) - written} already done)")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    from catrs_plugin.certify.distributed import sharded_output
    from catrs_plugin.certify.files import predict_to_file
    from catrs_plugin.train.loop import AMP_DTYPES

    sigma, spec, model, x, y, indices, settings = _prepare(args)
    with sharded_output(args.outfile, indices) as (outfile, mine):
        written = predict_to_file(
            model, spec.num_classes, sigma, x, y, outfile, mine,
            n=args.N, alpha=args.alpha, batch_size=args.batch, seed=args.seed, fast=args.fast,
            autocast_dtype=AMP_DTYPES.get(args.amp), channels_last=args.channels_last, compile_mode=args.compile,
            resume=not args.restart, progress=not args.quiet, settings=settings,
        )
        print(f"wrote {written} rows to {outfile} ({len(mine) - written} already done)")
    return 0
