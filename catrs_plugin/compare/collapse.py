"""Recognising a training run that collapsed, from what its model does, so that it is reported instead of tabulated.

A collapsed run still certifies: a model that predicts one class for every input is
"certified" at a large radius on that class's test images, which gives a table row that
looks like a result (MACER at lr 0.1 on the digits CNN: 8.3 % at every radius). A run counts
as collapsed when

* its training loss became non-finite (:class:`catrs_plugin.train.loop.TrainingDiverged`; the
  run stops there), or
* its model is no better under noise than a constant answer: on held-out inputs (up to
  :data:`CHECK_EXAMPLES` of the test split, :data:`CHECK_DRAWS` Gaussian draws each at the
  training sigma, eval mode), its accuracy ``a`` is less than :data:`MIN_SKILL` of the way
  from ``c``, the accuracy of always answering the most frequent label, to 1:
  ``(a - c) / (1 - c) < MIN_SKILL``; or
* it answers one class for most of those noisy inputs: at least :data:`ONE_CLASS_SHARE` of
  them, while no label has that share. Such a model certifies that class's test images at
  large radii and nothing else, a flat row of certified accuracy that looks like a result.

The training loss is not used: its scale is the method's, and some methods change it during
training (MACER at sigma = 1.0 adds its robustness term after a deferral, and on the digits
data its loss rose from 2.3 in the first epoch to 32 in the last while its model was healthy,
with a noisy accuracy of 0.40). ``docs/guides/compare.rst`` gives the measured skill and
most-predicted share of every method at sigma = 0.25, 0.5 and 1.0 on the digits data, against
which :data:`MIN_SKILL` and :data:`ONE_CLASS_SHARE` were set. ``catrs compare --certify-collapsed``
certifies a flagged run anyway (its rows are marked), since the check is a heuristic and a flag
must never hide a result the user asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from catrs_plugin.certify.smoothing import evaluating, model_device
from catrs_plugin.utils import streams

#: A model whose noisy accuracy is less than this share of the way from a constant answer's accuracy to 1 collapsed.
MIN_SKILL = 0.05

#: A model that answers one class for this share of the noisy inputs collapsed (unless a label has that share).
ONE_CLASS_SHARE = 0.5

#: Held-out inputs checked at most (evenly spaced over the split) and Gaussian draws per input.
CHECK_EXAMPLES = 1000
CHECK_DRAWS = 4


def check_indices(count: int, limit: int = CHECK_EXAMPLES) -> np.ndarray:
    """Up to ``limit`` indices spread evenly from 0 to ``count - 1`` (all of them when ``count <= limit``)."""
    return np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(np.int64)) if count else \
        np.zeros(0, dtype=np.int64)


def noisy_predictions(
    model: nn.Module, x: np.ndarray, sigma: float, seed: int, draws: int = CHECK_DRAWS, batch_size: int = 256
) -> np.ndarray:
    """The model's class for ``draws`` Gaussian draws around every input (eval mode), shape ``(draws, len(x))``.

    ``x`` may be an array-like decoded on access (each batch of inputs is read once). The noise
    comes from the stream domain :data:`~catrs_plugin.utils.streams.COLLAPSE_CHECK`.
    """
    device = model_device(model)
    generator = streams.generator(streams.COLLAPSE_CHECK, seed, device=device)
    predictions = []
    with evaluating(model), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            batch = torch.as_tensor(np.asarray(x[start : start + batch_size], dtype=np.float32)).to(device)
            predictions.append(torch.stack([
                model(batch + torch.randn(batch.shape, generator=generator, device=device) * sigma).argmax(dim=1)
                for _ in range(draws)]).cpu())
    return torch.cat(predictions, dim=1).numpy() if predictions else np.zeros((draws, 0), dtype=np.int64)


@dataclass(frozen=True)
class NoisyBehaviour:
    """What a model does on noisy held-out inputs.

    Attributes
    ----------
    accuracy : float
        Share of the noisy predictions that equal the label.
    chance : float
        Share of the most frequent label: the accuracy of always answering it.
    top_class : int
        The class predicted most often, and ``top_share`` its share of the predictions.
    top_share : float
    inputs, draws : int
        Held-out inputs and Gaussian draws per input.
    sigma : float
        Noise level of the draws.
    """

    accuracy: float
    chance: float
    top_class: int
    top_share: float
    inputs: int
    draws: int
    sigma: float

    @property
    def skill(self) -> float:
        """``(accuracy - chance) / (1 - chance)``: 0 for a constant answer, 1 for a perfect classifier."""
        return (self.accuracy - self.chance) / (1.0 - self.chance) if self.chance < 1 else 0.0

    @property
    def problem(self) -> str | None:
        """Why the model counts as collapsed (skill below :data:`MIN_SKILL`, or one class for
        :data:`ONE_CLASS_SHARE` of the inputs), or None."""
        weak = self.chance < 1 and self.skill < MIN_SKILL
        one_class = self.top_share >= ONE_CLASS_SHARE > self.chance
        if not (weak or one_class):
            return None
        found = (f"its accuracy on {self.inputs} held-out inputs under noise ({self.draws} Gaussian draws each at "
                 f"sigma {self.sigma:g}) is {100 * self.accuracy:.1f} %, skill {self.skill:.2f} (always answering the "
                 f"most frequent label: {100 * self.chance:.1f} %), and it predicts class {self.top_class} for "
                 f"{100 * self.top_share:.1f} % of them")
        limits = [f"skill below {MIN_SKILL:g}"] * weak + [f"one class for at least {100 * ONE_CLASS_SHARE:g} %"] * one_class
        return f"{found} ({'; '.join(limits)})"

    def as_dict(self) -> dict[str, float]:
        """The measured figures, for a summary file."""
        return {"noisy_accuracy": self.accuracy, "chance": self.chance, "skill": self.skill,
                "top_class_share": self.top_share}


def behaviour(predictions: np.ndarray, labels: np.ndarray, sigma: float) -> NoisyBehaviour:
    """:class:`NoisyBehaviour` of ``predictions`` ``(draws, inputs)`` against the inputs' ``labels``."""
    predictions = np.atleast_2d(predictions)
    labels = np.asarray(labels)
    values, counts = np.unique(predictions, return_counts=True)
    return NoisyBehaviour(
        accuracy=float(np.mean(predictions == labels[None])),
        chance=float(np.unique(labels, return_counts=True)[1].max() / len(labels)),
        top_class=int(values[counts.argmax()]),
        top_share=float(counts.max() / predictions.size),
        inputs=predictions.shape[1],
        draws=predictions.shape[0],
        sigma=float(sigma),
    )


