"""Every command-line argument checked in one place, before a sub-command starts any work.

:func:`check_arguments` runs after parsing and before the sub-command: each option of a known
name is checked by :data:`CHECKS` (the same check whatever the sub-command), then the checks
that need the dataset: the noisy samples of a certification batch must fit in memory and an
``--arch`` must take the dataset's inputs. A value out of range is a :class:`ValueError` naming
the option as the user typed it and the accepted range, so ``--seed -1`` is refused before a
model is loaded or a file is created.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from catrs_plugin.cli._common import resolve_device
from catrs_plugin.utils.validation import (
    FLOAT32_MAX,
    check_alpha,
    check_batch_fits,
    check_count_or_all,
    check_forward,
    check_non_negative,
    check_positive_int,
    check_seed,
    check_sigma,
    parse_numbers,
)

#: Largest noise level the command line accepts: inputs lie in [0, 1], so noise of standard
#: deviation 10 already drowns every image (the paper uses 0.12 to 1.0).
MAX_SIGMA = 10.0

#: The option that sets the noisy samples per forward pass, per sub-command.
NOISY_BATCH = {"certify": "batch", "predict": "batch", "smooth-predict": "batch", "certify-corruptions": "batch",
               "compare": "certify_batch"}


def _each(check: Callable[[Any, str], Any]) -> Callable[[Any, str], None]:
    """A check of every value of a list option, or of a comma-separated one (``--sigma 0.25,0.5``)."""

    def checked(values: Any, option: str) -> None:
        if isinstance(values, str):
            values = parse_numbers(values, option)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            check(value, option)

    return checked


def _positive(value: Any, option: str) -> None:
    if isinstance(value, int):  # batch options may also be "auto"
        check_positive_int(value, option)


def _radius(value: float, option: str) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{option} must be finite numbers >= 0, got {value!r}")


def _eps(value: float, option: str) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{option} must be finite numbers > 0, got {value!r}")


def _severity(value: int, option: str) -> None:
    if value not in range(1, 6):
        raise ValueError(f"{option} must lie in 1..5, got {value!r}")


def _device(value: str, option: str) -> None:
    for name in value.split(","):
        resolve_device(name.strip(), option)


def _slurm(value: bool, option: str) -> None:
    if value:
        from catrs_plugin.compare.runners import check_slurm

        check_slurm(option)


_sigma = _each(lambda value, option: check_sigma(value, option, maximum=MAX_SIGMA))
_rate = _each(lambda value, option: check_non_negative(value, option, maximum=FLOAT32_MAX))

#: Option name (argparse ``dest``) -> check(value, option as typed); unset options (None) are not checked.
CHECKS: dict[str, Callable[[Any, str], Any]] = {
    "sigma": _sigma,
    "teacher_sigma": _sigma,
    "alpha": check_alpha,
    "budget_alpha": check_alpha,
    "seed": check_seed,
    "max": check_count_or_all,
    "budget_max": check_count_or_all,
    "budget_train_examples": check_count_or_all,
    "workers": lambda value, option: check_positive_int(value, option, minimum=0),
    "lr_drop": lambda value, option: check_positive_int(value, option, minimum=0),
    "lr": _rate,
    "budget_lr": _rate,
    "weight_decay": _rate,
    "gamma": _rate,
    "radii": _each(_radius),
    "attack_eps": _each(_eps),
    "severities": _each(_severity),
    "device": _device,
    "devices": _device,
    "slurm": _slurm,
    **{name: _positive for name in (
        "batch", "certify_batch", "epochs", "soft_samples", "teacher_samples", "N0", "N", "skip", "runs_per_device",
        "slurm_time", "slurm_cpus", "budget_epochs", "budget_batch", "budget_lr_step_size", "budget_soft_samples",
        "budget_N0", "budget_N", "budget_skip", "budget_attack_steps", "budget_attack_samples")},
}


def option_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``dest`` -> the option as typed (``--seed``; a positional argument's own name) of ``parser``."""
    names = {}
    for action in parser._actions:
        longest = max(action.option_strings, key=len) if action.option_strings else action.dest
        names[action.dest] = longest
    return names


def check_arguments(args: argparse.Namespace, options: dict[str, str]) -> None:
    """Check the parsed arguments of one sub-command (``options`` from :func:`option_names`).

    Raises
    ------
    ValueError
        Naming the first option out of range, what it accepts and what it got.
    """
    for dest, check in CHECKS.items():
        value = getattr(args, dest, None)
        if value is not None and dest in options:
            check(value, options[dest])
    dataset = getattr(args, "dataset", None)
    if dataset is None:
        return
    from catrs_plugin.plugins.registry import get_registry

    registry = get_registry()
    spec = registry.dataset(dataset)
    batch = NOISY_BATCH.get(args.command)
    if batch is not None and isinstance(getattr(args, batch, None), int):
        device = (getattr(args, "devices", None) or getattr(args, "device", "auto")).split(",")[0].strip()
        check_batch_fits(getattr(args, batch), spec.input_shape, resolve_device(device), options[batch])
    if getattr(args, "arch", None):
        check_forward(registry.create_model(args.arch, spec.name), spec.input_shape, spec.num_classes,
                      f"--arch {args.arch} (dataset {spec.name})")
