"""Randomized smoothing: Monte-Carlo counts, CERTIFY and PREDICT (Cohen et al., 2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + d) = c)`` with ``d ~ N(0, sigma^2 I)``.
:class:`Smooth` follows the structure of Cohen et al.'s ``core.py`` with two changes that
leave every decision rule intact:

* many inputs share one forward batch, noise is drawn on the model's device and the class
  counts stay on the device until a whole call is done;
* every draw comes from a generator seeded by ``(seed, example index, phase)`` and drawn in
  fixed blocks of :data:`NOISE_BLOCK` samples, so a result depends only on the seed and the
  example's index: not on the batch size, on which other examples share the call, or on the
  order in which examples are processed. Any subset of a data set certifies to exactly the
  numbers the full run gives for those examples.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.stats import certified_radius, lower_confidence_bound, top_two_pvalue
from catrs_plugin.validation import (
    check_alpha,
    check_inputs,
    check_positive_int,
    check_sigma,
)

#: Phase identifiers: each phase of an example draws from its own noise stream.
SELECTION, ESTIMATION, PREDICTION, SOFT_LABELS = 0, 1, 2, 3

#: Samples drawn per generator call. Fixing it makes the stream independent of the batch size.
NOISE_BLOCK = 100


def derive_seed(*keys: int) -> int:
    """Mix integer keys (e.g. ``seed, index, phase``) into one 63-bit generator seed."""
    words = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return ((int(words[0]) << 32) | int(words[1])) & (2**63 - 1)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


class Smooth:
    """A smoothed classifier built on a base classifier ``f`` returning logits.

    Parameters
    ----------
    base_classifier : torch.nn.Module
        Maps a batch of inputs (pixels in [0, 1]) to logits of shape ``(batch, num_classes)``.
    num_classes : int
        Number of classes.
    sigma : float
        Noise level, the standard deviation of the Gaussian noise (> 0).
    batch_size : int
        Noisy samples per forward pass; samples of several inputs share a batch.
    seed : int
        Seed of every noise stream; the same seed gives the same counts.
    input_shape : sequence of int, optional
        Shape of one input (e.g. ``(3, 32, 32)``); inputs of another shape are rejected.
    autocast_dtype : torch.dtype, optional
        Run the base classifier under ``torch.autocast`` with this dtype (``torch.bfloat16`` or
        ``torch.float16``). Off by default: results then equal the fp32 computation exactly.
    progress : bool
        Show a progress bar over the noisy samples.
    """

    ABSTAIN = -1

    def __init__(
        self,
        base_classifier: nn.Module,
        num_classes: int,
        sigma: float,
        *,
        batch_size: int = 1000,
        seed: int = 0,
        input_shape: Sequence[int] | None = None,
        autocast_dtype: torch.dtype | None = None,
        progress: bool = False,
    ) -> None:
        self.base_classifier = base_classifier
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
        self.sigma = check_sigma(sigma)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.seed = int(seed)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.autocast_dtype = autocast_dtype
        self.progress = progress
        self.device = model_device(base_classifier)

    def certify(
        self,
        x: np.ndarray | torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cohen et al.'s CERTIFY for each input.

        Selects the top class ``cA`` from ``n0`` samples, estimates ``pA`` from ``n`` fresh
        samples, and returns ``cA`` with radius ``sigma * PhiInverse(pA_lower)`` where
        ``pA_lower`` is the one-sided ``(1 - alpha)`` Clopper-Pearson lower bound; abstains
        (class -1, radius 0) when ``pA_lower < 1/2``.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            Inputs of shape ``(examples, *input_shape)``.
        n0 : int
            Selection samples (>= 1).
        n : int
            Estimation samples (>= 1).
        alpha : float
            Failure probability in (0, 1).
        indices : sequence of int, optional
            Data-set index of each input, which seeds its noise (default ``0 .. examples-1``).

        Returns
        -------
        predictions : numpy.ndarray
            Predicted class per input, -1 for abstain.
        radii : numpy.ndarray
            Certified L2 radius per input (0 on abstain).
        """
        n0 = check_positive_int(n0, "n0")
        n = check_positive_int(n, "n")
        alpha = check_alpha(alpha)
        counts = self.sample_counts(x, {SELECTION: n0, ESTIMATION: n}, indices)
        selected = counts[:, 0].argmax(axis=1)
        n_a = counts[:, 1][np.arange(len(selected)), selected]
        p_lower = lower_confidence_bound(n_a, n, alpha)
        abstain = p_lower < 0.5
        predictions = np.where(abstain, self.ABSTAIN, selected).astype(np.int64)
        radii = np.where(abstain, 0.0, certified_radius(p_lower, self.sigma))
        return predictions, radii

    def predict(
        self,
        x: np.ndarray | torch.Tensor,
        n: int,
        alpha: float,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Cohen et al.'s PREDICT for each input.

        Counts the classes of ``n`` noisy samples and returns the top class unless the two-sided
        binomial test of the top two counts has p-value above ``alpha`` (then -1, abstain).
        The smoothed prediction is then wrong with probability at most ``alpha``.
        """
        n = check_positive_int(n, "n")
        alpha = check_alpha(alpha)
        counts = self.sample_counts(x, {PREDICTION: n}, indices)[:, 0]
        order = np.argsort(-counts, axis=1, kind="stable")
        rows = np.arange(len(counts))
        top1, top2 = counts[rows, order[:, 0]], counts[rows, order[:, 1]]
        pvalues = np.array([top_two_pvalue(a, b) for a, b in zip(top1, top2)])
        return np.where(pvalues > alpha, self.ABSTAIN, order[:, 0]).astype(np.int64)

    def class_frequencies(
        self,
        x: np.ndarray | torch.Tensor,
        n: int,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Fraction of ``n`` noisy samples assigned to each class: the smoothed soft prediction.

        This is what CAT-RS uses as soft labels (rows sum to 1), drawn from its own stream.
        """
        n = check_positive_int(n, "n")
        counts = self.sample_counts(x, {SOFT_LABELS: n}, indices)[:, 0]
        return (counts / n).astype(np.float32)

    def sample_counts(
        self,
        x: np.ndarray | torch.Tensor,
        plan: Mapping[int, int],
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Count the base classifier's predictions on noisy copies of every input.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            Inputs of shape ``(examples, *input_shape)``.
        plan : mapping of int to int
            Samples to draw per phase (e.g. ``{SELECTION: n0, ESTIMATION: n}``); each phase of
            each example has its own noise stream.
        indices : sequence of int, optional
            Data-set index of each input (default ``0 .. examples-1``).

        Returns
        -------
        numpy.ndarray
            Counts of shape ``(examples, len(plan), num_classes)``.
        """
        inputs = self._prepare(x)
        keys = self._indices(indices, len(inputs))
        phases = [(int(phase), check_positive_int(n, "n")) for phase, n in plan.items()]
        per_example = sum(n for _, n in phases)
        flat = torch.zeros(len(inputs) * len(phases) * self.num_classes, dtype=torch.long, device=self.device)
        model = self.base_classifier
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode(), tqdm(
                total=len(inputs) * per_example,
                unit="sample",
                unit_scale=True,
                desc="smoothing",
                disable=not self.progress,
            ) as bar:
                for rows, batch in self._batches(inputs, keys, phases):
                    with torch.autocast(
                        device_type=self.device.type,
                        dtype=self.autocast_dtype or torch.bfloat16,
                        enabled=self.autocast_dtype is not None,
                    ):
                        logits = model(batch)
                    if logits.ndim != 2 or logits.shape[1] != self.num_classes:
                        raise ValueError(
                            f"base_classifier returned shape {tuple(logits.shape)}, expected "
                            f"(batch, {self.num_classes}) logits"
                        )
                    flat.index_add_(0, rows * self.num_classes + logits.argmax(dim=1), torch.ones_like(rows))
                    bar.update(len(rows))
        finally:
            model.train(was_training)
        return flat.view(len(inputs), len(phases), self.num_classes).cpu().numpy()

    def _batches(
        self, inputs: torch.Tensor, keys: np.ndarray, phases: list[tuple[int, int]]
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(count rows, noisy inputs)`` batches of ``batch_size`` samples (the last may be smaller)."""
        parts: list[torch.Tensor] = []
        rows: list[torch.Tensor] = []
        filled = 0
        shape = tuple(inputs.shape[1:])
        for slot, key in enumerate(keys):
            for p, (phase, n) in enumerate(phases):
                generator = torch.Generator(device=self.device)
                generator.manual_seed(derive_seed(self.seed, int(key), phase))
                row = slot * len(phases) + p
                for start in range(0, n, NOISE_BLOCK):
                    noise = torch.randn(
                        (NOISE_BLOCK, *shape), generator=generator, device=self.device
                    )[: min(NOISE_BLOCK, n - start)]
                    block = inputs[slot] + noise * self.sigma
                    while len(block):
                        take = min(len(block), self.batch_size - filled)
                        parts.append(block[:take])
                        rows.append(torch.full((take,), row, dtype=torch.long, device=self.device))
                        filled += take
                        block = block[take:]
                        if filled == self.batch_size:
                            yield torch.cat(rows), torch.cat(parts)
                            parts, rows, filled = [], [], 0
        if filled:
            yield torch.cat(rows), torch.cat(parts)

    def _prepare(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        check_inputs(x, "x", input_shape=self.input_shape)
        tensor = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        return tensor.detach().to(device=self.device, dtype=torch.float32)

    @staticmethod
    def _indices(indices: Sequence[int] | np.ndarray | None, count: int) -> np.ndarray:
        if indices is None:
            return np.arange(count)
        keys = np.asarray(indices)
        if keys.shape != (count,) or keys.dtype.kind not in "iu" or (count and keys.min() < 0):
            raise ValueError(
                f"indices must hold {count} non-negative integers (one data-set index per input), "
                f"got shape {keys.shape} and dtype {keys.dtype}"
            )
        return keys
