"""``catrs train``: train one model with one registered method, resumably.

The checkpoint is rewritten after every epoch; rerunning the command resumes after the last
finished epoch when the checkpoint records the same method, hyper-parameters, data and
optimisation settings, and refuses (naming what differs) otherwise.
"""

from __future__ import annotations

import argparse
import ast
from typing import TYPE_CHECKING, Any

from catrs_plugin.cli._common import (
    add_data_arguments,
    add_device_argument,
    claim_output,
    for_argument,
    positive_int,
    resolve_device,
)
from catrs_plugin.cli._config import add_config_arguments, beside
from catrs_plugin.utils.defaults import AMP_NAMES, DEFAULT_WORKERS

if TYPE_CHECKING:
    from catrs_plugin.methods.base import Method

#: Options that set a TrainConfig field (option attribute -> field); unset, the preset's value or the default applies.
TRAIN_OPTIONS = {"epochs": "epochs", "batch": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                 "lr_step_size": "lr_step_size", "gamma": "gamma", "lr_drop": "lr_drop"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a base classifier with a registered method (gaussian, catrs, ...)",
        description="Train with a registered method; the checkpoint is rewritten every epoch and resumed.",
    )
    parser.add_argument("--dataset", required=True, help="registered dataset, e.g. digits")
    parser.add_argument("--method", required=True, help="registered method, e.g. gaussian or catrs")
    parser.add_argument("--sigma", type=float, required=True, help="training noise level")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint file (written each epoch; resumed if present and of the same run)")
    parser.add_argument("--arch", default=None, help="architecture (default: the dataset's default)")
    parser.add_argument("--preset", default=None,
                        help="preset of the method, e.g. paper; a preset that carries optimiser settings (catrs and "
                        "gaussian imagenet and mnist, macer original) sets the defaults of the options below")
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE",
                        help="override one hyper-parameter, e.g. --hp lbd=2.0 (repeatable)")
    parser.add_argument("--soft-labels", default=None, help=".npy of shape (train examples, classes) for CAT-RS")
    parser.add_argument("--teacher", default=None,
                        help="checkpoint whose smoothed predictions become the soft labels (instead of --soft-labels)")
    parser.add_argument("--teacher-sigma", type=float, default=0.25, help="teacher noise level (default: 0.25)")
    parser.add_argument("--teacher-samples", type=positive_int, default=10_000,
                        help="samples per example (default: 10000)")
    parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: 150)")
    parser.add_argument("--batch", type=positive_int, default=None, help="loader batch size (default: 256)")
    parser.add_argument("--lr", type=float, default=None, help="initial learning rate (default: 0.1)")
    parser.add_argument("--weight-decay", type=float, default=None, help="SGD weight decay (default: 1e-4)")
    parser.add_argument("--lr-step-size", type=positive_int, default=None,
                        help="epochs between lr decays, stepped as the reference's scheduler.step(epoch) (default: 50)")
    parser.add_argument("--gamma", type=float, default=None, help="lr decay factor (default: 0.1)")
    parser.add_argument("--lr-drop", type=int, default=None, help="epoch of one extra lr decay (CAT-RS ImageNet recipe)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"data-loading worker processes for file-based data, ImageNet (default: {DEFAULT_WORKERS})")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order and noise (default: 0)")
    parser.add_argument("--amp", choices=AMP_NAMES, default=None,
                        help="mixed precision (fp16 adds a gradient scaler; default: fp32)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    parser.add_argument("--restart", action="store_true",
                        help="train from scratch, replacing CHECKPOINT instead of resuming it")
    parser.add_argument("--tensorboard", default=None, metavar="DIR",
                        help="also write each epoch's loss, accuracy, learning rate and seconds as TensorBoard "
                             "scalars into DIR (needs pip install 'catrs-plugin[tensorboard]')")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device_argument(parser)
    add_data_arguments(parser)
    add_config_arguments(parser, beside("checkpoint"))
    parser.set_defaults(func=run)


def parse_overrides(pairs: list[str], method: Method) -> dict[str, Any]:
    """``["lbd=2.0", "confidence_mask=True"]`` -> ``{"lbd": 2.0, "confidence_mask": True}``, each value
    checked against the method's declared type and range.

    Raises
    ------
    ValueError
        Naming ``--hp NAME`` and the accepted values, for an unknown name or a bad value.
    """
    values: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"--hp takes NAME=VALUE, got {pair!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = text
        values[name] = method.check_hyperparameter(name, value, label=f"--hp {name}")
    return values


def run(args: argparse.Namespace) -> int:
    import torch

    from catrs_plugin.certify.distributed import init_from_env
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.checkpoint import load_checkpoint
    from catrs_plugin.train.data import training_data, training_soft_labels
    from catrs_plugin.train.loop import TrainConfig, train
    from catrs_plugin.utils.reading import load_npy
    from catrs_plugin.utils.validation import check_output_file, check_sigma

    registry = get_registry()
    method = registry.method(args.method)
    sigma = check_sigma(args.sigma, "--sigma")
    check_sigma(args.teacher_sigma, "--teacher-sigma")
    hyperparameters = method.hyperparameters(sigma, args.preset, **parse_overrides(args.hp, method))
    checkpoint = check_output_file(args.checkpoint, "--checkpoint")
    device = init_from_env(resolve_device(args.device))
    claim_output(args, checkpoint, "--checkpoint")  # before --restart removes it, and before any work
    spec = registry.dataset(args.dataset)
    given = {field: getattr(args, option) for option, field in TRAIN_OPTIONS.items() if getattr(args, option) is not None}
    config = TrainConfig(**{**method.train_settings(args.preset), **given}, seed=args.seed,
                         checkpoint=str(checkpoint), progress=not args.quiet, amp=args.amp,
                         channels_last=args.channels_last, tensorboard=args.tensorboard)
    config.validate()
    method.check_batch(config.batch_size, hyperparameters, "--batch")
    soft, soft_name = None, "soft_labels"
    if args.soft_labels:
        path = args.soft_labels
        soft = load_npy(path, "--soft-labels")
        soft_name = f"--soft-labels {str(path)!r}"
    elif args.teacher:
        with for_argument("--teacher"):
            teacher = load_checkpoint(args.teacher, map_location=device, dataset=spec.name)
        soft = training_soft_labels(teacher, spec, args.teacher_sigma, args.teacher_samples, args.seed, args.data_dir,
                                    workers=args.workers, progress=not args.quiet)
    elif method.needs_soft_labels:
        raise ValueError(
            f"method {method.name!r} needs soft labels: pass --soft-labels FILE.npy (from `catrs smooth-predict`) "
            "or --teacher CHECKPOINT (a Gaussian sigma=0.25 model, as in the paper)"
        )
    arch = args.arch or spec.default_arch
    torch.manual_seed(args.seed)
    model = registry.create_model(arch, spec.name).to(device)
    data = training_data(spec, args.data_dir, soft_labels=soft, soft_labels_name=soft_name, batch_size=config.batch_size,
                         workers=args.workers)
    if args.restart:
        checkpoint.unlink(missing_ok=True)
    history = train(model, method, hyperparameters, sigma, data, config,
                    checkpoint_fields={"arch": arch, "dataset": spec.name})
    last = history[-1] if history else {"epoch": config.epochs, "loss": float("nan")}
    print(f"{method.name}: epoch {last['epoch']}, loss {last['loss']:.4f}, checkpoint {checkpoint}")
    return 0
