"""Stability training (Li, Chen, Wang, Carin, NeurIPS 2019).

With one noise ``d ~ N(0, sigma^2 I)`` per example, as ``code/train_stab.py`` of
``jh-jeong/smoothing-consistency`` (used by the CAT-RS authors) computes it::

    loss = CE(f(x), y) + lbd * H(softmax f(x), softmax f(x + d))

where ``H(p, q) = -sum_c p_c log q_c`` is the cross-entropy between the clean and the noisy
prediction (the KL divergence plus the entropy of the clean prediction). Nothing is detached:
the gradient also flows through the clean prediction used as the target, and the clean and
noisy copies go through the model in two separate forward passes (this matters for batch norm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import HyperParameter, Method, Observer, TrainBatch


def stability_loss(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, noise: torch.Tensor, *, lbd: float,
    observe: Observer | None = None,
) -> torch.Tensor:
    """The stability-training loss on one batch, given its Gaussian noise.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in train mode.
    inputs : torch.Tensor
        Clean inputs ``(B, *shape)``.
    targets : torch.Tensor
        Class indices ``(B,)``.
    noise : torch.Tensor
        One noise per input, ``(B, *shape)``, already scaled by sigma.
    lbd : float
        Weight of the stability term.
    observe : callable, optional
        Called with the logits of the noisy inputs, ``(B, C)``: the training accuracy the loop
        reports (:meth:`~catrs_plugin.methods.base.TrainBatch.observe`).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    clean = model(inputs)
    noisy = model(inputs + noise)
    if observe is not None:
        observe(noisy)
    stability = -(F.softmax(clean, dim=1) * F.log_softmax(noisy, dim=1)).sum(dim=1).mean()
    return F.cross_entropy(clean, targets) + lbd * stability


def stability_method_loss(model: nn.Module, batch: TrainBatch, *, lbd: float) -> torch.Tensor:
    """:func:`stability_loss` with the noise drawn from the batch's generator."""
    return stability_loss(model, batch.inputs, batch.targets, batch.gaussian(), lbd=lbd, observe=batch.observe)


STABILITY = Method(
    name="stability",
    paper="Li, Chen, Wang, Carin. Certified Adversarial Robustness with Additive Noise. NeurIPS 2019",
    loss=stability_method_loss,
    defaults={"lbd": 2.0},
    presets={"paper": {0.25: {"lbd": 2.0}, 0.5: {"lbd": 2.0}, 1.0: {"lbd": 1.0}}},
    description="cross-entropy on clean inputs plus lambda times the cross-entropy of noisy to clean predictions",
    declared={"lbd": HyperParameter(float, minimum=0)},
)
