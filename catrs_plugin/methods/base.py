"""What every training method provides: a loss on one batch, defaults, paper presets, the
types and ranges of its hyper-parameters and, optionally, a data schedule: which training
examples each epoch draws, and how often (:class:`DataSchedule`, :class:`ScheduleHook`)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Protocol

import numpy as np
import torch
from torch import nn


@dataclass
class TrainBatch:
    """One optimizer step's data, handed to a method's loss.

    Attributes
    ----------
    inputs : torch.Tensor
        Clean inputs in [0, 1], shape ``(B, *input_shape)``, on the model's device.
    targets : torch.Tensor
        Class indices, shape ``(B,)``.
    soft_labels : torch.Tensor or None
        Per-example class probabilities ``(B, C)`` for methods that need them (CAT-RS).
    sigma : float
        Training noise level.
    generator : torch.Generator
        Source of every random draw the loss makes (noise, Binomial samples), on the device.
    epoch : int
        Current epoch (0-based), for schedules such as warm-ups.
    correct, observed
        What :meth:`observe` counted: predictions equal to their target (a tensor on the device,
        or None when the loss observed nothing) and predictions seen. The training loop sums them
        into the epoch's accuracy on the training batches.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    soft_labels: torch.Tensor | None
    sigma: float
    generator: torch.Generator
    epoch: int = 0
    correct: torch.Tensor | None = field(default=None, init=False, repr=False)
    observed: int = field(default=0, init=False, repr=False)

    def gaussian(self, *leading: int) -> torch.Tensor:
        """Draw ``N(0, sigma^2 I)`` noise of shape ``(*leading, *inputs.shape)`` from the generator."""
        shape = (*leading, *self.inputs.shape)
        return torch.randn(shape, generator=self.generator, device=self.inputs.device) * self.sigma

    def observe(self, logits: torch.Tensor) -> None:
        """Count the predictions of the logits the loss trains on for the epoch's training accuracy.

        ``logits`` are ``(B, C)`` or ``(M, B, C)`` (M noisy copies of the batch, copy-major); each row
        counts as correct when its argmax is its example's target. Nothing is synchronised with the
        host, and nothing the loss computes changes. A method whose loss never calls it reports no
        training accuracy.
        """
        predicted = logits.detach().argmax(dim=-1).reshape(-1, len(self.targets))
        correct = (predicted == self.targets).sum()
        self.correct = correct if self.correct is None else self.correct + correct
        self.observed += predicted.numel()


LossFunction = Callable[..., torch.Tensor]

#: What a loss calls with the logits it trains on (:meth:`TrainBatch.observe`).
Observer = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class DataSchedule:
    """Which training examples an epoch draws, and how often.

    Attributes
    ----------
    indices : numpy.ndarray
        The examples the epoch draws from: distinct indices into the whole training set
        (``int64``). Soft labels follow their examples.
    weights : numpy.ndarray or None
        One positive sampling weight per entry of ``indices`` (``float64``): the epoch draws
        ``draws`` examples with replacement, each with probability proportional to its weight
        (as ``torch.utils.data.WeightedRandomSampler`` does). ``None``: every example equally.
    draws : int or None
        Examples per epoch, drawn with replacement. ``None`` (only without ``weights``): the
        epoch visits every example of ``indices`` once, in a shuffled order, as plain training does.
    """

    indices: np.ndarray
    weights: np.ndarray | None = None
    draws: int | None = None

    @classmethod
    def everything(cls, count: int) -> "DataSchedule":
        """Every one of ``count`` examples once per epoch: the schedule of a method without a hook."""
        return cls(np.arange(count, dtype=np.int64))

    def check(self, count: int, name: str = "data schedule") -> "DataSchedule":
        """This schedule with canonical dtypes, if it is valid for a training set of ``count`` examples.

        Raises
        ------
        ValueError
            Naming ``name`` and what is wrong (empty, an index out of range or repeated, weights of
            another length or not finite and positive, ``draws`` below 1 or missing with weights).
        """
        indices = np.asarray(self.indices)
        if indices.ndim != 1 or not len(indices) or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"{name}: indices must be a non-empty 1-d array of integers, got shape {indices.shape} "
                             f"of {indices.dtype}")
        if indices.min() < 0 or indices.max() >= count or len(np.unique(indices)) != len(indices):
            raise ValueError(f"{name}: indices must be distinct and lie in [0, {count}), got {len(indices)} indices "
                             f"in [{indices.min()}, {indices.max()}]")
        weights = None if self.weights is None else np.asarray(self.weights, dtype=np.float64)
        if weights is not None and (weights.shape != indices.shape or not np.all(np.isfinite(weights))
                                    or not np.all(weights > 0)):
            raise ValueError(f"{name}: weights must be finite, > 0 and one per index ({len(indices)}), got shape "
                             f"{weights.shape} in [{weights.min(initial=np.inf):g}, {weights.max(initial=-np.inf):g}]")
        if (self.draws is None and weights is not None) or (self.draws is not None and not (
                isinstance(self.draws, numbers.Integral) and self.draws >= 1)):
            raise ValueError(f"{name}: draws must be an integer >= 1 (and is needed with weights), got {self.draws!r}")
        draws = None if self.draws is None else int(self.draws)
        return DataSchedule(indices.astype(np.int64), weights, draws)


