"""``catrs demo``: the whole CAT-RS pipeline on the embedded digits data, in minutes on a CPU.

1. train a Gaussian teacher at sigma = 0.25 and compute its smoothed predictions on the
   training split (the soft labels);
2. train Gaussian and CAT-RS students at ``--sigma`` (at 0.25 the Gaussian student *is* the
   teacher: same method, data order, seed and budget);
3. certify the held-out split with CERTIFY, print the paper-style table, and write one
   Cohen-format TSV per method and a plot of certified accuracy against radius.

Each model's clean and noisy accuracy on the held-out split is printed as soon as it is trained,
and each method's ACR and certified accuracy as soon as it is certified; every epoch prints one
line (see :func:`catrs_plugin.train.loop.train`).

Every step is resumable: rerunning with the same ``--output`` reuses finished checkpoints,
soft labels and result rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from catrs_plugin.cli._common import (
    add_device_argument,
    add_format_argument,
    claim_output,
    resolve_device,
    say,
    table_style,
)
from catrs_plugin.cli._config import add_config_arguments, in_folder

if TYPE_CHECKING:
    import numpy as np
    import torch

TEACHER_SIGMA = 0.25


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a teacher, Gaussian and CAT-RS students on the embedded digits data, certify, report",
        description="CAT-RS end to end on scikit-learn's digits (ships offline with scikit-learn).",
    )
    parser.add_argument("--output", default="demo-output", help="directory for checkpoints, TSVs, plot (default: demo-output)")
    parser.add_argument("--sigma", type=float, default=0.25, help="students' noise level (default: 0.25)")
    parser.add_argument("--epochs", type=int, default=80, help="epochs per model (default: 80)")
    parser.add_argument("--batch", type=int, default=256, help="training batch size (default: 256, as in the paper)")
    parser.add_argument("--soft-samples", type=int, default=1000,
                        help="noise samples per training example for the soft labels (default: 1000; paper: 10000)")
    parser.add_argument("--N0", type=int, default=100, help="CERTIFY selection samples (default: 100)")
    parser.add_argument("--N", type=int, default=10_000, help="CERTIFY estimation samples (default: 10000)")
    parser.add_argument("--alpha", type=float, default=0.001, help="CERTIFY failure probability (default: 0.001)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise (default: 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_format_argument(parser, default="markdown")
    add_device_argument(parser)
    add_config_arguments(parser, in_folder("output"))
    parser.set_defaults(func=run)


def _train(name, method_name, sigma, soft, args, device, out: Path) -> torch.nn.Module:
    import torch

    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.checkpoint import load_checkpoint, read_checkpoint
    from catrs_plugin.train.data import training_data
    from catrs_plugin.train.loop import TrainConfig, train

    registry = get_registry()
    method = registry.method(method_name)
    preset = "paper" if sigma in method.presets.get("paper", {}) else None
    hyperparameters = method.hyperparameters(sigma, preset)
    checkpoint = out / f"{name}.pt"
    torch.manual_seed(args.seed)
    model = registry.create_model("digits_cnn", "digits").to(device)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=0.1, lr_step_size=max(1, args.epochs // 2),
                         seed=args.seed, checkpoint=str(checkpoint), progress=not args.quiet)
    if not checkpoint.exists() or int(read_checkpoint(checkpoint)["epoch"]) < config.epochs:
        say(f"[train] {name}: {method.name} at sigma={sigma}" + (f" {hyperparameters}" if hyperparameters else ""))
    train(model, method, hyperparameters, sigma, training_data(registry.dataset("digits"), soft_labels=soft), config,
          checkpoint_fields={"arch": "digits_cnn", "dataset": "digits"})
    return load_checkpoint(checkpoint, map_location=device)


def _report_accuracy(name: str, model: torch.nn.Module, x: np.ndarray, y: np.ndarray, sigma: float, seed: int) -> None:
    """Print the model's clean accuracy and its accuracy under one Gaussian draw per input at ``sigma``."""
    from catrs_plugin.compare.collapse import noisy_predictions

    clean = (noisy_predictions(model, x, 0.0, seed) == y).mean()
    noisy = (noisy_predictions(model, x, sigma, seed) == y).mean()
    say(f"[accuracy] {name}: clean {100 * clean:.1f} %, noisy {100 * noisy:.1f} % (one draw of sigma={sigma} per "
        f"image) on the {len(x)} held-out images")


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.certify.files import certify_to_file
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.results.metrics import default_radii, summarize
    from catrs_plugin.results.plots import plot_certified_accuracy
    from catrs_plugin.results.report import format_table, to_json
    from catrs_plugin.results.tsv import read_certify_results
    from catrs_plugin.train.data import training_soft_labels_to_file
    from catrs_plugin.train.soft_labels import read_soft_labels
    from catrs_plugin.utils.atomic import write_atomic
    from catrs_plugin.utils.validation import check_output_dir, check_sigma

    sigma = check_sigma(args.sigma)
    device = resolve_device(args.device)
    out = claim_output(args, check_output_dir(args.output, "--output"), "--output")
    out.mkdir(parents=True, exist_ok=True)
    spec = get_registry().dataset("digits")
    x_train, y_train = spec.load("train")
    x_test, y_test = spec.load("test")
    say(f"digits: {len(x_train)} training and {len(x_test)} held-out 8x8 images, device {device}")

    teacher = _train("gaussian_0.25", "gaussian", TEACHER_SIGMA, None, args, device, out)
    _report_accuracy("gaussian_0.25 (the teacher)", teacher, x_test, y_test, TEACHER_SIGMA, args.seed)
    soft_path = out / "soft_labels.npy"
    computed = training_soft_labels_to_file(teacher, spec, TEACHER_SIGMA, args.soft_samples, soft_path, args.seed,
                                            progress=not args.quiet)
    if computed:
        say(f"[soft labels] the teacher's smoothed predictions, {args.soft_samples} samples per training image, "
            f"in {soft_path.name}")
    soft = read_soft_labels(soft_path, len(x_train), spec.num_classes)

    models = {"gaussian": teacher}
    if sigma != TEACHER_SIGMA:
        models["gaussian"] = _train(f"gaussian_{sigma}", "gaussian", sigma, None, args, device, out)
        _report_accuracy(f"gaussian_{sigma}", models["gaussian"], x_test, y_test, sigma, args.seed)
    models["catrs"] = _train(f"catrs_{sigma}", "catrs", sigma, soft, args, device, out)
    _report_accuracy(f"catrs_{sigma}", models["catrs"], x_test, y_test, sigma, args.seed)
    summaries, curves = [], {}
    radii = default_radii(1.0)
    for name, model in models.items():
        path = out / f"{name}_noise_{sigma}.tsv"
        certify_to_file(model, spec.num_classes, sigma, x_test, y_test, path, n0=args.N0, n=args.N,
                        alpha=args.alpha, batch_size="auto", seed=args.seed,
                        progress=not args.quiet and f"certify {name}")
        results = read_certify_results(path)
        curves[name] = results
        summary = {"method": name, **summarize(results, radii)}
        summaries.append(summary)
        accuracy = ", ".join(f"{100 * summary['certified_accuracy'][key]:.1f} % at {float(key):g}"
                             for key in summary["certified_accuracy"])
        say(f"[certified] {name}: ACR {summary['acr']:.3f}; certified accuracy {accuracy} (CERTIFY N0={args.N0}, "
            f"N={args.N}, alpha={args.alpha})")

    plot_path = out / f"certified_accuracy_noise_{sigma}.png"
    plot_certified_accuracy(curves, plot_path, sigma=sigma, n=args.N, alpha=args.alpha, n0=args.N0)
    write_atomic(out / "summary.json", to_json(summaries))
    say("")
    say(format_table(summaries, radii, label_key="method", **table_style(args.format)))
    say(f"\nACR and certified accuracy (%) at sigma={sigma}; results, checkpoints and {plot_path.name} in {out}/")
    return 0
