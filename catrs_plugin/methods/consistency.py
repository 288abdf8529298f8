"""Consistency regularization (Jeong and Shin, NeurIPS 2020).

With ``M`` noises ``d_1..d_M ~ N(0, sigma^2 I)`` per example, ``p_i = softmax f(x + d_i)`` and
their mean ``p_bar``::

    loss = mean_i CE(f(x + d_i), y)
           + mean over examples of [ lbd * (1/M) sum_i KL(p_bar || p_i) + eta * H(p_bar) ]

with ``H`` the entropy (``log`` clamped at 1e-20). This is the ``'default'`` form of
``consistency_loss`` in ``code/consistency.py`` of ``alinlab/smoothing-catrs``, trained with
Gaussian noise only (``train_consistency.py`` without ``--adv-training``, the paper's table).
``p_bar`` is not detached. Each loader batch is split into ``M`` optimizer steps, as in the
reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import HyperParameter, Method, Observer, TrainBatch
from catrs_plugin.methods.smoothed import average_softmax, noisy_logits


def consistency_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    noises: torch.Tensor,
    *,
    lbd: float,
    eta: float,
    observe: Observer | None = None,
) -> torch.Tensor:
    """The consistency-regularised loss on one chunk, given its noises ``(M, B, *shape)``.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in train mode.
    inputs, targets : torch.Tensor
        Clean inputs ``(B, *shape)`` and class indices ``(B,)``.
    noises : torch.Tensor
        ``M`` noises per input, ``(M, B, *shape)``, already scaled by sigma.
    lbd : float
        Weight of the KL consistency term.
    eta : float
        Weight of the entropy of the mean prediction.
    observe : callable, optional
        Called with the logits of the noisy copies, ``(M, B, C)``: the training accuracy the loop
        reports (:meth:`~catrs_plugin.methods.base.TrainBatch.observe`).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    logits = noisy_logits(model, inputs, noises)
    if observe is not None:
        observe(logits)
    m, b, c = logits.shape
    xent = F.cross_entropy(logits.reshape(m * b, c), targets.repeat(m))
    mean_prediction = average_softmax(logits)
    kl = F.kl_div(F.log_softmax(logits, dim=-1), mean_prediction.expand_as(logits), reduction="none").sum(-1).mean(0)
    entropy = -(mean_prediction * mean_prediction.clamp(min=1e-20).log()).sum(-1)
    return xent + (lbd * kl + eta * entropy).mean()


def consistency_method_loss(
    model: nn.Module, batch: TrainBatch, *, num_noise_vec: int, lbd: float, eta: float
) -> torch.Tensor:
    """:func:`consistency_loss` with ``num_noise_vec`` noises drawn from the batch's generator."""
    return consistency_loss(model, batch.inputs, batch.targets, batch.gaussian(num_noise_vec), lbd=lbd, eta=eta,
                            observe=batch.observe)



CONSISTENCY = Method(
    name="consistency",
    paper="Jeong, Shin. Consistency Regularization for Certified Robustness of Smoothed Classifiers. NeurIPS 2020",
    loss=consistency_method_loss,
    defaults={"num_noise_vec": 2, "lbd": 10.0, "eta": 0.5},
    presets={
        "paper": {
            0.25: {"num_noise_vec": 2, "lbd": 20.0, "eta": 0.5},
            0.5: {"num_noise_vec": 2, "lbd": 10.0, "eta": 0.5},
            1.0: {"num_noise_vec": 2, "lbd": 10.0, "eta": 0.5},
        }
    },
    chunks="num_noise_vec",
    description="cross-entropy on M noisy copies plus KL of each to their mean and the mean's entropy",
    declared={
        "num_noise_vec": HyperParameter(int, minimum=1),
        "lbd": HyperParameter(float, minimum=0),
        "eta": HyperParameter(float, minimum=0),
    },
)