def check_model(model: nn.Module, x: np.ndarray, y: np.ndarray, sigma: float, seed: int) -> NoisyBehaviour:
    """What ``model`` does on up to :data:`CHECK_EXAMPLES` of the held-out ``(x, y)`` under noise at ``sigma``.

    Parameters
    ----------
    model : torch.nn.Module
        The trained classifier.
    x, y : numpy.ndarray
        Held-out inputs and labels (e.g. the test split); of inputs decoded on access
        (ImageNet) only the checked ones are read, a batch at a time.
    sigma : float
        Noise level of the check (the training sigma).
    seed : int
        Seed of its noise.
    """
    chosen = check_indices(len(y))
    return behaviour(noisy_predictions(model, _Rows(x, chosen), sigma, seed), np.asarray(y)[chosen], sigma)


class _Rows:
    """Rows ``indices`` of an array-like, read a slice at a time."""

    def __init__(self, x: np.ndarray, indices: np.ndarray) -> None:
        self.x, self.indices = x, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, part: slice) -> np.ndarray:
        return np.asarray(self.x[self.indices[part]], dtype=np.float32)


__all__ = ["CHECK_DRAWS", "CHECK_EXAMPLES", "MIN_SKILL", "ONE_CLASS_SHARE", "NoisyBehaviour", "behaviour",
           "check_indices", "check_model", "noisy_predictions"]
