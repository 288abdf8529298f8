"""SmoothMix: training confidence-calibrated smoothed classifiers (Jeong et al., NeurIPS 2021).

Per chunk of ``B`` examples with ``M`` noises ``d_1..d_M ~ N(0, sigma^2 I)`` per example:

1. Attack (eval mode, parameters frozen): ``T = num_steps`` steps ``x_{t+1} = P(x_t + step_size
   * g_t / (||g_t|| + 1e-8))`` where ``g_t`` is the gradient of the summed
   ``-log(mean_i softmax f(x_t + d_i)[y])`` and ``P`` projects onto the L2 ball of radius
   ``maxnorm`` around ``x`` (when given) and clips to [0, 1]. The adversarial side is ``x_T``;
   the clean side ``x_s`` is the iterate of step ``mix_step``, projected onto the ball of radius
   ``maxnorm_s`` (default ``step_size * mix_step``), scaled by the warm-up factor.
2. ``p_bar = mean_i softmax f(x_s + d_i)`` (train mode), ``L_cls = mean CE(f(x_s + d_i), y)``.
3. Mixup with ``lam ~ U[0, 1/2]`` per example: ``x_mix = (1 - lam) x_s + lam x_T`` and target
   ``y_mix = (1 - lam) p_bar + lam * uniform``.
4. ``loss = L_cls + eta * w * mean over the M * B copies of
   1[argmax p_bar = y] * KL(y_mix || softmax f(x_mix + d_i))``, ``w = min(1, (epoch + 1) / warmup)``.

This is ``code/train.py`` of ``jh-jeong/smoothmix`` (``SmoothMix_PGD`` and its ``train``); each
loader batch is split into ``M`` optimizer steps as there, and ``p_bar`` is not detached.

ART 1.20's ``PyTorchSmoothMix`` follows the same code except for one thing that changes the
method: its attack steps by ``self.alpha``, which in ART is the certification failure
probability (default 0.001), not SmoothMix's step size (0.5 to 2.0 in the paper), so with
ART's defaults the attack barely moves and the mixup term trains on (almost) clean inputs.
Setting ART's ``alpha`` to the step size would fix the attack (a test checks that its
``_smooth_mix_pgd_attack`` then returns the same points as :func:`smoothmix_attack`) but would
break the estimator's certification, which reads the same ``alpha``. Its mixup weights and
noises also come from the global random-number generator and the step is taken inside its
``fit``, so it offers no per-batch loss driven by the batch's generator. This module keeps the
step size a hyper-parameter of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import HyperParameter, Method, Observer, TrainBatch
from catrs_plugin.methods.smoothadv import warmed_up
from catrs_plugin.methods.smoothed import (
    average_softmax,
    flat_norms,
    frozen,
    input_gradient,
    noisy_logits,
    quick_schedule,
    smoothed_nll,
)


def _project(x: torch.Tensor, origin: torch.Tensor, maxnorm: float | None) -> torch.Tensor:
    if maxnorm is not None:
        x = origin + (x - origin).renorm(p=2, dim=0, maxnorm=maxnorm)
    return x.clamp(0, 1).detach()


def smoothmix_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    noises: torch.Tensor,
    *,
    step_size: float,
    num_steps: int,
    mix_step: int,
    maxnorm_s: float | None,
    maxnorm: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SmoothMix PGD: returns the clean side ``x_s`` and the adversarial side ``x_T``.

    Under float16 autocast the gradients are loss-scaled (:func:`~catrs_plugin.methods.smoothed.input_gradient`).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; run in eval mode with parameters frozen, and restored.
    inputs, targets : torch.Tensor
        Clean inputs in [0, 1] ``(B, *shape)`` and class indices ``(B,)``.
    noises : torch.Tensor
        ``(M, B, *shape)`` noises shared by every step.
    step_size : float
        Length of each normalised gradient step (the paper's and reference's ``alpha``).
    num_steps : int
        Number of steps ``T``.
    mix_step : int
        Step whose iterate becomes the clean side (0: the input itself).
    maxnorm_s : float or None
        Radius of the clean side's projection (already warmed up).
    maxnorm : float or None
        Radius of the adversarial side's projection (None: clipping to [0, 1] only).
    """
    adversarial = inputs.detach()
    start = inputs.detach()

    def loss_of(point: torch.Tensor) -> torch.Tensor:
        return smoothed_nll(noisy_logits(model, point, noises), targets, reduction="sum")

    with frozen(model):
        for step in range(num_steps):
            if step == mix_step:
                start = adversarial
            grad = input_gradient(loss_of, adversarial)
            adversarial = _project(adversarial + step_size * grad / (flat_norms(grad) + 1e-8), inputs, maxnorm)
    return _project(start, inputs, maxnorm_s), adversarial


