"""Inputs to an ART estimator: what ART accepts, within the range the estimator declares.

ART estimators take numpy arrays, and in practice Python lists and any numeric dtype too
(ART converts to float32). :func:`checked_inputs` accepts the same and returns float32
(numpy, or a torch tensor when given one, for ART's PyTorch attacks).

Inputs outside ``clip_values`` are **refused**, not clipped: ART itself never clips the
inputs of ``predict`` or ``certify`` (``clip_values`` only bounds what its attacks produce),
and a certificate computed on inputs of another scale is wrong without any sign of it (uint8
images of 0..255 under ``clip_values=(0, 1)`` are far outside the noise's reach and certify
every input at the largest radius the sample count allows). The tolerance
:data:`RANGE_TOLERANCE` admits the rounding of ART's attacks (Carlini-Wagner's tanh
reparametrisation overshoots its bounds by about 5e-7 of the range).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from catrs_plugin.utils.validation import check_inputs

#: Share of ``clip_values``' width by which an input may lie outside it (rounding of attacks).
RANGE_TOLERANCE = 1e-5


def checked_inputs(
    x: Any, name: str, input_shape: Sequence[int], clip_values: Any
) -> np.ndarray | torch.Tensor:
    """``x`` as float32 (numpy, or a tensor when given one), checked against the estimator.

    Parameters
    ----------
    x : array-like or torch.Tensor
        Inputs ``(n, *input_shape)``: a numpy array or a Python (nested) list of any real
        numeric dtype, or a tensor.
    name : str
        Argument name used in error messages.
    input_shape : sequence of int
        Shape of one input.
    clip_values : tuple of (float or numpy.ndarray) or None
        The estimator's ``(min, max)``, scalars or per-feature arrays; ``None`` means unbounded.

    Raises
    ------
    ValueError
        Non-numeric values, a wrong shape, NaN or inf, or values outside ``clip_values``
        (the message names ``name``, the range and the values found).
    """
    if isinstance(x, torch.Tensor):
        integer = not x.is_floating_point()
        values = x.detach().float()
    else:
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers (a numeric array or nested list), got dtype {array.dtype}")
        integer = array.dtype.kind in "biu"
        values = array.astype(np.float32, copy=False)
    check_inputs(values, name, input_shape=input_shape)
    if clip_values is not None:
        check_range(values, name, clip_values, was_integer=integer)
    return values


def check_clip_values(clip_values: Any) -> None:
    """Refuse ``clip_values`` that are not ``None`` or a ``(min, max)`` pair of numbers (or per-feature
    arrays) with ``min < max`` everywhere: a NaN bound would turn the range check of every input off.

    Raises
    ------
    ValueError
        Naming ``clip_values`` and what is wrong.
    """
    if clip_values is None:
        return
    try:
        low, high = (np.asarray(bound, dtype=np.float64) for bound in clip_values)
        np.broadcast(low, high)
    except (TypeError, ValueError):
        raise ValueError(f"clip_values must be None or a (min, max) pair of numbers or arrays, got {clip_values!r}") \
            from None
    if np.isnan(low).any() or np.isnan(high).any():
        raise ValueError(f"clip_values must not hold NaN (it would turn the range check off), got {clip_values!r}")
    if not (low < high).all():
        raise ValueError(f"clip_values must have min < max, got {clip_values!r}")


def check_range(values: np.ndarray | torch.Tensor, name: str, clip_values: Any, was_integer: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` if ``values`` leave ``clip_values`` (see :data:`RANGE_TOLERANCE`)."""
    low, high = (np.asarray(bound, dtype=np.float64) for bound in clip_values)
    slack = RANGE_TOLERANCE * (high - low)
    if isinstance(values, torch.Tensor):
        as_tensor = {"dtype": values.dtype, "device": values.device}
        below = bool((values < torch.as_tensor(low - slack, **as_tensor)).any())
        above = bool((values > torch.as_tensor(high + slack, **as_tensor)).any())
    else:
        below, above = bool((values < low - slack).any()), bool((values > high + slack).any())
    if below or above:
        found = (float(values.min()), float(values.max()))
        declared = f"[{_describe(low)}, {_describe(high)}]"
        hint = ""
        if was_integer or (found[1] > 1.0 and float(high.max()) <= 1.0):
            hint = " (integer images such as uint8 0..255 must be scaled to the declared range first, e.g. x / 255)"
        raise ValueError(
            f"{name} must lie within the estimator's clip_values {declared}, got values in "
            f"[{found[0]:.6g}, {found[1]:.6g}]{hint}; inputs are refused rather than clipped, because a "
            "certificate of inputs on another scale is wrong without any sign of it"
        )


def _describe(bound: np.ndarray) -> str:
    if bound.ndim == 0 or np.all(bound == bound.flat[0]):
        return f"{float(bound.flat[0]):g}"
    return f"per-feature {float(bound.min()):g}..{float(bound.max()):g}"
