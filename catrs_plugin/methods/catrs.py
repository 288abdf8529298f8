"""CAT-RS: confidence-aware training of smoothed classifiers (Jeong, Kim, Shin, AAAI 2023).

Per example, with M noises ``d_1..d_M ~ N(0, sigma^2 I)`` and soft label ``p``:

1. ``p_hat`` = fraction of the M noisy copies the model classifies as ``y`` (or ``p[y]`` with
   ``confidence_mask``, the ImageNet recipe);
2. ``K ~ Binomial(M, p_hat)``, clamped to at least 1;
3. ``L_low = (sum of the K smallest per-noise cross-entropies) / M`` (divided by M, not K,
   as in the reference code);
4. worst-case noises ``d_i*``: ``num_steps`` steps of L2 gradient ascent on
   ``mean_i KL(p || softmax f(x + d_i))`` from ``d_i`` (model in eval mode, parameters frozen),
   step ``2 * epsilon / num_steps`` along the normalised gradient, then projection of
   ``d_i* - d_i`` onto the L2 ball of radius ``epsilon`` and rescaling of ``d_i*`` to the mean
   and root-mean-square of ``d_i`` (see :func:`match_moments`);
5. ``L_high = max_i KL(p || softmax f(x + d_i*))`` (train mode);
6. ``loss = mean(L_low + lbd * 1[K == M] * L_high)``.

This is what ``code/train_catrs.py`` of ``alinlab/smoothing-catrs`` computes.

Presets: ``paper`` (CIFAR-10/100, ResNet-110: M = 4, epsilon = 1, T = 4, lambda = 0.5 / 1 / 2 at
sigma = 0.25 / 0.5 / 1, with the shared recipe of 150 epochs, lr 0.1 x0.1 every 50), ``mnist``
(LeNet at sigma = 0.25: lambda = 1, as the folder of the reference's MNIST checkpoint says,
``logs/mnist/catrs/adv_256.0_4/lbd_1.0/num_4/noise_0.25/lenet``, with the reference's MNIST
optimiser settings, lr 0.01 x0.1 every 50 for 150 epochs; no released MNIST run records the
other noise levels' lambda) and ``imagenet`` (the command of ``EXPERIMENTS.MD`` for ResNet-50: sigma = 1, M = 2, epsilon = 1,
T = 1, lambda = 2, ``warmup`` 80, ``confidence_mask``, trained for 90 epochs with the rate x0.1
every 30 and the extra ``lr_drop`` in epoch 85, batch 256).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import HyperParameter, Method, Observer, TrainBatch
from catrs_plugin.methods.smoothed import MNIST_TRAINING, frozen, input_gradient


def kl_to_soft_labels(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """``KL(p || softmax(logits))`` per row (terms with ``p = 0`` contribute 0)."""
    return F.kl_div(F.log_softmax(logits, dim=-1), soft_labels, reduction="none").sum(-1)


def project_l2(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Scale each row of ``delta`` (flattened per noise) into the L2 ball of radius ``epsilon``."""
    return delta.renorm(p=2, dim=0, maxnorm=epsilon)


def match_moments(noise: torch.Tensor, mean: torch.Tensor, rms: torch.Tensor) -> torch.Tensor:
    """Rescale each row of ``noise`` towards the starting noise's statistics, as the reference does.

    The row is centred, divided by its own root-mean-square (not its standard deviation),
    multiplied by ``rms`` and shifted by ``mean``. Its mean becomes ``mean`` exactly; its
    root-mean-square equals ``rms`` when the row is zero-mean, and is close to it for Gaussian
    noise, whose mean is near zero.
    """
    own_mean = noise.mean(dim=1, keepdim=True)
    own_rms = noise.pow(2).mean(dim=1, keepdim=True).sqrt()
    return (noise - own_mean) / own_rms * rms + mean


def worst_case_noise(
    model: nn.Module,
    inputs: torch.Tensor,
    soft_labels: torch.Tensor,
    noises: torch.Tensor,
    epsilon: float,
    num_steps: int,
) -> torch.Tensor:
    """Search for the noises that maximise ``mean_i KL(p || softmax f(x + d_i))``.

    Under float16 autocast the gradients are loss-scaled (:func:`~catrs_plugin.methods.smoothed.input_gradient`).

    Parameters
    ----------
    model : torch.nn.Module
        The classifier; run in eval mode with parameters frozen during the search, and restored.
    inputs : torch.Tensor
        Clean inputs ``(B, *shape)``.
    soft_labels : torch.Tensor
        Target distributions ``p``, ``(B, C)``.
    noises : torch.Tensor
        Starting noises ``(M, B, *shape)``.
    epsilon : float
        L2 radius of the search around each starting noise.
    num_steps : int
        Gradient-ascent steps.

    Returns
    -------
    torch.Tensor
        The worst-case noises, shape ``(M, B, *shape)``, detached.
    """
    m, b = noises.shape[:2]
    start = noises.detach().reshape(m * b, -1)
    mean0 = start.mean(dim=1, keepdim=True)
    rms0 = start.pow(2).mean(dim=1, keepdim=True).sqrt()
    repeated = inputs.detach().unsqueeze(0).expand(m, *inputs.shape).reshape(m * b, *inputs.shape[1:])
    targets = soft_labels.detach().repeat(m, 1)
    step = 2.0 * epsilon / num_steps

    def loss_of(noise: torch.Tensor) -> torch.Tensor:
        return kl_to_soft_labels(model(repeated + noise.view_as(repeated)), targets).sum() / m

    noise = start
    with frozen(model):
        for _ in range(num_steps):
            grad = input_gradient(loss_of, noise)
            grad = grad / (grad.norm(dim=1, keepdim=True) + 1e-8)
            noise = start + project_l2(noise.detach() + step * grad - start, epsilon)
            noise = match_moments(noise, mean0, rms0)
    return noise.detach().view_as(noises)


