"""Soft labels for CAT-RS: the smoothed prediction of a teacher on the training set."""

from __future__ import annotations

import numpy as np
from torch import nn

from catrs_plugin.smoothing import Smooth


def smoothed_soft_labels(
    teacher: nn.Module,
    x: np.ndarray,
    num_classes: int,
    sigma: float = 0.25,
    n: int = 10_000,
    batch_size: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """Class frequencies of ``teacher(x + N(0, sigma^2 I))`` over ``n`` samples per example.

    The paper uses a Gaussian-trained teacher at ``sigma = 0.25`` with ``n = 10,000`` and the same
    soft labels for every training sigma.

    Returns
    -------
    numpy.ndarray
        ``(examples, num_classes)`` float32, rows summing to 1.
    """
    smooth = Smooth(teacher, num_classes, sigma, batch_size=batch_size, seed=seed, progress=progress)
    return smooth.class_frequencies(x, n)
