"""SmoothAdv: adversarial training of smoothed classifiers (Salman et al., NeurIPS 2019), PGD variant.

Per chunk of ``B`` examples, with ``M`` noises ``d_1..d_M ~ N(0, sigma^2 I)`` per example:

1. PGD on the smoothed soft classifier (model in eval mode, parameters frozen): from
   ``delta = 0``, ``num_steps`` times step ``2 * eps / num_steps`` along the per-example
   normalised gradient of ``-log(mean_i softmax f(x + delta + d_i)[y])`` (an example whose
   gradient is exactly zero steps along a standard-normal direction instead; such directions
   are drawn for every example at every step and used only there, so that no step synchronises
   with the GPU, which advances the batch's generator by one draw per step), then clip
   ``x + delta`` to [0, 1] and scale ``delta`` into the L2 ball of radius ``eps``;
2. ``loss = mean over the M * B copies of CE(f(x + delta + d_i), y)`` (train mode).

``eps`` warms up linearly: ``min(epsilon, (epoch + 1) * epsilon / warmup)`` (0-based epochs).
This is ``PGD_L2._attack_mutlinoise`` of ``code/third_party/smoothadv.py`` with
``code/train_salman.py`` of ``jh-jeong/smoothing-consistency`` (the reference the CAT-RS
authors use); each loader batch is split into ``M`` optimizer steps as there. With ``M = 1``
the reference attacks the plain cross-entropy, which differs from the loss above only through
the 1e-20 clamp inside the logarithm.

ART 1.20's ``PyTorchSmoothAdv`` is not adapted because it is a different algorithm: its
attack is ART's ``ProjectedGradientDescent`` with its defaults (L-infinity norm, step 0.1,
labels taken from the model's own predictions) run one iteration at a time on the *base*
classifier at a single noise, so it neither averages the softmax over the ``M`` noises nor
projects the accumulated perturbation onto the L2 ball; its warm-up assigns the warmed-up
radius to the attack's ``norm`` (the norm *type*) instead of its ``eps``; and with
``num_noise_vec > 1`` it repeats the labels ``M`` times but not the inputs, so the loss gets
mismatched shapes. Its noise also comes from the global random-number generator, not from
the batch's generator, and the step is taken inside its ``fit``, so it offers no per-batch loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import HyperParameter, Method, Observer, TrainBatch
from catrs_plugin.methods.smoothed import (
    flat_norms,
    frozen,
    input_gradient,
    noisy_logits,
    quick_schedule,
    smoothed_nll,
)


def smoothadv_attack(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    noises: torch.Tensor,
    epsilon: float,
    num_steps: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """L2 PGD on the smoothed soft classifier; returns ``x + delta``, detached.

    Under float16 autocast the gradients are loss-scaled (:func:`~catrs_plugin.methods.smoothed.input_gradient`).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; run in eval mode with parameters frozen, and restored.
    inputs, targets : torch.Tensor
        Clean inputs in [0, 1] ``(B, *shape)`` and class indices ``(B,)``.
    noises : torch.Tensor
        ``(M, B, *shape)`` noises shared by every step.
    epsilon : float
        L2 radius of the perturbation.
    num_steps : int
        PGD steps; the step size is ``2 * epsilon / num_steps``.
    generator : torch.Generator, optional
        Source of the directions of examples whose gradient is exactly zero.
    """
    step = 2.0 * epsilon / num_steps
    delta = torch.zeros_like(inputs)

    def loss_of(point: torch.Tensor) -> torch.Tensor:
        return smoothed_nll(noisy_logits(model, inputs + point, noises), targets)

    with frozen(model):
        for _ in range(num_steps):
            grad = input_gradient(loss_of, delta)
            norms = flat_norms(grad)
            # A random direction is drawn for every example and used where the gradient is zero:
            # no step waits for the GPU to say whether any example is stuck.
            fallback = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
            direction = torch.where(norms == 0, fallback, grad / norms)
            delta = delta.detach() + step * direction
            delta = (inputs + delta).clamp(0, 1) - inputs
            delta = delta.renorm(p=2, dim=0, maxnorm=epsilon)
    return (inputs + delta).detach()


def smoothadv_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    noises: torch.Tensor,
    *,
    epsilon: float,
    num_steps: int,
    generator: torch.Generator | None = None,
    observe: Observer | None = None,
) -> torch.Tensor:
    """Cross-entropy on the ``M`` noisy copies of the SmoothAdv-PGD adversarial inputs.

    ``epsilon`` is the radius of this step (after warm-up); see :func:`smoothadv_attack`.
    ``observe`` is called with the logits of those copies, ``(M, B, C)``: the training accuracy
    the loop reports (:meth:`~catrs_plugin.methods.base.TrainBatch.observe`).
    """
    adversarial = smoothadv_attack(model, inputs, targets, noises, epsilon, num_steps, generator)
    logits = noisy_logits(model, adversarial, noises)
    if observe is not None:
        observe(logits)
    m, b, c = logits.shape
    return F.cross_entropy(logits.reshape(m * b, c), targets.repeat(m))


def warmed_up(value: float, epoch: int, warmup: int) -> float:
    """``min(value, (epoch + 1) * value / warmup)``: the reference's linear warm-up (0-based epochs)."""
    return min(value, (epoch + 1) * value / warmup)


def smoothadv_method_loss(
    model: nn.Module, batch: TrainBatch, *, num_noise_vec: int, epsilon: float, num_steps: int, warmup: int
) -> torch.Tensor:
    """:func:`smoothadv_loss` with noises from the batch's generator and the warmed-up radius."""
    noises = batch.gaussian(num_noise_vec)
    return smoothadv_loss(
        model, batch.inputs, batch.targets, noises,
        epsilon=warmed_up(epsilon, batch.epoch, warmup), num_steps=num_steps, generator=batch.generator,
        observe=batch.observe,
    )


_PAPER = {
    0.25: {"num_noise_vec": 4, "epsilon": 1.0, "num_steps": 10, "warmup": 10},
    0.5: {"num_noise_vec": 8, "epsilon": 1.0, "num_steps": 10, "warmup": 10},
    1.0: {"num_noise_vec": 2, "epsilon": 2.0, "num_steps": 10, "warmup": 10},
}

SMOOTHADV = Method(
    name="smoothadv",
    paper="Salman et al. Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers. NeurIPS 2019",
    loss=smoothadv_method_loss,
    defaults={"num_noise_vec": 1, "epsilon": 0.25, "num_steps": 10, "warmup": 1},
    presets={"paper": _PAPER, "quick": quick_schedule(_PAPER, "warmup")},
    chunks="num_noise_vec",
    description="cross-entropy on noisy copies of PGD adversarial inputs of the smoothed soft classifier",
    declared={
        "num_noise_vec": HyperParameter(int, minimum=1),
        "epsilon": HyperParameter(float, minimum=0),
        "num_steps": HyperParameter(int, minimum=1),
        "warmup": HyperParameter(int, minimum=1),
    },
)
