"""What every training method provides: a loss on one batch, defaults, paper presets and the
types and ranges of its hyper-parameters."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

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
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    soft_labels: torch.Tensor | None
    sigma: float
    generator: torch.Generator
    epoch: int = 0

    def gaussian(self, *leading: int) -> torch.Tensor:
        """Draw ``N(0, sigma^2 I)`` noise of shape ``(*leading, *inputs.shape)`` from the generator."""
        shape = (*leading, *self.inputs.shape)
        return torch.randn(shape, generator=self.generator, device=self.inputs.device) * self.sigma


LossFunction = Callable[..., torch.Tensor]


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
