"""Argument checks shared by every public entry point.

Each check raises :class:`ValueError` whose message names the argument, the accepted range
and the value received, so that a bad call fails at once and says how to fix it. torch is
imported only by the checks of tensors, models and devices, so that the checks of plain values
(and the readers of result files that use them) do not import it.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

from catrs_plugin.utils.reading import class_labels

#: Largest float32: a learning rate or weight decay above it cannot multiply float32 weights.
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: Largest seed: seeds feed 63-bit generator seeds (``derive_seed``) and ``torch.manual_seed``.
MAX_SEED = 2**63 - 1


def check_sigma(sigma: float, name: str = "sigma", maximum: float | None = None) -> float:
    """Return ``sigma`` as a float if it is a finite number greater than zero (and at most ``maximum``)."""
    value = _as_float(sigma, name)
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {sigma!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must lie in (0, {maximum:g}], got {sigma!r}")
    return value


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return ``alpha`` as a float if it lies strictly between 0 and 1."""
    value = _as_float(alpha, name)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in the open interval (0, 1), got {alpha!r}")
    return value


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_non_negative(value: float, name: str, maximum: float | None = None) -> float:
    """Return ``value`` as a float if it is finite, not negative and at most ``maximum`` (when given)."""
    number = _as_float(value, name)
    if not (number >= 0.0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must lie in [0, {maximum:g}], got {value!r}")
    return number


def check_seed(seed: int, name: str = "seed") -> int:
    """Return ``seed`` if it is an integer in ``[0, 2**63 - 1]`` (:data:`MAX_SEED`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, {MAX_SEED}], got {seed!r}")
    return int(seed)


def check_count_or_all(value: int, name: str) -> int:
    """Return ``value`` if it is -1 (meaning all) or an integer >= 1; 0 and other negatives are refused."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not (value == -1 or value >= 1):
        raise ValueError(f"{name} must be -1 (all) or an integer >= 1, got {value!r}")
    return int(value)


def is_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (none can exist while torch is not imported)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def memory_bytes(device: torch.device | str) -> int:
    """The memory of ``device``: the GPU's total memory for CUDA, else this machine's physical memory."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):  # no sysconf (Windows): nothing to compare with
        return 2**63


def check_batch_fits(batch: int, input_shape: Sequence[int], device: torch.device | str, name: str) -> None:
    """Refuse a batch of noisy samples whose buffers alone (float32 inputs, int64 counts) exceed the memory of
    ``device`` (:func:`memory_bytes`), before anything is allocated or written."""
    import torch

    need = int(batch) * (4 * math.prod(int(s) for s in input_shape) + 16)
    have = memory_bytes(device)
    if need > have:
        raise ValueError(
            f"{name} {batch}: that many noisy samples of shape {tuple(input_shape)} per forward pass need "
            f"{_size(need)} of memory, more than the {_size(have)} of {torch.device(device)}; give a smaller {name} "
            "or auto (results do not depend on it)"
        )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} PB"


def check_forward(model: torch.nn.Module, input_shape: Sequence[int], num_classes: int, name: str) -> None:
    """Forward one zero input through ``model`` (in eval mode, without gradients) and check it gives
    ``num_classes`` logits; an architecture that cannot take ``input_shape`` is a :class:`ValueError`
    naming ``name`` instead of an error inside torch at the first training step."""
    import torch

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(torch.zeros((1, *input_shape), device=device))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name} cannot take inputs of shape {tuple(input_shape)}: {' '.join(str(error).split())}") \
            from None
    finally:
        model.train(was_training)
    if tuple(logits.shape) != (1, num_classes):
        raise ValueError(f"{name} returns outputs of shape {tuple(logits.shape[1:])} per input, expected "
                         f"{num_classes} logits")


def check_inputs(
    x: np.ndarray | torch.Tensor,
    name: str = "x",
    input_shape: Sequence[int] | None = None,
    unit_range: bool = False,
) -> None:
    """Check a batch of inputs: non-empty, finite, optionally of a given per-example shape.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Batch of inputs, first axis indexes examples.
    name : str
        Argument name used in error messages.
    input_shape : sequence of int, optional
        Expected shape of one example, e.g. ``(3, 32, 32)``; the first entry is the channel count.
    unit_range : bool
        Also require every value to lie in [0, 1] (models here see pixels in [0, 1]).
    """
    shape = tuple(x.shape)
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape}); pass at least one example")
    import torch

    data = x.detach() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if data.is_floating_point() and not bool(torch.isfinite(data).all()):
        raise ValueError(f"{name} contains NaN or inf values; inputs must be finite")
    if input_shape is not None:
        expected = tuple(int(s) for s in input_shape)
        if len(shape) != len(expected) + 1:
            raise ValueError(
                f"{name} must have shape (n, {', '.join(map(str, expected))}), got {shape}"
            )
        if shape[1] != expected[0]:
            raise ValueError(
                f"{name} has {shape[1]} channels, expected {expected[0]} (shape (n, "
                f"{', '.join(map(str, expected))})), got shape {shape}"
            )
        if shape[1:] != expected:
            raise ValueError(
                f"{name} must have shape (n, {', '.join(map(str, expected))}), got {shape}"
            )
    if unit_range:
        low, high = float(data.min()), float(data.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"{name} must lie in [0, 1] (normalisation belongs inside the model), "
                f"got values in [{low:.4g}, {high:.4g}]"
            )


def check_labels(y: np.ndarray | torch.Tensor, num_classes: int, n: int, name: str = "y") -> np.ndarray:
    """Return integer class labels of length ``n`` in ``[0, num_classes)``.

    One-hot labels of shape ``(n, num_classes)`` (ART's convention) are reduced with argmax.
    """
    labels = y.detach().cpu().numpy() if is_tensor(y) else np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == num_classes:
        labels = labels.argmax(axis=1)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{name} must hold {n} class indices (shape ({n},)) or one-hot rows "
            f"(shape ({n}, {num_classes})), got shape {labels.shape}"
        )
    return class_labels(labels, num_classes, name)


def check_soft_labels(
    soft_labels: np.ndarray | torch.Tensor, n: int, num_classes: int, name: str = "soft_labels"
) -> np.ndarray:
    """Return soft labels as float32 of shape ``(n, num_classes)`` with rows summing to 1."""
    probs = (
        soft_labels.detach().cpu().numpy()
        if is_tensor(soft_labels)
        else np.asarray(soft_labels)
    )
    if probs.shape != (n, num_classes):
        raise ValueError(
            f"{name} must have shape ({n}, {num_classes}) (one probability row per training "
            f"example), got {probs.shape}"
        )
    probs = probs.astype(np.float64)
    if not np.all(np.isfinite(probs)) or probs.min() < 0.0:
        raise ValueError(f"{name} must hold finite probabilities >= 0")
    sums = probs.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1.0)))
    if abs(sums[worst] - 1.0) > 1e-3:
        raise ValueError(
            f"{name} rows must sum to 1 (tolerance 1e-3); row {worst} sums to {sums[worst]:.6g}"
        )
    return probs.astype(np.float32)


def parse_numbers(text: str, name: str) -> list[float]:
    """The numbers of a comma-separated option value such as ``--sigma 0.25,0.5`` (empty parts skipped).

    Raises
    ------
    ValueError
        If a part is not a number, naming ``name``.
    """
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated numbers, got {text!r}") from None


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise list the valid ones."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(sorted(choices))}")
    return value


def check_autocast_dtype(dtype: torch.dtype | None, name: str = "autocast_dtype") -> torch.dtype | None:
    """Return ``dtype`` if it is ``None`` (full precision), ``torch.bfloat16`` or ``torch.float16``."""
    import torch

    if dtype not in (None, torch.bfloat16, torch.float16):
        raise ValueError(f"{name} must be None, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


def check_output_file(path: str | os.PathLike, name: str) -> Path:
    """Return ``path`` if a file can be written there; checked before any work, writing nothing.

    Raises
    ------
    ValueError
        If ``path`` is a folder or another non-file (a FIFO, a device), a part of its folder
        path is a file, the folder (or the nearest existing folder above it) does not let this
        process create files, or an existing file at ``path`` cannot be opened for writing.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder; give the path of a file")
    if path.exists() and not path.is_file():  # a FIFO would block the first open, a device swallow the output
        raise ValueError(f"{name} {str(path)!r} exists and is not a regular file (a pipe, socket or device); "
                         "give the path of a file")
    _check_can_create_in(path.parent, name, path)
    if path.exists():
        try:
            with open(path, "ab"):
                pass
        except OSError as error:
            raise ValueError(f"{name} {str(path)!r} exists and cannot be written: {error.strerror}") from None
    return path


def check_output_dir(path: str | os.PathLike, name: str) -> Path:
    """Return ``path`` if files can be written into it (it may not exist yet); writes nothing.

    Raises
    ------
    ValueError
        If ``path`` or a folder above it is a file, or files cannot be created there.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a file, not a folder")
    _check_can_create_in(path, name, path)
    return path


def _check_can_create_in(folder: Path, name: str, target: Path) -> None:
    """Create and remove a probe file in ``folder``, or in the nearest existing folder above it."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name} {str(target)!r} cannot be created: {str(existing)!r} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".catrs-write-test-")
    except OSError as error:
        raise ValueError(f"{name} {str(target)!r} cannot be written: this process cannot create files in "
                         f"{str(existing)!r} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)


def _as_float(value: float, name: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
