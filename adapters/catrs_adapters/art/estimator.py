"""``PyTorchCATRS``: ART's randomized-smoothing estimator, trained with CAT-RS and certified by our engine.

The class keeps the signatures and the meaning of ART's
:class:`~art.estimators.certification.randomized_smoothing.PyTorchRandomizedSmoothing`
(``sample_size`` is N0 of CERTIFY and the sample count of PREDICT, ``scale`` is sigma,
``alpha`` the failure probability; ``predict`` returns one-hot rows, all zeros on abstain),
and replaces the work behind them:

* ``certify`` and ``predict`` run on :class:`catrs_plugin.smoothing.Smooth`: many inputs per
  forward batch, noise drawn on the device from per-example seeded streams, exact
  Clopper-Pearson and binomial-test decisions;
* ``fit`` and ``fit_generator`` train with a registered method (CAT-RS by default) through
  :func:`catrs_plugin.training.train`;
* ``loss_gradient`` differentiates the smoothed soft classifier by default, so ART's attacks
  attack the smoothed classifier rather than the bare base classifier.

Noise is always added to the raw input, before ART's preprocessing (normalisation), which is
where certificates and attacks are stated. (ART's own ``loss_gradient`` with ``sampling=True``
adds it after preprocessing; with the default ``preprocessing=(0, 1)`` the two agree.)
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from torch import nn

from catrs_plugin.methods.base import Method
from catrs_plugin.registry import get_registry
from catrs_plugin.smoothing import PREDICTION, Smooth
from catrs_plugin.training import LoaderData, TensorData, TrainConfig, train
from catrs_plugin.validation import (
    check_alpha,
    check_inputs,
    check_labels,
    check_positive_int,
    check_sigma,
    check_soft_labels,
)

#: ``fit`` options passed on to :class:`catrs_plugin.training.TrainConfig`.
TRAIN_OPTIONS = ("lr", "momentum", "weight_decay", "lr_step_size", "gamma", "lr_drop", "checkpoint", "amp",
                 "channels_last", "fused")


class Preprocessed(nn.Module):
    """An ART estimator's raw model behind its preprocessing, as one module taking raw inputs.

    Parameters
    ----------
    estimator : art.estimators.classification.PyTorchClassifier
        Estimator whose ``model`` and preprocessing (``preprocessing`` and PyTorch preprocessing
        defences) are chained; gradients flow through both.
    fit : bool
        Apply the preprocessing steps meant for training (``True``) or for prediction.
    """

    def __init__(self, estimator: Any, fit: bool) -> None:
        super().__init__()
        if not estimator.all_framework_preprocessing:
            raise ValueError(
                "preprocessing_defences must all be PyTorch preprocessors (with a forward method) so that "
                "noise can be added before them on the device; got "
                f"{[type(p).__name__ for p in estimator.preprocessing_operations]}"
            )
        self.net = estimator.model
        self.estimator = estimator
        self.fit = fit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.estimator._apply_preprocessing(x, None, fit=self.fit, no_grad=False)
        return self.net(x)


def train_estimator(
    estimator: PyTorchRandomizedSmoothing,
    method: Method,
    hyperparameters: Mapping[str, Any],
    data: TensorData | LoaderData,
    nb_epochs: int,
    batch_size: int,
    verbose: bool,
    seed: int,
    options: Mapping[str, Any],
) -> list[dict[str, float]]:
    """Train an ART randomized-smoothing estimator's model in place at its ``scale``.

    ``options`` are :data:`TRAIN_OPTIONS`; ``lr``, ``momentum`` and ``weight_decay`` only apply
    when the estimator has no optimizer of its own. Returns the per-epoch history.
    """
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(f"unknown training option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(TRAIN_OPTIONS)}")
    config = TrainConfig(epochs=nb_epochs, batch_size=batch_size, seed=seed, progress=verbose, **options)
    return train(Preprocessed(estimator, fit=True), method, hyperparameters, estimator.scale, data, config,
                 optimizer=estimator.optimizer)


def tensor_data(
    estimator: PyTorchRandomizedSmoothing, x: np.ndarray, y: np.ndarray, soft_labels: np.ndarray | None
) -> TensorData:
    """Checked in-memory training data for ``estimator``: labels as indices (one-hot accepted)."""
    check_inputs(x, "x", input_shape=estimator.input_shape)
    labels = check_labels(y, estimator.nb_classes, len(x))
    soft = None if soft_labels is None else check_soft_labels(soft_labels, len(x), estimator.nb_classes)
    return TensorData(x, labels, soft)


def loader_data(generator: Any) -> LoaderData:
    """Training data from an ART ``PyTorchDataGenerator`` (its DataLoader is ``generator.iterator``)."""
    from art.data_generators import PyTorchDataGenerator

    if not isinstance(generator, PyTorchDataGenerator):
        raise ValueError(
            f"generator must be an art.data_generators.PyTorchDataGenerator wrapping a torch DataLoader, "
            f"got {type(generator).__name__}"
        )
    return LoaderData(generator.iterator)


class PyTorchCATRS(PyTorchRandomizedSmoothing):
    """ART randomized-smoothing estimator trained with CAT-RS (or another registered method).

    The constructor takes every argument of ART's ``PyTorchRandomizedSmoothing`` with the same
    meaning (``sample_size`` = N0 and PREDICT's sample count, ``scale`` = sigma, ``alpha`` =
    failure probability), plus:

    Parameters
    ----------
    method : str
        Registered training method used by ``fit`` (default ``"catrs"``; see ``catrs methods``).
    preset : str, optional
        Hyper-parameter preset of the method, looked up at sigma = ``scale`` (e.g. ``"paper"``).
    hyperparameters : mapping, optional
        Hyper-parameter overrides, applied after the preset.
    seed : int
        Seed of the certification noise streams (per example index) and of training.
    autocast_dtype : torch.dtype, optional
        Reduced-precision certification (``torch.bfloat16`` or ``torch.float16``); off by default.
    fast : bool
        Certify and predict on the fast path of :class:`catrs_plugin.smoothing.Smooth`
        (bfloat16, folded batch norm, ``torch.compile``, CUDA graphs on CUDA); off by default.

    Examples
    --------
    >>> from art.estimators.certification.randomized_smoothing import PyTorchCATRS  # doctest: +SKIP
    >>> smoothed = PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), (3, 32, 32), 10,
    ...                         sample_size=100, scale=0.25, alpha=0.001)  # doctest: +SKIP
    >>> smoothed.fit(x, y, nb_epochs=150, batch_size=256, soft_labels=soft)  # doctest: +SKIP
    >>> prediction, radius = smoothed.certify(x_test, n=100_000)  # doctest: +SKIP
    """

    estimator_params = PyTorchRandomizedSmoothing.estimator_params + ["method", "preset", "hyperparameters", "seed"]

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        input_shape: tuple[int, ...],
        nb_classes: int,
        optimizer: torch.optim.Optimizer | None = None,
        channels_first: bool = True,
        clip_values: Any = None,
        preprocessing_defences: Any = None,
        postprocessing_defences: Any = None,
        preprocessing: Any = (0.0, 1.0),
        device_type: str = "gpu",
        sample_size: int = 32,
        scale: float = 0.1,
        alpha: float = 0.001,
        *,
        method: str = "catrs",
        preset: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        seed: int = 0,
        autocast_dtype: torch.dtype | None = None,
        fast: bool = False,
    ) -> None:
        check_positive_int(sample_size, "sample_size")
        check_sigma(scale, "scale")
        check_alpha(alpha)
        check_positive_int(nb_classes, "nb_classes", minimum=2)
        self.method = method
        self.preset = preset
        self.hyperparameters = dict(hyperparameters or {})
        self.seed = int(seed)
        self.autocast_dtype = autocast_dtype
        self.fast = bool(fast)
        self._resolve_method(scale)
        super().__init__(
            model=model, loss=loss, input_shape=input_shape, nb_classes=nb_classes, optimizer=optimizer,
            channels_first=channels_first, clip_values=clip_values, preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences, preprocessing=preprocessing, device_type=device_type,
            sample_size=sample_size, scale=scale, alpha=alpha,
        )

    def _resolve_method(self, sigma: float) -> tuple[Method, dict[str, Any]]:
        """The training method and its hyper-parameters at ``sigma`` (unknown names raise ValueError)."""
        method = get_registry().method(self.method)
        return method, method.hyperparameters(sigma, self.preset, **self.hyperparameters)

    def smooth(self, batch_size: int | str = "auto", verbose: bool = False) -> Smooth:
        """The certification engine over this estimator's model and preprocessing."""
        return Smooth(
            Preprocessed(self, fit=False), self.nb_classes, self.scale, batch_size=batch_size, seed=self.seed,
            input_shape=self.input_shape, autocast_dtype=self.autocast_dtype, fast=self.fast, progress=verbose,
        )

    def fit(  # type: ignore[override]
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 128,
        nb_epochs: int = 10,
        verbose: bool = False,
        soft_labels: np.ndarray | None = None,
        **options: Any,
    ) -> None:
        """Train the base classifier on ``(x, y)`` with the estimator's method at sigma = ``scale``.

        Parameters
        ----------
        x : numpy.ndarray
            Training inputs ``(n, *input_shape)``, raw (before ART's preprocessing).
        y : numpy.ndarray
            Class indices ``(n,)`` or one-hot rows ``(n, nb_classes)``.
        batch_size : int
            Loader batch size, split into the method's chunks (``num_noise_vec`` for CAT-RS).
        nb_epochs : int
            Epochs to train.
        verbose : bool
            Show progress bars.
        soft_labels : numpy.ndarray, optional
            ``(n, nb_classes)`` smoothed teacher predictions; required by CAT-RS (see
            :func:`catrs_plugin.smoothed_soft_labels` or ``CATRSTrainer.fit(teacher=...)``).
        **options
            :class:`~catrs_plugin.training.TrainConfig` settings: ``lr``, ``momentum``,
            ``weight_decay`` (used when the estimator has no optimizer), ``lr_step_size``,
            ``gamma``, ``lr_drop``, ``checkpoint`` (resumable), ``amp``, ``channels_last``, ``fused``.
        """
        method, hyperparameters = self._resolve_method(self.scale)
        train_estimator(self, method, hyperparameters, tensor_data(self, x, y, soft_labels), nb_epochs, batch_size,
                        verbose, self.seed, options)

    def fit_generator(self, generator: Any, nb_epochs: int = 20, verbose: bool = False, **options: Any) -> None:
        """Train from an ART ``PyTorchDataGenerator`` (any torch DataLoader), for data too large for memory.

        The loader yields ``(x, y)`` or, for CAT-RS, ``(x, y, soft_labels)`` batches; its own
        batch size applies. ``options`` are those of :meth:`fit`.
        """
        method, hyperparameters = self._resolve_method(self.scale)
        train_estimator(self, method, hyperparameters, loader_data(generator), nb_epochs, generator.batch_size,
                        verbose, self.seed, options)

    def predict(  # type: ignore[override]
        self,
        x: np.ndarray,
        batch_size: int = 128,
        verbose: bool = False,
        is_abstain: bool = True,
        indices: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Cohen et al.'s PREDICT with ``sample_size`` samples, as one-hot rows (ART's format).

        Parameters
        ----------
        x : numpy.ndarray
            Inputs ``(n, *input_shape)``.
        batch_size : int
            Noisy samples per forward pass (results do not depend on it).
        verbose : bool
            Show a progress bar.
        is_abstain : bool
            With ``True`` an input whose top-two binomial test has p-value above ``alpha`` gets
            an all-zero row; with ``False`` the most frequent class is returned regardless.
        indices : sequence of int, optional
            Data-set index of each input, which seeds its noise (default ``0 .. n-1``).

        Returns
        -------
        numpy.ndarray
            ``(n, nb_classes)`` one-hot rows.
        """
        smooth = self.smooth(batch_size, verbose)
        if is_abstain:
            classes = smooth.predict(x, self.sample_size, self.alpha, indices)
        else:
            classes = smooth.sample_counts(x, {PREDICTION: self.sample_size}, indices)[:, 0].argmax(axis=1)
        rows = np.zeros((len(classes), self.nb_classes), dtype=np.float32)
        chosen = classes >= 0
        rows[np.flatnonzero(chosen), classes[chosen]] = 1.0
        return rows

    def certify(  # type: ignore[override]
        self,
        x: np.ndarray,
        n: int,
        batch_size: int | None = None,
        indices: Sequence[int] | None = None,
        verbose: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cohen et al.'s CERTIFY with N0 = ``sample_size`` and N = ``n``.

        Parameters
        ----------
        x : numpy.ndarray
            Inputs ``(examples, *input_shape)``.
        n : int
            Estimation samples per input.
        batch_size : int, optional
            Noisy samples per forward pass, as in ART; ``None`` (our default, ART's is 32)
            sizes it from the free memory. Results do not depend on it.
        indices : sequence of int, optional
            Data-set index of each input, which seeds its noise (default ``0 .. examples-1``).
        verbose : bool
            Show a progress bar.

        Returns
        -------
        prediction : numpy.ndarray
            Class per input, -1 for abstain.
        radius : numpy.ndarray
            Certified L2 radius per input, 0 on abstain.
        """
        smooth = self.smooth("auto" if batch_size is None else batch_size, verbose)
        return smooth.certify(x, self.sample_size, n, self.alpha, indices)

    def loss_gradient(  # type: ignore[override]
        self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, training_mode: bool = False, **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        """Gradient of the smoothed soft classifier's cross-entropy with respect to ``x``.

        The loss is ``-log(mean_i softmax(f(x + d_i))_y)`` over ``sample_size`` Gaussian noises
        (Salman et al. 2019), so ART's attacks target the smoothed classifier. Pass
        ``sampling=False`` for ART's base-classifier gradient. Returns the type it is given
        (numpy array or tensor).
        """
        if not kwargs.pop("sampling", True):
            return super().loss_gradient(x, y, training_mode=training_mode, sampling=False, **kwargs)
        as_tensor = isinstance(x, torch.Tensor)
        inputs = torch.as_tensor(x, dtype=torch.float32, device=self._device).detach().requires_grad_(True)
        labels = torch.as_tensor(check_labels(y, self.nb_classes, len(inputs)), device=self._device)
        module = Preprocessed(self, fit=False).train(training_mode)
        noisy = inputs.repeat_interleave(self.sample_size, 0)
        noisy = noisy + torch.randn_like(noisy) * self.scale
        probs = F.softmax(module(noisy), dim=1).view(len(inputs), self.sample_size, -1).mean(dim=1)
        loss = F.nll_loss(torch.log(probs.clamp_min(1e-20)), labels)
        (gradient,) = torch.autograd.grad(loss, inputs)
        return gradient if as_tensor else gradient.cpu().numpy()
