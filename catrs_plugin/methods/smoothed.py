"""Pieces shared by the methods that work on ``M`` noisy copies of each input.

Noises are laid out as ``(M, B, *input_shape)`` (one slice per noise draw, as
:meth:`~catrs_plugin.methods.base.TrainBatch.gaussian` returns them), logits as ``(M, B, C)``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.certify.smoothing import evaluating

#: Training length of the paper's CIFAR-10 recipe, in epochs.
PAPER_EPOCHS = 150

#: Training length of ``catrs compare --preset quick``, in epochs (see :mod:`catrs_plugin.compare.plan`).
QUICK_EPOCHS = 40

#: The reference's MNIST optimiser settings (LeNet): the MNIST command of ``EXPERIMENTS.MD``
#: (``train_cohen.py mnist lenet --lr 0.01 --lr_step_size 50 --epochs 150``, batch 256 by default);
#: every released MNIST-like training log of the reference trains at lr 0.01.
MNIST_TRAINING = {"epochs": 150, "batch_size": 256, "lr": 0.01, "lr_step_size": 50}

#: Loss scale an input-gradient search starts from under float16 autocast (``GradScaler``'s initial scale).
SEARCH_LOSS_SCALE = 2.0**16


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


def input_gradient(loss_of: Callable[[torch.Tensor], torch.Tensor], point: torch.Tensor) -> torch.Tensor:
    """The gradient of the scalar ``loss_of(point)`` with respect to ``point``, for the searches of the methods.

    Under float16 autocast (``TrainConfig(amp="fp16")``) the backward pass runs in float16, whose
    smallest positive number is about 6e-8: the input gradients of a loss on a model that is
    already confident underflow to zero, and a search would stop moving (or, in SmoothAdv, step
    along its random fallback direction). As ``GradScaler`` does for the weights, the loss is
    multiplied by :data:`SEARCH_LOSS_SCALE` (a power of two, so that the division afterwards is
    exact), halved and recomputed while the gradient is not finite (the check waits for the
    device once per call). bfloat16 has float32's range, so under it and without autocast the
    gradient is computed directly. MACER searches nothing: its only backward pass is the
    training step's, which the training loop's ``GradScaler`` scales.

    Parameters
    ----------
    loss_of : callable
        Maps the point (a leaf recording gradients) to the scalar loss; called again for each retry.
    point : torch.Tensor
        Where to take the gradient (detached here).

    Returns
    -------
    torch.Tensor
        The gradient, of the shape and dtype of ``point``.
    """
    point = point.detach().requires_grad_(True)
    device_type = point.device.type
    if not (torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.float16):
        return torch.autograd.grad(loss_of(point), [point])[0]
    scale = SEARCH_LOSS_SCALE
    while True:
        (grad,) = torch.autograd.grad(loss_of(point) * scale, [point])
        if scale <= 1.0 or bool(torch.isfinite(grad).all()):
            return grad / scale
        scale /= 2.0
