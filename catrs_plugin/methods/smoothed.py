"""Pieces shared by the methods that work on ``M`` noisy copies of each input.

Noises are laid out as ``(M, B, *input_shape)`` (one slice per noise draw, as
:meth:`~catrs_plugin.methods.base.TrainBatch.gaussian` returns them), logits as ``(M, B, C)``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.certify.smoothing import evaluating

#: Training length of the paper's CIFAR-10 recipe, in epochs.
PAPER_EPOCHS = 150

#: Training length of ``catrs compare --preset quick``, in epochs (see :mod:`catrs_plugin.compare.plan`).
QUICK_EPOCHS = 40


def quick_schedule(
    table: Mapping[float, Mapping[str, Any]], *epoch_keys: str
) -> dict[float, dict[str, Any]]:
    """A ``quick`` preset: the paper preset ``table`` with each epoch count under ``epoch_keys``
    (warm-ups, deferrals) scaled from :data:`PAPER_EPOCHS` to :data:`QUICK_EPOCHS` (rounded, at least 1).

    Every other hyper-parameter keeps the paper's value.
    """
    scale = QUICK_EPOCHS / PAPER_EPOCHS
    return {
        sigma: {
            key: max(1, round(value * scale)) if key in epoch_keys and value is not None else value
            for key, value in params.items()
        }
        for sigma, params in table.items()
    }


def noisy_logits(model: nn.Module, inputs: torch.Tensor, noises: torch.Tensor) -> torch.Tensor:
    """Logits of ``model(inputs + noise_i)`` for every noise, in one forward pass, shape ``(M, B, C)``."""
    m, b = noises.shape[:2]
    noisy = (inputs.unsqueeze(0) + noises).reshape(m * b, *inputs.shape[1:])
    return model(noisy).view(m, b, -1)


def average_softmax(logits: torch.Tensor) -> torch.Tensor:
    """Mean over the noises (dimension 0) of the softmax: the smoothed soft classifier, ``(B, C)``."""
    return F.softmax(logits, dim=-1).mean(dim=0)


def smoothed_nll(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-log`` of the smoothed soft classifier's probability of ``targets`` (clamped at 1e-20).

    The loss SmoothAdv and SmoothMix ascend to find adversarial inputs.
    """
    return F.nll_loss(average_softmax(logits).clamp(min=1e-20).log(), targets, reduction=reduction)


def flat_norms(tensor: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row of ``tensor`` (all dimensions after the first), broadcastable back to it."""
    return tensor.flatten(1).norm(dim=1).view(-1, *([1] * (tensor.dim() - 1)))


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode with parameters frozen, as the reference attacks run; both are restored on exit."""
    flags = [parameter.requires_grad for parameter in model.parameters()]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    try:
        with evaluating(model), torch.enable_grad():
            yield model
    finally:
        for parameter, flag in zip(model.parameters(), flags):
            parameter.requires_grad_(flag)
