"""``catrs compare``: train and certify several methods at several noise levels under identical settings."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from catrs_plugin.cli._common import add_data_arguments, batch_size_argument, resolve_device
from catrs_plugin.cli._config import add_config_arguments, in_folder
from catrs_plugin.cli.certify import add_fast_argument, add_sequential_arguments, sequential_options
from catrs_plugin.utils.defaults import DEFAULT_RUNS_PER_GPU, DEFAULT_WORKERS

#: The budget presets (the keys of :data:`catrs_plugin.compare.plan.BUDGETS`), with what each sets.
PRESETS = {
    "quick": "minutes on a CPU for the digits data, any dataset; the default",
    "paper": "the paper's CIFAR-10/100 recipe: 150 epochs, N=100000",
    "imagenet": "its ImageNet recipe",
    "mnist": "the reference's MNIST recipe: LeNet, lr 0.01",
}

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
#: Budget options that are training settings: given explicitly, they win over methods' presets.
PINNABLE = ("epochs", "batch_size", "lr", "lr_step_size")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="train and certify several methods at several noise levels with identical data, seeds and budget",
        description="Train (or reuse) each method at each noise level with the same data order, augmentation, "
        "initialisation, seeds and budget, certify all of them on the same test examples with the same settings, "
        "and write one Cohen-format TSV per run, summaries per noise level and for the whole table. Runs spread "
        "over every visible GPU (or go to Slurm with --slurm); rerunning resumes.",
    )
    parser.add_argument("--dataset", required=True, help="registered dataset, e.g. digits (see the docs)")
    parser.add_argument("--methods", default="all", help="'all' or comma-separated names (see `catrs methods`)")
    parser.add_argument("--sigma", required=True, metavar="SIGMA[,SIGMA...]",
                        help="noise levels of training and certification, e.g. 0.25 or 0.25,0.5,1.0")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                        help="budget and method presets: "
                             + "; ".join(f"{name} ({text})" for name, text in PRESETS.items()))
    parser.add_argument("--method-preset", action="append", default=[], metavar="METHOD=PRESET",
                        help="give one method another of its presets, e.g. macer=original (MACER's own recipe); "
                        "repeatable")
    parser.add_argument("--output", default="compare-output",
                        help="output directory; rerunning with it resumes (default: compare-output)")
    parser.add_argument("--arch", default=None, help="registered architecture (default: the dataset's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise (default: 0)")
    parser.add_argument("--attack-eps", default=None, metavar="EPS[,EPS...]",
                        help="also report each smoothed classifier's accuracy under ART's L2 PGD at these radii")
    parser.add_argument("--certify-batch", type=batch_size_argument, default="auto",
                        help="noisy samples per forward pass in certification: auto (default: sized from free "
                        "memory on CUDA, 1000 on the CPU) or a number")
    for option, help_text in BUDGET_OPTIONS.items():
        parser.add_argument(f"--{option.replace('_', '-')}", dest=f"budget_{option}", type=TYPES.get(option, int),
                            default=None, metavar=option.upper(), help=f"{help_text} (default: the preset's)")
    add_fast_argument(parser)
    add_sequential_arguments(parser)
    parser.add_argument("--certify-collapsed", action="store_true",
                        help="certify runs that count as collapsed too (their rows are marked) instead of reporting "
                        "them without numbers")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"data-loading worker processes for file-based data, ImageNet (default: {DEFAULT_WORKERS})")
    parser.add_argument("--device", default="auto",
                        help="auto (default: every visible GPU, else the CPU), cpu, cuda, cuda:N")
    parser.add_argument("--devices", default=None, metavar="DEVICE[,DEVICE...]",
                        help="spread the runs over these devices, e.g. cuda:0,cuda:1 (overrides --device)")
    parser.add_argument("--runs-per-device", type=int, default=None,
                        help=f"concurrent runs on each device (default: {DEFAULT_RUNS_PER_GPU} per GPU for in-memory "
                        "data, 1 for file-based data and on the CPU; not yet measured on a GPU, see the docs)")
    parser.add_argument("--slurm", action="store_true",
                        help="submit each run as a Slurm job through submitit (pip install 'catrs-plugin[slurm]')")
    parser.add_argument("--slurm-partition", default=None, help="Slurm partition")
    parser.add_argument("--slurm-time", type=int, default=24 * 60, help="time limit per job in minutes (default: 1440)")
    parser.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per job (default: 8)")
    parser.add_argument("--slurm-param", action="append", default=[], metavar="KEY=VALUE",
                        help="further submitit parameter, e.g. slurm_account=lab (repeatable)")
    parser.add_argument("--published", default=None, metavar="DIR",
                        help="put the published rows of the compared methods next to the measured ones, marked "
                        "published, from a folder laid out like the CAT-RS release (tests/data/catrs-official-certify)")
    parser.add_argument("--format", choices=("markdown", "latex"), default="markdown",
                        help="how the summary tables are printed: markdown (summary.md) or latex (summary.tex, a "
                             "booktabs tabular); both files are written either way (default: markdown)")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also write each run's per-epoch metrics as TensorBoard scalars into "
                             "DIR/noise_<sigma>/<method> (needs pip install 'catrs-plugin[tensorboard]')")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_arguments(parser)
    add_config_arguments(parser, in_folder("output"))
    parser.set_defaults(func=run)


def devices_from(args: argparse.Namespace) -> tuple[list[str], bool]:
    """The devices to use and whether the user named them (``--devices`` or a ``--device`` other than auto)."""
    import torch

    if args.devices:
        names = [name.strip() for name in args.devices.split(",") if name.strip()]
        explicit = True
    elif args.device != "auto":
        names, explicit = [args.device], True
    elif torch.cuda.is_available():
        names, explicit = [f"cuda:{i}" for i in range(torch.cuda.device_count())], False
    else:
        names, explicit = ["cpu"], False
    return [str(resolve_device(name, "--devices" if args.devices else "--device")) for name in names], explicit


def choose_runner(args: argparse.Namespace, file_based: bool):
    """InProcess, DevicePool or SubmititRunner from the command line (see :mod:`catrs_plugin.compare.runners`)."""
    from catrs_plugin.compare.runners import DevicePool, InProcess, SubmititRunner, slurm_executor

    if args.slurm:
        if any("=" not in pair for pair in args.slurm_param):
            raise ValueError(f"--slurm-param takes KEY=VALUE, e.g. slurm_account=lab; got {args.slurm_param}")
        extra = dict(pair.split("=", 1) for pair in args.slurm_param)
        return SubmititRunner(slurm_executor(Path(args.output) / "slurm", partition=args.slurm_partition,
                                             time_min=args.slurm_time, cpus=args.slurm_cpus, extra=extra))
    devices, explicit = devices_from(args)
    runs = args.runs_per_device
    if runs is None:
        on_gpu = all(device.startswith("cuda") for device in devices)
        runs = DEFAULT_RUNS_PER_GPU if on_gpu and not file_based and not (explicit and len(devices) == 1) else 1
    if len(devices) == 1 and runs == 1:
        return InProcess(devices[0])
    return DevicePool(devices, runs)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.certify.fast_inference import compilation_messages_on_stderr
    from catrs_plugin.compare.plan import BUDGETS, parse_floats, parse_method_presets, parse_methods
    from catrs_plugin.compare.run import run_comparison
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.utils.validation import check_output_dir

    registry = get_registry()
    sequential = sequential_options(args)
    methods = parse_methods(args.methods, registry)
    sigmas = parse_floats(args.sigma, "--sigma")
    overrides = {FIELDS.get(option, option): getattr(args, f"budget_{option}") for option in BUDGET_OPTIONS}
    given = {k: v for k, v in overrides.items() if v is not None}
    budget = replace(BUDGETS[args.preset], **given, pinned=tuple(sorted(set(given) & set(PINNABLE))))
    attack_eps = parse_floats(args.attack_eps, "--attack-eps") if args.attack_eps else ()
    check_output_dir(args.output, "--output")
    if args.fast:
        args.held_outputs.enter_context(compilation_messages_on_stderr())
    spec = registry.dataset(args.dataset)
    comparisons = run_comparison(
        args.dataset, methods, sigmas, args.output, args.preset, budget, arch=args.arch, data_dir=args.data_dir,
        seed=args.seed, runner=choose_runner(args, spec.train_dataset is not None),
        method_presets=parse_method_presets(args.method_preset, registry), certify_batch=args.certify_batch,
        attack_eps=attack_eps, workers=args.workers, fast=args.fast, progress=not args.quiet, sequential=sequential,
        labels={FIELDS.get(option, option): f"--{option.replace('_', '-')}" for option in BUDGET_OPTIONS},
        published=args.published, tensorboard=args.tensorboard, certify_collapsed=args.certify_collapsed,
    )
    name = "summary.tex" if args.format == "latex" else "summary.md"
    print()
    for comparison in comparisons:
        print((comparison.directory / name).read_text())
    if len(comparisons) > 1:
        print((Path(args.output) / name).read_text())
    print(f"results in {args.output}/ (summary.md, summary.tex and summary.csv; per noise level noise_<sigma>/ with "
          "summary.md, summary.tex, summary.csv, summary.json, certified_accuracy.png, p_lower_cdf.png)")
    return 0
