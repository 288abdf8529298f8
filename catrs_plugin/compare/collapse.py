"""Recognising a training run that collapsed, so that it is reported instead of tabulated.

A collapsed run still certifies: a model that predicts one class for every input is
"certified" at a large radius on that class's test images, which gives a table row that
looks like a result (MACER at lr 0.1 on the digits CNN: 8.3 % at every radius). A run counts
as collapsed when

* its training loss became non-finite (:class:`catrs_plugin.train.loop.TrainingDiverged`);
* its training loss diverged: the last epoch's mean loss is more than
  :data:`DIVERGENCE_FACTOR` times the first epoch's; or
* it predicts one class for at least :data:`ONE_CLASS_SHARE` of the noisy test inputs
  (one Gaussian draw each at the training sigma) while no class has that share of the labels.

The thresholds are deliberately coarse. In the comparison guide's digits run (seven methods,
``--preset quick``) the healthy runs end at 0.05 to 1.53 times their first epoch's loss (MACER's
and CAT-RS's losses rise as their robustness terms engage) and predict their most frequent
class for 12 to 13 % of the noisy test inputs (the most frequent label: 12.8 %); MACER at the
shared lr 0.1 ends at 8.1 times its first loss, predicting one class for all of them.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from catrs_plugin.certify.smoothing import derive_seed, evaluating, model_device

#: A run whose last epoch's loss exceeds this many times its first epoch's has diverged.
DIVERGENCE_FACTOR = 4.0

#: A run that predicts one class for this share of the noisy test inputs has collapsed.
ONE_CLASS_SHARE = 0.9

#: Stream of the noise draws of :func:`noisy_predictions`.
CHECK_STREAM = 5


def loss_problem(history: Sequence[Mapping[str, float]]) -> str | None:
    """Why the per-epoch losses show a collapse (non-finite, or diverging), or None."""
    losses = [float(entry["loss"]) for entry in history]
    for entry, loss in zip(history, losses):
        if not math.isfinite(loss):
            return f"the training loss of epoch {entry['epoch']} is {loss}"
    if len(losses) >= 2 and losses[-1] > DIVERGENCE_FACTOR * losses[0]:
        return (f"the training loss diverged: {losses[0]:.3g} in epoch 1, {losses[-1]:.3g} in epoch {len(losses)} "
                f"(more than {DIVERGENCE_FACTOR:g} times)")
    return None


def noisy_predictions(
    model: nn.Module, x: np.ndarray, sigma: float, seed: int, batch_size: int = 256
) -> np.ndarray:
    """The model's class for one Gaussian draw around every input (eval mode, seeded)."""
    device = model_device(model)
    generator = torch.Generator(device=device).manual_seed(derive_seed(seed, CHECK_STREAM))
    predictions = []
    with evaluating(model), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(np.asarray(x[start : start + batch_size], dtype=np.float32)).to(device)
            noise = torch.randn(batch.shape, generator=generator, device=device) * sigma
            predictions.append(model(batch + noise).argmax(dim=1).cpu())
    return torch.cat(predictions).numpy()


def prediction_problem(predictions: np.ndarray, labels: np.ndarray) -> str | None:
    """Why the predictions show a collapse (one class for almost every input), or None."""
    values, counts = np.unique(predictions, return_counts=True)
    share = counts.max() / len(predictions)
    label_share = np.unique(labels, return_counts=True)[1].max() / len(labels)
    if share >= ONE_CLASS_SHARE and label_share < ONE_CLASS_SHARE:
        return (f"it predicts class {int(values[counts.argmax()])} for {100 * share:.1f} % of the noisy test inputs "
                f"(the most frequent label has {100 * label_share:.1f} %)")
    return None


def diagnose(
    history: Sequence[Mapping[str, float]], model: nn.Module, x: np.ndarray, y: np.ndarray, sigma: float, seed: int
) -> str | None:
    """Why a trained run counts as collapsed, or None when it does not (see the module docstring).

    Parameters
    ----------
    history : sequence of dict
        The per-epoch history :func:`catrs_plugin.train.loop.train` returned.
    model : torch.nn.Module
        The trained classifier.
    x, y : numpy.ndarray
        Held-out inputs and labels to check the predictions on (e.g. the certified examples).
    sigma : float
        Noise level of the check.
    seed : int
        Seed of its noise.
    """
    reasons = [loss_problem(history), prediction_problem(noisy_predictions(model, x, sigma, seed), np.asarray(y))]
    found = [reason for reason in reasons if reason]
    return "; ".join(found) if found else None


__all__ = ["DIVERGENCE_FACTOR", "ONE_CLASS_SHARE", "diagnose", "loss_problem", "noisy_predictions",
           "prediction_problem"]
