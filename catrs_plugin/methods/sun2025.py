"""Training for ACR by giving up hard inputs (Sun, Mao, Mueller, Vechev, ICML 2025).

"Average Certified Radius is a Poor Metric for Randomized Smoothing" shows that the average
certified radius rewards easy inputs, and reaches the state of the art in ACR with a training
method that ignores hard ones (the paper's tables call it "Ours"; its reference code is
``code/train.py`` of ``eth-sri/acr-weakness``, run by ``script/cifar10/train_<sigma>.sh``):

* **Gaussian training on M noise samples**: ``loss = mean over the M x B noisy copies of
  CE(f(x + d_i), y)``, each loader batch split into M optimizer steps;
* **discarding hard inputs** (:func:`kept_examples`): at epoch ``discard_epoch`` (0-based), each
  training input's ``pA`` is estimated as the fraction of ``discard_samples`` noisy copies the
  model classifies correctly (eval mode), and inputs with ``pA < discard_threshold`` are dropped
  for the rest of training;
* **data reweighting** (:func:`reweighting`): from that epoch on, every ``reweight_every`` epochs,
  ``pA`` is estimated with ``reweight_samples`` noisy copies, clipped below at ``reweight_clip``,
  and each kept input weighted by ``PhiInverse`` of the one-sided Clopper-Pearson lower bound
  (level ``reweight_alpha``) of its clipped count: an approximate certified radius. Each epoch
  then draws as many inputs as the whole training set, with replacement, by these weights;
* **adversarial noise** (:func:`sphere_attack`, the reference's ``radius_PGD``): from the same
  epoch on, ``attack_steps`` steps of L2 gradient ascent of the cross-entropy on each noise
  vector, each step renormalised to the noise's own starting norm; a noise vector is frozen at
  the first iterate the model misclassifies.

This module is what the reference computes (a test compares it with a transcription of the
reference on fixed inputs). Where it differs:

* the reference estimates ``pA`` in float32 (``mean`` of 0/1 values) and compares it with the
  threshold; we divide integer counts in float64: the same decisions for thresholds given to two
  decimals and 100 samples, as in every reference script;
* the reference's ``p_correct`` reads the training split through its transforms (random crop and
  flip for CIFAR-10) with 64 (discarding) or 512 (reweighting) inputs per batch; we read one view
  per input with the data set's training augmentation, :data:`NOISY_BATCH` noisy copies per
  forward pass (the batch size changes which noise each input gets, not the statistics);
* only the L2 attack of the reference (its ``pgd_radius_l2``, used by every script) is provided;
* the reference's ImageNet scripts discard at epoch 0 with a ``pA`` file computed outside the
  training run by a model we do not have, so there is no ImageNet preset.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn

from catrs_plugin.certify.smoothing import evaluating
from catrs_plugin.certify.stats import lower_confidence_bound
from catrs_plugin.methods.base import DataSchedule, EpochView, HyperParameter, Method, TrainBatch
from catrs_plugin.methods.smoothed import flat_norms, frozen, noisy_logits, quick_schedule

#: Noisy copies per forward pass when ``pA`` is estimated (the reference's ``batch_constant``).
NOISY_BATCH = 8192


def sphere_attack(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, noises: torch.Tensor, steps: int, step_size: float
) -> torch.Tensor:
    """Adversarial noise on each noise vector's sphere: the reference's ``radius_PGD`` (L2).

    With the model in eval mode and its parameters frozen, for ``t < steps``: classify
    ``x + d_t``; the noises misclassified for the first time keep ``d_t``; step along the
    per-noise normalised gradient of ``sum CE(f(x + d_t), y) / M``,
    ``d <- d + step_size * g / (||g|| + 1e-8)``, and rescale to the starting norm,
    ``d <- d / (||d|| + 1e-8) * ||d_0||``. Noises never misclassified end at ``d_steps``.

    Parameters
    ----------
    model : torch.nn.Module
        The classifier (its mode and ``requires_grad`` flags are restored on exit).
    inputs, targets : torch.Tensor
        Clean inputs ``(B, *shape)`` and labels ``(B,)``.
    noises : torch.Tensor
        Starting noises ``(M, B, *shape)``.
    steps : int
        Gradient steps.
    step_size : float
        L2 length of each step (the reference's ``--epsilon``).

    Returns
    -------
    torch.Tensor
        The chosen noises, ``(M, B, *shape)``, detached.
    """
    m = len(noises)
    start = noises.flatten(0, 1).detach()
    norms = flat_norms(start)
    repeated = inputs.repeat(m, *([1] * (inputs.dim() - 1)))
    labels = targets.repeat(m)
    noise, chosen = start, torch.zeros_like(start)
    found = torch.zeros(len(start), dtype=torch.bool, device=start.device)
    with frozen(model):
        for _ in range(steps):
            noise = noise.detach().requires_grad_()
            logits = model(repeated + noise)
            first = (logits.argmax(dim=1) != labels) & ~found
            chosen = torch.where(first.view_as(norms), noise.detach(), chosen)
            found = found | first
            loss = F.cross_entropy(logits, labels, reduction="sum") / m
            (grad,) = torch.autograd.grad(loss, [noise])
            noise = noise.detach() + step_size * grad / (flat_norms(grad) + 1e-8)
            noise = noise / (flat_norms(noise) + 1e-8) * norms
    return torch.where(found.view_as(norms), chosen, noise.detach()).view_as(noises)


def sun2025_loss(
    model: nn.Module,
    batch: TrainBatch,
    *,
    num_noise_vec: int,
    attack_steps: int,
    attack_step_size: float,
    discard_epoch: int | None,
    **schedule: object,
) -> torch.Tensor:
    """Mean cross-entropy on ``num_noise_vec`` noisy copies of each input, with adversarial noise
    (:func:`sphere_attack`) from epoch ``discard_epoch`` on (from the start without discarding).

    The other hyper-parameters (``schedule``) belong to :func:`sun2025_schedule`.
    """
    noises = batch.gaussian(num_noise_vec)
    if attack_steps and batch.epoch >= (discard_epoch or 0):
        noises = sphere_attack(model, batch.inputs, batch.targets, noises, attack_steps, attack_step_size)
    logits = noisy_logits(model, batch.inputs, noises)
    batch.observe(logits)
    return F.cross_entropy(logits.flatten(0, 1), batch.targets.repeat(num_noise_vec))


def correct_counts(view: EpochView, indices: np.ndarray, samples: int) -> np.ndarray:
    """How many of ``samples`` noisy copies of each training example ``indices`` the model classifies
    correctly (eval mode, no gradients); noise from ``view.generator``, laid out ``(samples, B, ...)``."""
    counts = []
    with evaluating(view.model), torch.no_grad():
        for x, y in view.examples(indices, max(1, NOISY_BATCH // samples)):
            predictions = noisy_logits(view.model, x, view.gaussian(samples, x)).argmax(dim=-1)
            counts.append((predictions == y).sum(dim=0).cpu())
    return torch.cat(counts).numpy().astype(np.int64)


def kept_examples(counts: np.ndarray, samples: int, threshold: float) -> np.ndarray:
    """Positions of the examples whose estimated ``pA = counts / samples`` is at least ``threshold``."""
    return np.flatnonzero(np.asarray(counts) / samples >= threshold)


def reweighting(counts: np.ndarray, samples: int, clip: float, alpha: float) -> np.ndarray:
    """``PhiInverse`` of the one-sided ``1 - alpha`` Clopper-Pearson lower bound of each clipped count.

    The count is ``floor(max(counts / samples, clip) * samples)``, as the reference clips the
    estimated ``pA`` and truncates it back to a count (its ``alpha=2 * 0.1`` two-sided interval
    is ``alpha = 0.1`` one-sided).
    """
    clipped = np.floor(np.clip(np.asarray(counts) / samples, clip, 1.0) * samples)
    return norm.ppf(lower_confidence_bound(clipped, samples, alpha))


def sun2025_schedule(
    view: EpochView,
    current: DataSchedule,
    *,
    discard_epoch: int | None,
    discard_threshold: float,
    discard_samples: int,
    reweight_every: int | None,
    reweight_samples: int,
    reweight_clip: float,
    reweight_alpha: float,
    **loss: object,
) -> DataSchedule:
    """The examples of epoch ``view.epoch``: every example once before ``discard_epoch``; from then on
    ``view.size`` draws with replacement from the kept examples, by the latest weights.

    Discarding happens at ``discard_epoch`` (``None``: never; the draws with replacement then
    start at epoch 0, as in the reference); reweighting at ``discard_epoch + k * reweight_every``
    (``None``: never; the draws are then uniform). The other hyper-parameters (``loss``) belong to
    :func:`sun2025_loss`.

    Raises
    ------
    ValueError
        When discarding keeps no example, or a weight is not positive (``reweight_clip`` too low).
    """
    start = discard_epoch or 0
    if view.epoch < start:
        return current
    indices, weights = current.indices, current.weights
    if view.epoch == discard_epoch:
        everything = np.arange(view.size)
        indices = everything[kept_examples(correct_counts(view, everything, discard_samples), discard_samples,
                                           discard_threshold)]
        if not len(indices):
            raise ValueError(f"sun2025 discarded every training example at epoch {view.epoch + 1}: none has "
                             f"pA >= discard_threshold {discard_threshold} with {discard_samples} noise samples; "
                             "lower discard_threshold or discard later (discard_epoch)")
        weights = None
    if reweight_every is not None and (view.epoch - start) % reweight_every == 0:
        weights = reweighting(correct_counts(view, indices, reweight_samples), reweight_samples, reweight_clip,
                              reweight_alpha)
        if not np.all(weights > 0):
            raise ValueError(f"sun2025's weights PhiInverse(pA_lower) must be > 0, but reweight_clip "
                             f"{reweight_clip} lets pA_lower fall to {norm.cdf(weights.min()):.3f}; raise reweight_clip")
    return DataSchedule(indices, weights, draws=view.size)


#: The reference script at sigma = 0.25 (``script/cifar10/train_0.25.sh``, the README's command).
DEFAULTS = {"num_noise_vec": 4, "discard_epoch": 60, "discard_threshold": 0.5, "discard_samples": 100,
            "reweight_every": 10, "reweight_samples": 16, "reweight_clip": 0.75, "reweight_alpha": 0.1,
            "attack_steps": 3, "attack_step_size": 0.25}

#: The reference scripts ``script/cifar10/train_<sigma>.sh`` (ResNet-110, 150 epochs, M = 4).
_PAPER = {
    0.25: dict(DEFAULTS),
    0.5: {**DEFAULTS, "discard_epoch": 70, "discard_threshold": 0.4, "attack_steps": 6, "attack_step_size": 0.25},
    1.0: {**DEFAULTS, "discard_epoch": 60, "discard_threshold": 0.4, "attack_steps": 4, "attack_step_size": 0.5},
}

#: The reference's optimiser schedule: ``MultiStepLR(milestones=[50, 100])`` stepped after every epoch,
#: so 0-based epochs 50 and 100 are the first at the lower rates (the shared recipe drops one epoch later).
PAPER_TRAINING = {"lr_milestones": (50, 100)}

SUN2025 = Method(
    name="sun2025",
    paper="Sun, Mao, Mueller, Vechev. Average Certified Radius is a Poor Metric for Randomized Smoothing. ICML 2025",
    loss=sun2025_loss,
    defaults=DEFAULTS,
    presets={"paper": _PAPER, "quick": quick_schedule(_PAPER, "discard_epoch", "reweight_every")},
    chunks="num_noise_vec",
    description="Gaussian training that discards inputs with low pA, reweights the rest by approximate "
                "certified radius and attacks the noise on its sphere (the paper's 'Ours')",
    declared={
        "num_noise_vec": HyperParameter(int, minimum=1),
        "discard_epoch": HyperParameter(int, minimum=0, optional=True),
        "discard_threshold": HyperParameter(float, minimum=0),
        "discard_samples": HyperParameter(int, minimum=1),
        "reweight_every": HyperParameter(int, minimum=1, optional=True),
        "reweight_samples": HyperParameter(int, minimum=1),
        "reweight_clip": HyperParameter(float, minimum=0),
        "reweight_alpha": HyperParameter(float, minimum=0, positive=True),
        "attack_steps": HyperParameter(int, minimum=0),
        "attack_step_size": HyperParameter(float, minimum=0),
    },
    training={"paper": PAPER_TRAINING},
    schedule=sun2025_schedule,
)