def smoothmix_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    noises: torch.Tensor,
    mix_weights: torch.Tensor,
    *,
    step_size: float,
    num_steps: int,
    mix_step: int,
    eta: float,
    maxnorm_s: float | None,
    maxnorm: float | None = None,
    observe: Observer | None = None,
) -> torch.Tensor:
    """The SmoothMix loss on one chunk, given its noises and mixup weights.

    Parameters
    ----------
    model, inputs, targets, noises
        As in :func:`smoothmix_attack`; the model is in train mode.
    mix_weights : torch.Tensor
        ``lam`` per example, ``(B,)``, in [0, 1/2] (the weight of the adversarial side).
    step_size, num_steps, mix_step, maxnorm_s, maxnorm
        As in :func:`smoothmix_attack`.
    eta : float
        Weight of the mixup term, already multiplied by the warm-up factor.
    observe : callable, optional
        Called with the logits of the noisy copies, ``(M, B, C)``: the training accuracy the loop
        reports (:meth:`~catrs_plugin.methods.base.TrainBatch.observe`).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    clean, adversarial = smoothmix_attack(
        model, inputs, targets, noises,
        step_size=step_size, num_steps=num_steps, mix_step=mix_step, maxnorm_s=maxnorm_s, maxnorm=maxnorm,
    )
    logits = noisy_logits(model, clean, noises)
    if observe is not None:
        observe(logits)
    m, b, c = logits.shape
    xent = F.cross_entropy(logits.reshape(m * b, c), targets.repeat(m))
    mean_prediction = average_softmax(logits)

    lam = mix_weights.view(-1, *([1] * (inputs.dim() - 1)))
    mixed = (1 - lam) * clean + lam * adversarial
    uniform = torch.full_like(mean_prediction, 1.0 / c)
    mixed_target = (1 - mix_weights).view(-1, 1) * mean_prediction + mix_weights.view(-1, 1) * uniform
    mixed_log_probs = F.log_softmax(noisy_logits(model, mixed, noises), dim=-1)
    mixup = F.kl_div(mixed_log_probs, mixed_target.expand_as(mixed_log_probs), reduction="none").sum(-1)
    correct = (mean_prediction.argmax(dim=1) == targets).float()
    return xent + eta * (correct * mixup).mean()


def smoothmix_method_loss(
    model: nn.Module,
    batch: TrainBatch,
    *,
    num_noise_vec: int,
    step_size: float,
    num_steps: int,
    mix_step: int,
    eta: float,
    warmup: int,
    maxnorm_s: float | None,
    maxnorm: float | None,
) -> torch.Tensor:
    """:func:`smoothmix_loss` with noises and ``lam ~ U[0, 1/2]`` drawn from the batch's generator.

    The warm-up factor ``min(1, (epoch + 1) / warmup)`` scales both ``maxnorm_s`` and ``eta``.
    """
    factor = warmed_up(1.0, batch.epoch, warmup)
    noises = batch.gaussian(num_noise_vec)
    lam = torch.rand(len(batch.inputs), generator=batch.generator, device=batch.inputs.device) / 2
    radius_s = (step_size * mix_step if maxnorm_s is None else maxnorm_s) * factor
    return smoothmix_loss(
        model, batch.inputs, batch.targets, noises, lam,
        step_size=step_size, num_steps=num_steps, mix_step=mix_step, eta=eta * factor,
        maxnorm_s=radius_s, maxnorm=maxnorm, observe=batch.observe,
    )


_PAPER = {
    0.25: {"num_noise_vec": 2, "num_steps": 4, "step_size": 0.5, "mix_step": 0, "eta": 5.0, "warmup": 10},
    0.5: {"num_noise_vec": 2, "num_steps": 4, "step_size": 1.0, "mix_step": 1, "eta": 5.0, "warmup": 10},
    1.0: {"num_noise_vec": 2, "num_steps": 4, "step_size": 2.0, "mix_step": 1, "eta": 5.0, "warmup": 10},
}

SMOOTHMIX = Method(
    name="smoothmix",
    paper="Jeong, Park, Kim, Lee, Kim, Shin. SmoothMix: Training Confidence-calibrated Smoothed Classifiers "
    "for Certified Robustness. NeurIPS 2021",
    loss=smoothmix_method_loss,
    defaults={
        "num_noise_vec": 1, "step_size": 1.0, "num_steps": 8, "mix_step": 0, "eta": 1.0, "warmup": 10,
        "maxnorm_s": None, "maxnorm": None,
    },
    presets={"paper": _PAPER, "quick": quick_schedule(_PAPER, "warmup")},
    chunks="num_noise_vec",
    description="cross-entropy plus a mixup between clean and adversarial noisy inputs towards calibrated targets",
    declared={
        "num_noise_vec": HyperParameter(int, minimum=1),
        "step_size": HyperParameter(float, minimum=0),
        "num_steps": HyperParameter(int, minimum=1),
        "mix_step": HyperParameter(int, minimum=0),
        "eta": HyperParameter(float, minimum=0),
        "warmup": HyperParameter(int, minimum=1),
        "maxnorm_s": HyperParameter(float, minimum=0, optional=True),
        "maxnorm": HyperParameter(float, minimum=0, optional=True),
    },
)