@dataclass(frozen=True)
class EpochView:
    """What a method's data schedule sees at the start of an epoch.

    Attributes
    ----------
    model : torch.nn.Module
        The model being trained (not wrapped for DDP or ``torch.compile``), on its device, as the
        previous epoch left it. A hook that evaluates it should do so in eval mode without
        gradients (:func:`catrs_plugin.certify.smoothing.evaluating`, ``torch.no_grad``).
    epoch : int
        The 0-based epoch about to start. (The run's length is not part of the view: a schedule must
        not depend on it, so that a longer run continues a shorter one's checkpoint exactly.)
    sigma : float
        Training noise level.
    size : int
        Examples in the whole training set.
    examples : callable
        ``examples(indices, batch_size)`` yields ``(x, y)`` batches (tensors on the model's
        device) of the training examples ``indices``, in that order, as training sees them: with
        the data set's training augmentation, one view per example drawn from a generator
        seeded by ``(seed, epoch)``.
    generator : torch.Generator
        Source of every random draw the hook makes (noise), on the model's device, seeded by
        ``(seed, epoch)``.
    """

    model: nn.Module
    epoch: int
    sigma: float
    size: int
    examples: Callable[[np.ndarray, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]
    generator: torch.Generator

    def gaussian(self, copies: int, like: torch.Tensor) -> torch.Tensor:
        """Draw ``N(0, sigma^2 I)`` noise for ``copies`` noisy copies of the batch ``like``: shape
        ``(copies, *like.shape)``, in its dtype and on its device, from the generator."""
        return torch.randn((copies, *like.shape), generator=self.generator, device=like.device,
                           dtype=like.dtype) * self.sigma


class ScheduleHook(Protocol):
    """The hook specification of :attr:`Method.schedule`: which examples the next epoch trains on.

    The training loop calls it at the start of every epoch (a resumed run too) with the
    schedule in force, :meth:`DataSchedule.everything` before the first change, and trains the
    epoch on the schedule it returns. That schedule is kept in the checkpoint, so a resumed
    run continues with the examples and weights an uninterrupted one would have; under DDP
    every rank calls the hook and then takes rank 0's schedule, so every rank draws the same
    examples. The hook receives every hyper-parameter of the method as keywords (take the ones
    it uses and ``**others``) and must draw its random numbers from ``view.generator`` only.
    """

    def __call__(self, view: EpochView, current: DataSchedule, **hyperparameters: Any) -> DataSchedule: ...


@dataclass(frozen=True)
class HyperParameter:
    """Type and range of one hyper-parameter, checked whenever a value is set.

    Attributes
    ----------
    kind : type
        ``int``, ``float`` or ``bool`` (an integer is accepted for a ``float``).
    minimum : float, optional
        Smallest accepted value.
    positive : bool
        Values must also be > ``minimum`` (strictly), e.g. a temperature > 0.
    optional : bool
        ``None`` is accepted too (e.g. a warm-up that is off).
    """

    kind: type
    minimum: float | None = None
    positive: bool = False
    optional: bool = False

    def describe(self) -> str:
        """The accepted values in words, e.g. ``"an integer >= 1 or None"``."""
        if self.kind is bool:
            text = "True or False"
        else:
            text = "an integer" if self.kind is int else "a number"
            if self.minimum is not None:
                text += f" {'>' if self.positive else '>='} {self.minimum:g}"
        return f"{text} or None" if self.optional else text

    def check(self, value: Any, name: str) -> Any:
        """``value`` converted to :attr:`kind` (``"true"``/``"false"`` for a ``bool``) if it is accepted.

        Raises
        ------
        ValueError
            Naming ``name``, the accepted values and ``value``.
        """
        if value is None and self.optional:
            return None
        converted = self._convert(value)
        if converted is None or (self.minimum is not None and (
                converted < self.minimum or (self.positive and converted == self.minimum))):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        return converted

    def _convert(self, value: Any) -> Any:
        if self.kind is bool:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            return bool(value) if isinstance(value, (bool, np.bool_)) else None
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            return None
        if self.kind is int:
            return int(value) if isinstance(value, numbers.Integral) else None
        return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class Method:
    """A registered training method.

    Attributes
    ----------
    name : str
        Registry name (``catrs``, ``gaussian``, ...).
    paper : str
        Citation of the paper the method implements.
    loss : callable
        ``loss(model, batch: TrainBatch, **hyperparameters) -> torch.Tensor`` (a scalar).
    defaults : mapping
        Every hyper-parameter the loss takes, with its default.
    presets : mapping
        ``{preset name: {sigma: {hyper-parameter: value}}}``, e.g. the paper's CIFAR-10 settings.
    needs_soft_labels : bool
        Whether the loss reads ``batch.soft_labels``.
    chunks : str or None
        Name of the hyper-parameter that splits each loader batch into that many optimizer
        steps (the reference code does this for M-noise methods), or None for one step.
    description : str
        One line for ``catrs methods``.
    declared : mapping
        ``{hyper-parameter: HyperParameter}``: the type and range of each; values are checked
        against them when they are resolved. Hyper-parameters without a declaration (e.g. of
        third-party methods written before declarations existed) are not checked.
    training : mapping
        ``{preset name: {TrainConfig field: value}}``: optimiser settings a preset brings where
        the method's reference trains differently from the shared recipe (e.g. MACER's own
        learning rate 0.01, weight decay 5e-4 and 440 epochs); see :meth:`train_settings`.
    schedule : ScheduleHook or None
        Chooses, at the start of every epoch, which training examples the epoch draws and how
        often (e.g. discarding hard examples, reweighting the others); see :class:`ScheduleHook`.
        ``None`` (most methods): every example once per epoch.
    """

    name: str
    paper: str
    loss: LossFunction
    defaults: Mapping[str, Any]
    presets: Mapping[str, Mapping[float, Mapping[str, Any]]] = field(default_factory=dict)
    needs_soft_labels: bool = False
    chunks: str | None = None
    description: str = ""
    declared: Mapping[str, HyperParameter] = field(default_factory=dict)
    training: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    schedule: ScheduleHook | None = None

    def check_hyperparameter(self, name: str, value: Any, label: str | None = None) -> Any:
        """``value`` checked against the declaration of hyper-parameter ``name`` (unchecked without one).

        Raises
        ------
        ValueError
            If ``name`` is not a hyper-parameter of the method, or ``value`` is of the wrong type
            or out of range; the message starts with ``label`` (default: the method and name).
        """
        if name not in self.defaults:
            raise ValueError(
                f"method {self.name!r} has no hyper-parameter {name!r}; "
                f"valid: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        declaration = self.declared.get(name)
        return value if declaration is None else declaration.check(
            value, label or f"hyper-parameter {name!r} of method {self.name!r}")

    def hyperparameters(
        self, sigma: float | None = None, preset: str | None = None, **overrides: Any
    ) -> dict[str, Any]:
        """Resolve hyper-parameters: defaults, then the preset's values for ``sigma``, then overrides.

        Raises
        ------
        ValueError
            On an unknown hyper-parameter, preset or preset sigma (the message lists the valid
            ones), or a value of the wrong type or out of its declared range.
        """
        unknown = sorted(set(overrides) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no hyper-parameter {', '.join(map(repr, unknown))}; "
                f"valid: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        params = dict(self.defaults)
        if preset is not None:
            if preset not in self.presets:
                raise ValueError(
                    f"method {self.name!r} has no preset {preset!r}; valid: {', '.join(sorted(self.presets)) or '(none)'}"
                )
            table = self.presets[preset]
            if sigma is None or float(sigma) not in table:
                raise ValueError(
                    f"preset {preset!r} of method {self.name!r} is defined for sigma in "
                    f"{{{', '.join(str(s) for s in sorted(table))}}}, got {sigma!r}"
                )
            params.update(table[float(sigma)])
        params.update(overrides)
        return {name: self.check_hyperparameter(name, value) for name, value in params.items()}

    def train_settings(self, preset: str | None) -> dict[str, Any]:
        """The :class:`~catrs_plugin.train.loop.TrainConfig` fields preset ``preset`` sets (empty if none)."""
        return dict(self.training.get(preset, {})) if preset is not None else {}

    def check_batch(self, batch_size: int, hyperparameters: Mapping[str, Any], label: str = "batch_size") -> None:
        """Refuse a loader batch of fewer examples than the method's :attr:`chunks` optimizer steps.

        The reference code splits every loader batch into ``chunks`` steps (``num_noise_vec``
        for CAT-RS); with fewer examples than steps no step would be taken and training would
        end with the initial weights, as if it had succeeded.

        Raises
        ------
        ValueError
            Naming ``label`` (e.g. ``--batch``), the method's chunk count and what to change.
        """
        chunks = int(hyperparameters[self.chunks]) if self.chunks else 1
        if int(batch_size) < chunks:
            raise ValueError(
                f"{label} {batch_size} is smaller than {self.chunks}={chunks}: method {self.name!r} splits every "
                f"loader batch into {chunks} optimizer steps, so not one step would be taken; give batches of at "
                f"least {chunks} examples or a smaller {self.chunks}"
            )

    def compute_loss(self, model: nn.Module, batch: TrainBatch, hyperparameters: Mapping[str, Any]) -> torch.Tensor:
        """Call the loss, checking that soft labels are there when the method needs them."""
        if self.needs_soft_labels and batch.soft_labels is None:
            raise ValueError(
                f"method {self.name!r} needs soft labels: pass soft_labels (an array of shape "
                "(examples, classes)), e.g. from catrs_plugin.smoothed_soft_labels(teacher, x, sigma)"
            )
        return self.loss(model, batch, **hyperparameters)
