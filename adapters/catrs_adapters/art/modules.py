"""An ART estimator's network as torch modules: behind its preprocessing, and smoothed.

:class:`Preprocessed` chains an estimator's preprocessing (normalisation, PyTorch defences)
and its network into one module taking raw inputs, so that noise is added before the
preprocessing. :class:`SmoothedSoft` is the smoothed *soft* classifier of Salman et al. (2019),
``G(x) = mean_i softmax(f(x + d_i))`` over ``samples`` Gaussian noises ``d_i``, returned as
``log G(x)``: the logits of a classifier whose softmax is ``G`` and whose gradients are those
of ``G``. Every gradient, loss and logit that :class:`~catrs_adapters.art.estimator.PyTorchCATRS`
gives ART's attacks comes from it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: Floor of the smoothed probabilities before the logarithm (as in ART's randomized smoothing).
PROBABILITY_FLOOR = 1e-20


class Preprocessed(nn.Module):
    """An ART estimator's raw model behind its preprocessing, as one module taking raw inputs.

    Parameters
    ----------
    estimator : art.estimators.classification.PyTorchClassifier
        Estimator whose ``model`` and preprocessing (``preprocessing`` and PyTorch preprocessing
        defences) are chained; gradients flow through both.
    fit : bool
        Apply the preprocessing steps meant for training (``True``) or for prediction.
    training_mode : bool
        ``False`` keeps the network in evaluation mode whatever ``train()`` asks (ART's
        ``fit(training_mode=False)``: batch-norm statistics and dropout frozen).
    net : torch.nn.Module, optional
        Another network behind the same preprocessing (default: the estimator's ``model``), e.g.
        the Gaussian teacher ``fit`` trains for CAT-RS's soft labels.

    The module starts in the mode its network is in, so that code which restores "the mode
    it found" leaves the network as it was.
    """

    def __init__(self, estimator: Any, fit: bool, training_mode: bool = True, net: nn.Module | None = None) -> None:
        super().__init__()
        if not estimator.all_framework_preprocessing:
            raise ValueError(
                "preprocessing_defences must all be PyTorch preprocessors (with a forward method) so that "
                "noise can be added before them on the device; got "
                f"{[type(p).__name__ for p in estimator.preprocessing_operations]}"
            )
        self.net = estimator.model if net is None else net
        self.estimator = estimator
        self.fit = fit
        self.training_mode = training_mode
        self.training = self.net.training and training_mode

    def train(self, mode: bool = True) -> "Preprocessed":
        return super().train(mode and self.training_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.estimator._apply_preprocessing(x, None, fit=self.fit, no_grad=False)
        return self.net(x)


class SmoothedSoft(nn.Module):
    """``log`` of the smoothed soft classifier ``mean_i softmax(base(x + d_i))``, ``d_i ~ N(0, sigma^2 I)``.

    The noisy copies of all inputs go through ``base`` in one forward pass, in the mode ``base``
    is in; the output, of shape ``(n, classes)``, is differentiable with respect to the input.

    Parameters
    ----------
    base : torch.nn.Module
        Classifier taking raw inputs (e.g. :class:`Preprocessed`).
    samples : int
        Noises per input, drawn afresh from torch's global generator at every call (so
        ``torch.manual_seed`` makes a call reproducible).
    sigma : float
        Noise standard deviation.
    """

    def __init__(self, base: nn.Module, samples: int, sigma: float) -> None:
        super().__init__()
        self.base = base
        self.samples = samples
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x.repeat_interleave(self.samples, 0)
        noisy = noisy + torch.randn_like(noisy) * self.sigma
        probabilities = F.softmax(self.base(noisy), dim=1).view(len(x), self.samples, -1).mean(dim=1)
        return torch.log(probabilities.clamp_min(PROBABILITY_FLOOR))
