"""Randomized smoothing: Monte-Carlo counts, CERTIFY and PREDICT (Cohen et al., 2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + d) = c)`` with ``d ~ N(0, sigma^2 I)``.
:class:`Smooth` follows the structure of Cohen et al.'s ``core.py`` with two changes that
leave every decision rule intact:

* many inputs share one forward batch; noise is drawn on the model's device straight into a
  preallocated batch buffer and the class counts stay on the device until a whole call is
  done (one host transfer per call, none per batch);
* every draw comes from the generator :meth:`Smooth.noise_stream` gives for ``(seed, example index,
  phase)`` and is drawn in fixed blocks of :data:`NOISE_BLOCK` samples, so a result depends only
  on the seed and the example's index: not on the batch size, on which other examples share the
  call, or on the order in which examples are processed. Any subset of a data set certifies to
  exactly the numbers the full run gives for those examples. Each phase is a stream domain of
  its own (:mod:`catrs_plugin.utils.streams`), apart from every training stream.

:meth:`Smooth.certify_sequential` is sequential CERTIFY (:mod:`catrs_plugin.certify.sequential`):
the same streams and guarantee, each input stopping as soon as the radii asked about are decided.

Options that trade exactness for speed are off by default; with them off, the counts equal
those of a straightforward per-example, per-block loop over the same noise stream. ``fast=True``
turns on all of them at once (bfloat16 autocast, ``channels_last``, batch norm folded into the
convolutions, ``torch.compile`` with Inductor's freezing, CUDA graphs on CUDA, the largest batch
that fits; see :mod:`catrs_plugin.certify.fast_inference`); ``autocast_dtype``, ``channels_last`` and
``compile_mode`` turn on single pieces. The noise never changes, only the rounding of the
forward pass.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.certify.fast_inference import CompiledForward, Recipe, fast_recipe, padded_size, prepare_forward
from catrs_plugin.certify.sequential import DEFAULT_RADII, SequentialResult, certify_sequential
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound, top_two_pvalue
from catrs_plugin.certify.streams import (
    ESTIMATION,
    NOISE_BLOCK,
    PREDICTION,
    SELECTION,
    SOFT_LABELS,
    noise_generator,
)
from catrs_plugin.utils.validation import (
    check_alpha,
    check_autocast_dtype,
    check_inputs,
    check_positive_int,
    check_sigma,
)

#: Samples per forward pass when ``batch_size`` is not given and ``fast`` is off.
DEFAULT_BATCH = 1000

#: ``batch_size="auto"`` off CUDA: large enough to amortise per-batch overhead on a CPU.
CPU_AUTO_BATCH = 1000

#: ``batch_size="auto"`` on CUDA: share of the free memory the batch may take, and bounds in
#: whole :data:`NOISE_BLOCK` blocks, so that every choice is a multiple of the block.
AUTO_MEMORY_FRACTION = 0.5
AUTO_BATCH_BLOCKS = (1, 160)

#: Samples in the forward pass that measures per-sample memory for ``batch_size="auto"``.
AUTO_PROBE = 256


def auto_batch_size(per_sample_bytes: float, free_bytes: float) -> int:
    """The batch ``batch_size="auto"`` picks on CUDA: as many samples as fit in
    :data:`AUTO_MEMORY_FRACTION` of ``free_bytes`` at ``per_sample_bytes`` each, in whole
    :data:`NOISE_BLOCK` blocks, at least :data:`AUTO_BATCH_BLOCKS` ``[0]`` and at most ``[1]`` blocks."""
    blocks = int(free_bytes * AUTO_MEMORY_FRACTION / max(per_sample_bytes, 1.0)) // NOISE_BLOCK
    low, high = AUTO_BATCH_BLOCKS
    return min(max(blocks, low), high) * NOISE_BLOCK


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the block; the mode it had is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


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
    batch_size : int or "auto", optional
        Noisy samples per forward pass; samples of several inputs share a batch. ``"auto"``
        sizes the batch from the free GPU memory (a probe forward measures the memory one
        sample takes; see :func:`auto_batch_size`) and uses :data:`CPU_AUTO_BATCH` on other
        devices. Default: :data:`DEFAULT_BATCH`, or ``"auto"`` with ``fast``. Results do not
        depend on it. On the GPU an out-of-memory error halves the forward batch and retries
        the same samples, so a long run slows down instead of failing.
    seed : int
        Seed of every noise stream; the same seed gives the same counts.
    input_shape : sequence of int, optional
        Shape of one input (e.g. ``(3, 32, 32)``); inputs of another shape are rejected.
    fast : bool
        The fast path: a copy of the model with batch norm folded into the convolutions, in
        ``channels_last``, under bfloat16 autocast (or ``autocast_dtype``), compiled with
        ``torch.compile`` and Inductor's freezing, with CUDA graphs on CUDA; batch
        ``"auto"`` unless ``batch_size`` is given. Compilation happens once per model, input
        shape and process (its time is logged); see :mod:`catrs_plugin.certify.fast_inference`. The
        noise is the same as on the exact path, but the forward pass rounds differently, so a
        few noisy samples may change class and radii move slightly (docs/benchmarks.rst
        gives measured agreement). Off by default.
    autocast_dtype : torch.dtype, optional
        Run the base classifier under ``torch.autocast`` with this dtype (``torch.bfloat16`` or
        ``torch.float16``). Off by default: results then equal the fp32 computation exactly.
    channels_last : bool
        Forward a copy of the model, and each 4-d batch, in the ``channels_last`` memory
        format, which speeds up convolutions on recent GPUs, above all under autocast. The
        noise is unchanged, but convolution kernels may round differently. Off by default.
    compile_mode : str, optional
        Forward a copy of the model through ``torch.compile`` with this mode (``"default"``,
        ``"reduce-overhead"`` for CUDA graphs, ``"max-autotune"``), compiled once per model
        and input shape. Fused kernels may round differently. Off by default; not together
        with ``fast``, which compiles in its own way.
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
        batch_size: int | str | None = None,
        seed: int = 0,
        input_shape: Sequence[int] | None = None,
        fast: bool = False,
        autocast_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        compile_mode: str | None = None,
        progress: bool = False,
    ) -> None:
        self.base_classifier = base_classifier
        self.num_classes = check_positive_int(num_classes, "num_classes", minimum=2)
        self.sigma = check_sigma(sigma)
        if batch_size is None:
            batch_size = "auto" if fast else DEFAULT_BATCH
        if batch_size != "auto":
            batch_size = check_positive_int(batch_size, "batch_size")
        self.batch_size: int | str = batch_size
        self.seed = int(seed)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        check_autocast_dtype(autocast_dtype)
        if fast and compile_mode is not None:
            raise ValueError(f"pass either fast=True or compile_mode, not both (got compile_mode={compile_mode!r})")
        self.fast = bool(fast)
        self.progress = progress
        self.device = model_device(base_classifier)
        self.recipe = (
            fast_recipe(self.device, autocast_dtype)
            if fast
            else Recipe(autocast_dtype=autocast_dtype, channels_last=bool(channels_last), compile_mode=compile_mode)
        )
        self._forward = prepare_forward(base_classifier, self.recipe, self.device)
        self._resolved_batch: int | None = batch_size if isinstance(batch_size, int) else None
        self._forward_limit: int | None = None

    @property
    def compile_seconds(self) -> dict[tuple[int, ...], float]:
        """Seconds each input shape's compilation took (with its first forward pass), for compiled
        paths; shared by every ``Smooth`` of the same model and recipe. Empty when nothing is compiled."""
        return self._forward.compile_seconds if isinstance(self._forward, CompiledForward) else {}

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

    def certify_sequential(
        self,
        x: np.ndarray | torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        radii: Sequence[float] | None = DEFAULT_RADII,
        alpha_sequence: float | None = None,
        labels: Sequence[int] | np.ndarray | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
    ) -> SequentialResult:
        """Sequential CERTIFY: Cohen et al.'s guarantee from as few estimation samples as ``radii`` need.

        The same selection and estimation streams as :meth:`certify`; the estimation samples
        are checked after every block of :data:`NOISE_BLOCK` against an anytime-valid
        confidence sequence, and an input stops as soon as every radius of ``radii`` is
        decided (certified, or certainly not). See :mod:`catrs_plugin.certify.sequential` for
        the procedure and its guarantee. A stopped input's radius is a valid certificate that
        may be smaller than :meth:`certify`'s, so ACR is not comparable between the two;
        certified accuracy at the radii of ``radii`` is.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            Inputs of shape ``(examples, *input_shape)``.
        n0 : int
            Selection samples (>= 1).
        n : int
            The budget: at most this many estimation samples per input (>= 1).
        alpha : float
            Failure probability in (0, 1), split between the confidence sequence
            (``alpha_sequence``) and the exact Clopper-Pearson bound at ``n`` (the rest).
        radii : sequence of float, optional
            The radii to decide (>= 0; radius 0, the class-or-abstain decision, is always
            decided). Default :data:`~catrs_plugin.certify.sequential.DEFAULT_RADII`.
            ``None`` turns stopping off: every input draws ``n`` samples and the result is
            exactly :meth:`certify`'s at ``alpha``.
        alpha_sequence : float, optional
            The confidence sequence's share of ``alpha``, in (0, ``alpha``); default
            :data:`~catrs_plugin.certify.sequential.SEQUENCE_SHARE` times ``alpha``.
        labels : sequence of int, optional
            Evaluation only: the true class of each input. An input whose selected class is
            not its label stops after the selection (class ``cA``, radius 0, 0 samples): it
            is incorrect at every radius whatever the estimation would give.
        indices : sequence of int, optional
            Data-set index of each input, which seeds its noise (default ``0 .. examples-1``).

        Returns
        -------
        SequentialResult
            ``predictions`` (class per input, -1 for abstain), ``radii`` (certified L2 radius,
            0 on abstain) and ``samples`` (estimation samples each input used).
        """
        inputs = self._prepare(x)
        keys = self._indices(indices, len(inputs))
        with evaluating(self.base_classifier), torch.inference_mode(), self._refusing_nonfinite():
            return certify_sequential(self, inputs, keys, n0, n, alpha, radii, alpha_sequence, labels)

    def noise_stream(self, index: int, phase: int) -> torch.Generator:
        """The generator of example ``index``'s noise in ``phase``, on the model's device.

        :func:`~catrs_plugin.certify.streams.noise_generator` ``(seed, index, phase)``, a stream no
        training draw shares; every procedure draws it in blocks of :data:`NOISE_BLOCK` standard
        normal samples (a partial last block is the head of a full one).
        """
        return noise_generator(self.seed, index, phase, self.device)

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
        if self.recipe.copied:  # a copy of weights changed since the last call (also through .data) is rebuilt
            self._forward = prepare_forward(self.base_classifier, self.recipe, self.device)
        per_example = sum(n for _, n in phases)
        counts = torch.zeros(len(inputs) * len(phases) * self.num_classes, dtype=torch.long, device=self.device)
        with evaluating(self.base_classifier), torch.inference_mode(), tqdm(
            total=len(inputs) * per_example,
            unit="sample",
            unit_scale=True,
            desc="smoothing",
            disable=not self.progress,
        ) as bar:
            batch_size = self.resolve_batch_size(tuple(inputs.shape[1:]))
            ones = torch.ones(batch_size, dtype=torch.long, device=self.device)
            with self._refusing_nonfinite():
                for offsets, batch in self._batches(inputs, keys, phases, batch_size):
                    counts.index_add_(0, offsets + self.classify(batch), ones[: len(batch)])
                    bar.update(len(batch))
        return counts.view(len(inputs), len(phases), self.num_classes).cpu().numpy()

    @contextlib.contextmanager
    def _refusing_nonfinite(self) -> Iterator[None]:
        """Raise after the block if :meth:`classify` met NaN or infinite logits in it (see :meth:`_check_finite`).

        The flag is read once, at the end; an inner block (the selection of sequential CERTIFY) starts
        a new flag, which the outer block then reads."""
        self._nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        yield
        if bool(self._nonfinite):
            raise ValueError("base_classifier returned NaN or infinite logits on noisy inputs (are its weights "
                             "finite? a diverged training run leaves NaN weights); they are not counted as votes for "
                             "any class")

    def resolve_batch_size(self, input_shape: tuple[int, ...]) -> int:
        """The batch size in samples: ``batch_size`` itself, or what ``"auto"`` picks for this input shape.

        On CUDA, ``"auto"`` measures the memory of one forward pass of :data:`AUTO_PROBE` samples
        and takes as many samples as fit in :data:`AUTO_MEMORY_FRACTION` of the free memory, in
        whole :data:`NOISE_BLOCK` blocks within :data:`AUTO_BATCH_BLOCKS` (:func:`auto_batch_size`).
        The choice is made once and kept.
        """
        if self._resolved_batch is None:
            self._resolved_batch = (
                auto_batch_size(*self._memory_probe(input_shape)) if self.device.type == "cuda" else CPU_AUTO_BATCH
            )
        return self._resolved_batch

    def _memory_probe(self, input_shape: tuple[int, ...]) -> tuple[float, int]:
        """``(bytes per sample, free bytes)``: the peak memory of an uncompiled forward pass of
        :data:`AUTO_PROBE` samples, and the device's free memory."""
        device = self.device
        forward = self._forward.eager if isinstance(self._forward, CompiledForward) else self._forward
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with evaluating(self.base_classifier), torch.inference_mode():
            forward(torch.zeros((AUTO_PROBE, *input_shape), device=device))
        per_sample = (torch.cuda.max_memory_allocated(device) - before) / AUTO_PROBE
        free, _ = torch.cuda.mem_get_info(device)
        return per_sample, free

    def classify(self, batch: torch.Tensor) -> torch.Tensor:
        """Top class of each noisy sample of ``batch`` (call it in inference mode, the model in eval
        mode), forwarding in pieces no larger than the out-of-memory limit.

        A compiled forward pass gets a fixed set of batch sizes: a piece smaller than the full
        batch is padded with zeros (see :func:`~catrs_plugin.certify.fast_inference.padded_size`), whose
        predictions are dropped.
        """
        top = torch.empty(len(batch), dtype=torch.long, device=batch.device)
        static = isinstance(self._forward, CompiledForward)
        full = self._forward_limit or self._resolved_batch or len(batch)
        start = 0
        while start < len(batch):
            stop = min(len(batch), start + (self._forward_limit or len(batch)))
            piece = batch[start:stop]
            if static and (size := padded_size(len(piece), full)) > len(piece):
                piece = torch.cat([piece, piece.new_zeros((size - len(piece), *piece.shape[1:]))])
            try:
                logits = self._logits(piece)[: stop - start]
                self._check_finite(logits)
                top[start:stop] = logits.argmax(dim=1)
                start = stop
                continue
            except torch.OutOfMemoryError:
                if stop - start == 1:
                    raise
            # Outside the handler: its traceback no longer holds the failed pass's activations.
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._forward_limit = full = (stop - start) // 2
            warnings.warn(
                f"out of memory with {stop - start} samples per forward pass; retrying with "
                f"{self._forward_limit} (results do not change)",
                RuntimeWarning,
                stacklevel=2,
            )
        return top

    def _logits(self, batch: torch.Tensor) -> torch.Tensor:
        logits = self._forward(batch)
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(
                f"base_classifier returned shape {tuple(logits.shape)}, expected (batch, {self.num_classes}) logits"
            )
        return logits

    def _check_finite(self, logits: torch.Tensor) -> None:
        """Refuse NaN or infinite logits: their argmax is an arbitrary class (NaN counts for class 0), so
        counting them as votes would certify a broken model. The check is queued on the device and
        read once per call of :meth:`sample_counts` or :meth:`certify_sequential` (no synchronisation
        per batch)."""
        self._nonfinite |= ~torch.isfinite(logits).all()

    def _batches(
        self, inputs: torch.Tensor, keys: np.ndarray, phases: list[tuple[int, int]], batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(count offsets, noisy inputs)`` batches of ``batch_size`` samples (the last may be smaller).

        Each generator call writes a whole :data:`NOISE_BLOCK` into the buffer at the fill
        position; a partial last block simply leaves its tail to be overwritten. The buffer
        holds one block more than a batch, and samples beyond a full batch move to its front
        for the next one. Raw noise is scaled and shifted by its input only when its batch is
        complete: ``input + sigma * noise``, the same operations as a per-block computation.
        """
        shape = tuple(inputs.shape[1:])
        noise = torch.empty((batch_size + NOISE_BLOCK, *shape), device=self.device)
        offsets = torch.empty(batch_size + NOISE_BLOCK, dtype=torch.long, device=self.device)
        runs: list[list[int]] = []  # [start, stop, input slot, count offset] of buffer ranges
        filled = 0
        for slot, key in enumerate(keys):
            for p, (phase, n) in enumerate(phases):
                generator = self.noise_stream(int(key), phase)
                offset = (slot * len(phases) + p) * self.num_classes
                runs.append([filled, filled, slot, offset])
                for start in range(0, n, NOISE_BLOCK):
                    noise[filled : filled + NOISE_BLOCK].normal_(generator=generator)
                    filled += min(NOISE_BLOCK, n - start)
                    runs[-1][1] = filled
                    while filled >= batch_size:
                        yield self._finish(noise, offsets, inputs, runs, batch_size)
                        filled -= batch_size
                        runs = _shift(runs, batch_size)
                        carried = noise[batch_size : batch_size + filled]
                        noise[:filled] = carried.clone() if filled > batch_size else carried
                    if not runs:
                        runs.append([0, 0, slot, offset])
        if filled:
            yield self._finish(noise, offsets, inputs, runs, filled)

    def _finish(
        self, noise: torch.Tensor, offsets: torch.Tensor, inputs: torch.Tensor, runs: list[list[int]], size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn the first ``size`` raw noise samples into noisy inputs and their count offsets."""
        batch = noise[:size].mul_(self.sigma)
        for start, stop, slot, offset in runs:
            stop = min(stop, size)
            if stop > start:
                batch[start:stop].add_(inputs[slot])
                offsets[start:stop] = offset
        return offsets[:size], batch

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


def _shift(runs: list[list[int]], by: int) -> list[list[int]]:
    """Buffer ranges after the first ``by`` samples have been consumed (empty ranges dropped)."""
    return [[max(start - by, 0), stop - by, slot, offset] for start, stop, slot, offset in runs if stop > by]