def catrs_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    soft_labels: torch.Tensor,
    noises: torch.Tensor,
    *,
    epsilon: float = 1.0,
    num_steps: int = 4,
    lbd: float = 1.0,
    confidence_mask: bool = False,
    generator: torch.Generator | None = None,
    observe: Observer | None = None,
) -> torch.Tensor:
    """The CAT-RS loss on one chunk, given its Gaussian noises.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier, in the mode training uses (train mode).
    inputs : torch.Tensor
        Clean inputs in [0, 1], ``(B, *shape)``.
    targets : torch.Tensor
        Class indices, ``(B,)``.
    soft_labels : torch.Tensor
        Soft labels ``p``, ``(B, C)``, rows summing to 1.
    noises : torch.Tensor
        ``M`` Gaussian noises per input, ``(M, B, *shape)``, already scaled by sigma.
    epsilon : float
        Radius of the worst-case noise search (pixel-space L2).
    num_steps : int
        Steps of the search (``T``).
    lbd : float
        Weight ``lambda`` of ``L_high``.
    confidence_mask : bool
        Use ``p[y]`` instead of the model's noisy accuracy as ``p_hat`` (ImageNet recipe).
    generator : torch.Generator, optional
        Source of the Binomial draws of ``K``.
    observe : callable, optional
        Called with the logits of the noisy copies, ``(M, B, C)``: the training accuracy the loop
        reports (:meth:`~catrs_plugin.methods.base.TrainBatch.observe`).

    Returns
    -------
    torch.Tensor
        Scalar loss.
    """
    m, b = noises.shape[:2]
    noisy = (inputs.unsqueeze(0) + noises).reshape(m * b, *inputs.shape[1:])
    logits = model(noisy)
    num_classes = logits.shape[-1]
    logits = logits.view(m, b, num_classes)
    if observe is not None:
        observe(logits)

    if confidence_mask:
        p_hat = soft_labels.gather(1, targets.view(-1, 1)).squeeze(1)
    else:
        p_hat = (logits.argmax(dim=-1) == targets.unsqueeze(0)).float().mean(dim=0)
    k = torch.binomial(torch.full_like(p_hat, float(m)), p_hat.detach().float(), generator=generator)
    k = k.long().clamp(min=1)

    xent = F.cross_entropy(logits.reshape(m * b, num_classes), targets.repeat(m), reduction="none")
    xent = xent.view(m, b).t().sort(dim=1).values
    keep = torch.arange(m, device=xent.device).unsqueeze(0) < k.unsqueeze(1)
    loss_low = (xent * keep).sum(dim=1) / m

    worst = worst_case_noise(model, inputs, soft_labels, noises, epsilon, num_steps)
    worst_logits = model((inputs.unsqueeze(0) + worst).reshape(m * b, *inputs.shape[1:])).view(m, b, num_classes)
    loss_high = kl_to_soft_labels(worst_logits, soft_labels.expand_as(worst_logits)).max(dim=0).values

    return (loss_low + lbd * loss_high * (k == m)).mean()


def catrs_method_loss(
    model: nn.Module,
    batch: TrainBatch,
    *,
    num_noise_vec: int,
    epsilon: float,
    num_steps: int,
    lbd: float,
    confidence_mask: bool,
    warmup: int | None,
) -> torch.Tensor:
    """:func:`catrs_loss` with noises drawn from the batch's generator.

    ``epsilon`` is doubled from epoch ``warmup`` on (the reference's ``--warmup`` flag).
    """
    radius = epsilon * 2.0 if warmup is not None and batch.epoch >= warmup else epsilon
    noises = batch.gaussian(num_noise_vec)
    return catrs_loss(
        model,
        batch.inputs,
        batch.targets,
        batch.soft_labels,
        noises,
        epsilon=radius,
        num_steps=num_steps,
        lbd=lbd,
        confidence_mask=confidence_mask,
        generator=batch.generator, observe=batch.observe,
    )


CATRS = Method(
    name="catrs",
    paper="Jeong, Kim, Shin. Confidence-aware Training of Smoothed Classifiers for Certified Robustness. AAAI 2023",
    loss=catrs_method_loss,
    defaults={
        "num_noise_vec": 4,
        "epsilon": 1.0,
        "num_steps": 4,
        "lbd": 1.0,
        "confidence_mask": False,
        "warmup": None,
    },
    presets={
        "paper": {0.25: {"lbd": 0.5}, 0.5: {"lbd": 1.0}, 1.0: {"lbd": 2.0}},
        "mnist": {0.25: {"lbd": 1.0}},
        "imagenet": {
            1.0: {"num_noise_vec": 2, "epsilon": 1.0, "num_steps": 1, "lbd": 2.0, "warmup": 80, "confidence_mask": True}
        },
    },
    needs_soft_labels=True,
    chunks="num_noise_vec",
    description="bottom-K Gaussian loss for low-confidence examples, worst-case KL over noise for confident ones",
    declared={
        "num_noise_vec": HyperParameter(int, minimum=1),
        "epsilon": HyperParameter(float, minimum=0),
        "num_steps": HyperParameter(int, minimum=1),
        "lbd": HyperParameter(float, minimum=0),
        "confidence_mask": HyperParameter(bool),
        "warmup": HyperParameter(int, minimum=0, optional=True),
    },
    training={"imagenet": {"epochs": 90, "batch_size": 256, "lr": 0.1, "lr_step_size": 30, "lr_drop": 85},
              "mnist": MNIST_TRAINING},
)
