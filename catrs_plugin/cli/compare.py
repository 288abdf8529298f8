"""``catrs compare``: train and certify several methods under identical settings, side by side."""

from __future__ import annotations

import argparse
from dataclasses import replace

from catrs_plugin.cli._common import add_data_arguments, add_device_argument, batch_size_argument, resolve_device
from catrs_plugin.cli.certify import add_fast_argument
from catrs_plugin.fast_inference import log_compilation_to_stderr
from catrs_plugin.compare import BUDGETS, parse_floats, parse_methods, run_comparison
from catrs_plugin.registry import get_registry
from catrs_plugin.validation import check_output_dir

#: Command-line options that override a field of the preset's budget.
BUDGET_OPTIONS = {
    "epochs": "epochs per method",
    "batch": "training batch size",
    "lr": "initial learning rate",
    "lr_step_size": "epochs between learning-rate drops (x0.1)",
    "soft_samples": "noise samples per training example for CAT-RS's soft labels",
    "N0": "CERTIFY selection samples",
    "N": "CERTIFY estimation samples (and PREDICT samples on attacked examples)",
    "alpha": "failure probability",
    "skip": "certify every SKIP-th test example",
    "max": "certify test examples with index < MAX only",
    "attack_steps": "ART L2 PGD iterations",
    "attack_samples": "noise samples per gradient of the smoothed classifier in the attack",
    "train_examples": "train on the first TRAIN_EXAMPLES training examples only (smoke runs)",
}
FIELDS = {"batch": "batch_size", "N0": "n0", "N": "n", "max": "max_examples"}
TYPES = {"lr": float, "alpha": float}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train and certify several methods with identical data, seeds and budget; summary table and plot",
        description="Train (or reuse) each method with the same data order, initialisation, seeds and budget, "
        "certify all of them on the same test examples with the same settings, and write one Cohen-format TSV "
        "per method, summary.md/.csv/.json and certified_accuracy.png. Rerunning resumes.",
    )
    parser.add_argument("--dataset", required=True, help="registered dataset, e.g. digits (see the docs)")
    parser.add_argument("--methods", default="all", help="'all' or comma-separated names (see `catrs methods`)")
    parser.add_argument("--sigma", type=float, required=True, help="noise level of training and certification")
    parser.add_argument("--preset", choices=sorted(BUDGETS), default="quick",
                        help="budget and method presets: quick (default; minutes on a CPU for the digits data) or "
                        "paper (the paper's CIFAR-10 recipe: 150 epochs, N=100000)")
    parser.add_argument("--output", default="compare-output",
                        help="output directory; rerunning with it resumes (default: compare-output)")
    parser.add_argument("--arch", default=None, help="registered architecture (default: the dataset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise (default: 0)")
    parser.add_argument("--attack-eps", default=None, metavar="EPS[,EPS...]",
                        help="also report each smoothed classifier's accuracy under ART's L2 PGD at these radii")
    parser.add_argument("--certify-batch", type=batch_size_argument, default=None,
                        help="noisy samples per forward pass in certification: auto or a number "
                        "(default: auto on CUDA, 10000 on the CPU)")
    for option, help_text in BUDGET_OPTIONS.items():
        parser.add_argument(f"--{option.replace('_', '-')}", dest=f"budget_{option}", type=TYPES.get(option, int),
                            default=None, help=f"{help_text} (default: the preset's)")
    add_fast_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_arguments(parser)
    add_device_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    methods = parse_methods(args.methods, get_registry())
    overrides = {FIELDS.get(option, option): getattr(args, f"budget_{option}") for option in BUDGET_OPTIONS}
    budget = replace(BUDGETS[args.preset], **{k: v for k, v in overrides.items() if v is not None})
    attack_eps = parse_floats(args.attack_eps, "--attack-eps") if args.attack_eps else ()
    check_output_dir(args.output, "--output")
    if args.fast:
        log_compilation_to_stderr()
    comparison = run_comparison(
        args.dataset, methods, args.sigma, args.output, args.preset, budget, arch=args.arch, data_dir=args.data_dir,
        seed=args.seed, device=resolve_device(args.device), certify_batch=args.certify_batch, attack_eps=attack_eps,
        progress=not args.quiet, fast=args.fast,
    )
    print()
    print((comparison.directory / "summary.md").read_text())
    print(f"results in {comparison.directory}/ (summary.md, summary.csv, summary.json, certified_accuracy.png)")
    return 0
