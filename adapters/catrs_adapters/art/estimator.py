"""``PyTorchCATRS``: ART's randomized-smoothing estimator, trained with CAT-RS and certified by our engine.

The class keeps the signatures and the meaning of ART's
:class:`~art.estimators.certification.randomized_smoothing.PyTorchRandomizedSmoothing`
(``sample_size`` is N0 of CERTIFY and the sample count of PREDICT, ``scale`` is sigma,
``alpha`` the failure probability; ``predict`` returns one-hot rows, all zeros on abstain),
and replaces the work behind them:

* ``certify`` and ``predict`` run on :class:`catrs_plugin.certify.smoothing.Smooth`: many inputs per
  forward batch, noise drawn on the device from per-example seeded streams, exact
  Clopper-Pearson and binomial-test decisions; ``certify(..., sequential=True)`` is sequential
  CERTIFY (:mod:`catrs_plugin.certify.sequential`), the same guarantee from fewer samples;
* ``fit`` and ``fit_generator`` take ART's arguments (``training_mode``, ``drop_last``, the
  caller's ``scheduler``, ``validation_data``) and train with a registered method (CAT-RS by
  default) through :func:`catrs_plugin.train.loop.train` (see :mod:`catrs_adapters.art.fitting`);
  ART's ``fit(x, y)`` without soft labels runs the paper's whole CAT-RS recipe (a Gaussian
  teacher, its smoothed predictions, then CAT-RS);
* ``loss_gradient``, ``class_gradient``, ``compute_loss`` and, for ART's attacks, ``predict``
  are those of the smoothed soft classifier (:class:`~catrs_adapters.art.modules.SmoothedSoft`),
  so ART's attacks attack the smoothed classifier rather than the bare base classifier; the
  attacks that make no sense on it are refused (:mod:`catrs_adapters.art.attacks`);
* inputs outside ``clip_values`` are refused, lists and any numeric dtype are accepted
  (:mod:`catrs_adapters.art.inputs`).

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

from catrs_adapters.art.attacks import attack_in_progress
from catrs_adapters.art.fitting import TEACHER_SAMPLES, fit_soft_labels, loader_data, tensor_data, train_estimator
from catrs_adapters.art.inputs import check_clip_values, checked_inputs
from catrs_adapters.art.modules import Preprocessed, SmoothedSoft
from catrs_plugin.certify.sequential import DEFAULT_RADII
from catrs_plugin.certify.smoothing import PREDICTION, Smooth
from catrs_plugin.methods.base import Method
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.utils import streams
from catrs_plugin.utils.validation import (
    check_alpha,
    check_autocast_dtype,
    check_choice,
    check_forward,
    check_labels,
    check_positive_int,
    check_sigma,
)


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
        Certify and predict on the fast path of :class:`catrs_plugin.certify.smoothing.Smooth`
        (bfloat16, folded batch norm, ``torch.compile``, CUDA graphs on CUDA); off by default.

    Examples
    --------
    >>> from art.estimators.certification.randomized_smoothing import PyTorchCATRS  # doctest: +SKIP
    >>> smoothed = PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), (3, 32, 32), 10,
    ...                         sample_size=100, scale=0.25, alpha=0.001)  # doctest: +SKIP
    >>> smoothed.fit(x, y, nb_epochs=150, batch_size=256)  # teacher, soft labels, CAT-RS  # doctest: +SKIP
    >>> prediction, radius = smoothed.certify(x_test, n=100_000)  # doctest: +SKIP
    """

    #: ART's parameters and ours: every constructor argument, so that ``get_params``, ``set_params``
    #: and ``clone_for_refitting`` carry each of them (tested for each).
    estimator_params = PyTorchRandomizedSmoothing.estimator_params + [
        "method", "preset", "hyperparameters", "seed", "autocast_dtype", "fast",
    ]

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
        self.method = method
        self.preset = preset
        self.hyperparameters = hyperparameters
        self.seed = seed
        self.autocast_dtype = autocast_dtype
        self.fast = fast
        self._check_arguments(sample_size, scale, alpha, nb_classes, clip_values, channels_first)
        self._fit_calls = 0
        super().__init__(
            model=model, loss=loss, input_shape=input_shape, nb_classes=nb_classes, optimizer=optimizer,
            channels_first=channels_first, clip_values=clip_values, preprocessing_defences=preprocessing_defences,
            postprocessing_defences=postprocessing_defences, preprocessing=preprocessing, device_type=device_type,
            sample_size=sample_size, scale=scale, alpha=alpha,
        )
        check_forward(self.model, input_shape, nb_classes, f"model (input_shape={tuple(input_shape)}, "
                                                           f"nb_classes={nb_classes})")

    def set_params(self, **kwargs: Any) -> None:
        """ART's ``set_params`` for its parameters and ours (``estimator_params``), checked as in the constructor."""
        super().set_params(**kwargs)
        self._check_arguments(self.sample_size, self.scale, self.alpha, self.nb_classes, self.clip_values,
                              self.channels_first)

    def _check_arguments(self, sample_size: int, scale: float, alpha: float, nb_classes: int, clip_values: Any,
                         channels_first: bool) -> None:
        """The constructor's checks (also after ``set_params``); stores ``seed`` and ``hyperparameters`` normalised."""
        check_positive_int(sample_size, "sample_size")
        check_sigma(scale, "scale")
        check_alpha(alpha)
        check_positive_int(nb_classes, "nb_classes", minimum=2)
        if not channels_first:
            raise ValueError("channels_first=False is not supported: PyTorch models take channels-first inputs "
                             "(n, C, H, W); transpose channels-last data first, e.g. x.transpose(0, 3, 1, 2)")
        check_clip_values(clip_values)
        self.seed = check_positive_int(self.seed, "seed", minimum=0)
        if not isinstance(self.fast, (bool, np.bool_)):
            raise ValueError(f"fast must be True or False, got {self.fast!r}")
        self.fast = bool(self.fast)
        check_autocast_dtype(self.autocast_dtype)
        if not isinstance(self.hyperparameters, (Mapping, type(None))):
            raise ValueError(f"hyperparameters must be a mapping of names to values, got {self.hyperparameters!r}")
        self.hyperparameters = dict(self.hyperparameters or {})
        self._resolve_method(scale)

    def _resolve_method(self, sigma: float) -> tuple[Method, dict[str, Any]]:
        """The training method and its hyper-parameters at ``sigma`` (unknown names raise ValueError)."""
        method = get_registry().method(self.method)
        return method, method.hyperparameters(sigma, self.preset, **self.hyperparameters)

    def smooth(self, batch_size: int | str = "auto", verbose: bool = False) -> Smooth:
        """The certification engine over this estimator's model and preprocessing.

        The engine forwards one :class:`Preprocessed` module per estimator (rebuilt only when
        ``model`` is replaced), so that the fast path compiles it once, not on every call.
        """
        module = getattr(self, "_prediction_module", None)
        if module is None or module.net is not self.model:
            module = self._prediction_module = Preprocessed(self, fit=False)
        module.training = self.model.training  # the mode the caller left the network in, restored after the call
        return Smooth(
            module, self.nb_classes, self.scale, batch_size=batch_size, seed=self.seed,
            input_shape=self.input_shape, autocast_dtype=self.autocast_dtype, fast=self.fast, progress=verbose,
        )

    def fit(  # type: ignore[override]
        self,
        x: Any,
        y: Any,
        batch_size: int = 128,
        nb_epochs: int = 10,
        training_mode: bool = True,
        drop_last: bool = False,
        scheduler: Any = None,
        verbose: bool = False,
        soft_labels: np.ndarray | None = None,
        validation_data: tuple[Any, Any] | None = None,
        teacher: Any = None,
        teacher_epochs: int | None = None,
        teacher_samples: int = TEACHER_SAMPLES,
        **options: Any,
    ) -> None:
        """Train the base classifier on ``(x, y)`` with the estimator's method at sigma = ``scale``.

        Takes every argument of ART's ``PyTorchRandomizedSmoothing.fit``, with ART's meaning
        (see :mod:`catrs_adapters.art.fitting`), so ART's ``AdversarialTrainer`` and
        ``AdversarialTrainerMadryPGD`` train it. The ``k``-th call (``k = 0, 1, ...``) trains
        with seed ``derive_seed(FIT_CALL, seed, k)`` (:mod:`catrs_plugin.utils.streams`), so the
        repeated one-epoch calls of ART's trainers draw fresh noise and data order.

        Parameters
        ----------
        x : array-like
            Training inputs ``(n, *input_shape)``, raw (before ART's preprocessing), within
            ``clip_values``.
        y : array-like
            Class indices ``(n,)`` or one-hot rows ``(n, nb_classes)``.
        batch_size : int
            Loader batch size, split into the method's chunks (``num_noise_vec`` for CAT-RS).
        nb_epochs : int
            Epochs to train.
        training_mode : bool
            ``False`` trains with the network in evaluation mode (frozen batch-norm statistics,
            no dropout), as in ART.
        drop_last : bool
            Skip the last batch of each epoch when it is incomplete, as in ART.
        scheduler : torch.optim.lr_scheduler.LRScheduler, optional
            Your scheduler of the estimator's optimizer, stepped after every epoch as ART does.
            With an optimizer of your own, the learning rate is only ever yours.
        verbose : bool
            Show progress bars.
        soft_labels : numpy.ndarray, optional
            ``(n, nb_classes)`` smoothed teacher predictions for CAT-RS (see
            :func:`catrs_plugin.smoothed_soft_labels`). Without them, CAT-RS runs the paper's
            whole recipe in this call (:func:`catrs_adapters.art.fitting.fit_soft_labels`): a
            Gaussian teacher at sigma 0.25 is trained on ``(x, y)`` for ``teacher_epochs`` epochs
            (or ``teacher`` is used), its smoothed predictions become the soft labels, then
            CAT-RS trains; one INFO line says which happened.
        validation_data : tuple, optional
            ``(x_val, y_val)``: the smoothed classifier's accuracy on it (PREDICT, abstentions
            count as errors) is logged at INFO level after every epoch, as ART's trainers log theirs.
        teacher : PyTorchRandomizedSmoothing or torch.nn.Module, optional
            For CAT-RS without ``soft_labels``: a Gaussian-trained classifier whose smoothed
            predictions become the soft labels (an ART estimator at its own ``scale``, a module
            taking the raw inputs at sigma 0.25), instead of one trained here.
        teacher_epochs : int, optional
            Epochs of the teacher trained here (default: ``nb_epochs``, as the paper trains
            teacher and student alike); it starts from a copy of the network as it is.
        teacher_samples : int
            Noise samples per example of the teacher's soft labels (10,000 in the paper).
        **options
            :class:`~catrs_plugin.train.loop.TrainConfig` settings: ``checkpoint`` (resumable),
            ``amp``, ``channels_last``, ``fused``, and, for an estimator created without an
            optimizer (ART refuses to train one; we use the paper's SGD), ``lr``, ``momentum``,
            ``weight_decay``, ``lr_step_size``, ``gamma``, ``lr_drop``.
        """
        method, hyperparameters = self._resolve_method(self.scale)
        seed = self._next_seed()
        soft_labels = fit_soft_labels(
            self, method, x, y, soft_labels, teacher, nb_epochs if teacher_epochs is None else teacher_epochs,
            teacher_samples, batch_size, verbose, seed, options, scheduler=scheduler, training_mode=training_mode,
            drop_last=drop_last)
        train_estimator(self, method, hyperparameters, tensor_data(self, x, y, soft_labels), nb_epochs, batch_size,
                        verbose, seed, options, training_mode=training_mode, drop_last=drop_last, scheduler=scheduler,
                        validation_data=validation_data)

    def fit_generator(  # type: ignore[override]
        self,
        generator: Any,
        nb_epochs: int = 20,
        verbose: bool = False,
        training_mode: bool = True,
        scheduler: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        **options: Any,
    ) -> None:
        """Train from an ART ``PyTorchDataGenerator`` (any torch DataLoader), for data too large for memory.

        The loader yields ``(x, y)`` or, for CAT-RS, ``(x, y, soft_labels)`` batches, each
        checked against ``clip_values``; its own batch size applies. The other arguments are
        those of :meth:`fit`.
        """
        method, hyperparameters = self._resolve_method(self.scale)
        train_estimator(self, method, hyperparameters, loader_data(generator), nb_epochs, generator.batch_size,
                        verbose, self._next_seed(), options, training_mode=training_mode, scheduler=scheduler,
                        validation_data=validation_data)

    def _next_seed(self) -> int:
        """The training seed of this ``fit`` call: ``derive_seed(FIT_CALL, seed, k)`` for the ``k``-th call."""
        seed = streams.derive_seed(streams.FIT_CALL, self.seed, self._fit_calls)
        self._fit_calls += 1
        return seed

    def predict(  # type: ignore[override]
        self,
        x: Any,
        batch_size: int = 128,
        verbose: bool = False,
        is_abstain: bool = True,
        indices: Sequence[int] | None = None,
        logits: bool = False,
        **kwargs: Any,
    ) -> np.ndarray:
        """Cohen et al.'s PREDICT with ``sample_size`` samples, as one-hot rows (ART's format).

        Called by one of ART's attacks, or with ``logits=True`` (which ART's Carlini-Wagner
        L2 passes), it returns the logits of the smoothed soft classifier instead (see
        :meth:`soft_logits`): what the attacks' losses and gradients are computed from.

        Parameters
        ----------
        x : array-like
            Inputs ``(n, *input_shape)`` within ``clip_values``.
        batch_size : int
            Noisy samples per forward pass for PREDICT (results do not depend on it); inputs
            per forward pass for the logits.
        verbose : bool
            Show a progress bar.
        is_abstain : bool
            With ``True`` an input whose top-two binomial test has p-value above ``alpha`` gets
            an all-zero row; with ``False`` the most frequent class is returned regardless.
        indices : sequence of int, optional
            Data-set index of each input, which seeds its noise (default ``0 .. n-1``).
        logits : bool
            Return the smoothed soft classifier's logits.

        Returns
        -------
        numpy.ndarray
            ``(n, nb_classes)`` one-hot rows (float64, as ART's), or float32 logits (as ART's
            ``PyTorchClassifier.predict``).
        """
        if logits or attack_in_progress(self) is not None:
            return self.soft_logits(x, batch_size)  # which checks x
        inputs = self._inputs(x, "x")
        smooth = self.smooth(batch_size, verbose)
        if is_abstain:
            classes = smooth.predict(inputs, self.sample_size, self.alpha, indices)
        else:
            classes = smooth.sample_counts(inputs, {PREDICTION: self.sample_size}, indices)[:, 0].argmax(axis=1)
        rows = np.zeros((len(classes), self.nb_classes))  # float64, as ART's
        chosen = classes >= 0
        rows[np.flatnonzero(chosen), classes[chosen]] = 1.0
        return rows

    def certify(  # type: ignore[override]
        self,
        x: Any,
        n: int,
        batch_size: int | None = None,
        indices: Sequence[int] | None = None,
        verbose: bool = False,
        *,
        sequential: bool = False,
        radii: Sequence[float] = DEFAULT_RADII,
        alpha_sequence: float | None = None,
        labels: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Cohen et al.'s CERTIFY with N0 = ``sample_size`` and N = ``n`` (or sequential CERTIFY).

        Parameters
        ----------
        x : array-like
            Inputs ``(examples, *input_shape)`` within ``clip_values`` (lists and any numeric
            dtype are accepted; values outside ``clip_values`` raise ``ValueError``).
        n : int
            Estimation samples per input (with ``sequential``: the most an input may use).
        batch_size : int, optional
            Noisy samples per forward pass, as in ART; ``None`` (our default, ART's is 32)
            sizes it from the free memory. Results do not depend on it.
        indices : sequence of int, optional
            Data-set index of each input, which seeds its noise (default ``0 .. examples-1``).
        verbose : bool
            Show a progress bar.
        sequential : bool
            Sequential CERTIFY (:meth:`catrs_plugin.certify.smoothing.Smooth.certify_sequential`):
            the same guarantee at ``alpha``, each input stopping as soon as every radius of
            ``radii`` is decided. A stopped input's radius may be smaller than CERTIFY's
            (certified accuracy at ``radii`` is comparable, ACR is not). The estimation samples
            each input used are given by ``smooth().certify_sequential``.
        radii, alpha_sequence
            With ``sequential``: the radii to decide and the confidence sequence's share of
            ``alpha`` (see :mod:`catrs_plugin.certify.sequential`).
        labels : array-like, optional
            With ``sequential``, in evaluation only: class indices or one-hot rows; an input
            whose selected class is not its label stops after the selection (its class is
            then that selected class, radius 0: incorrect, as CERTIFY would count it).

        Returns
        -------
        prediction : numpy.ndarray
            Class per input, -1 for abstain.
        radius : numpy.ndarray
            Certified L2 radius per input, 0 on abstain.
        """
        smooth = self.smooth("auto" if batch_size is None else batch_size, verbose)
        inputs = self._inputs(x, "x")
        if not sequential:
            if labels is not None or alpha_sequence is not None:
                raise ValueError("labels and alpha_sequence apply to sequential=True only")
            return smooth.certify(inputs, self.sample_size, n, self.alpha, indices)
        result = smooth.certify_sequential(inputs, self.sample_size, n, self.alpha, radii, alpha_sequence, labels,
                                           indices)
        return result.predictions, result.radii

    def soft(self, training_mode: bool = False) -> SmoothedSoft:
        """The smoothed soft classifier (``log`` of the mean softmax over ``sample_size`` noises) as a module."""
        return SmoothedSoft(Preprocessed(self, fit=False).train(training_mode), self.sample_size, self.scale)

    def soft_logits(self, x: Any, batch_size: int = 128) -> np.ndarray:
        """``log mean_i softmax(f(x + d_i))`` over ``sample_size`` fresh noises: the smoothed soft classifier's logits.

        Its softmax is the smoothed soft classifier ``G(x)`` and its argmax the class PREDICT
        returns when it does not abstain (up to sampling). ``batch_size`` inputs go through
        the network at once (``batch_size * sample_size`` noisy samples).
        """
        inputs = self._inputs(x, "x")
        module = self.soft()
        with torch.no_grad():
            parts = [module(torch.as_tensor(inputs[start : start + batch_size], device=self._device)).cpu().numpy()
                     for start in range(0, len(inputs), check_positive_int(batch_size, "batch_size"))]
        return np.concatenate(parts)

    def loss_gradient(  # type: ignore[override]
        self, x: np.ndarray | torch.Tensor, y: Any, training_mode: bool = False, **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        """Gradient of the smoothed soft classifier's cross-entropy with respect to ``x``.

        The loss is ``mean_n -log G(x_n)_{y_n}`` with ``G(x) = mean_i softmax(f(x + d_i))`` over
        ``sample_size`` Gaussian noises (Salman et al. 2019; the mean over the batch, as ART's
        randomized smoothing computes it), so ART's attacks target the smoothed classifier.
        Equals ``-class_gradient(x, y) / len(x)`` for the same noise. Pass ``sampling=False``
        for ART's base-classifier gradient. Returns the type it is given (numpy array or tensor).
        """
        if not kwargs.pop("sampling", True):
            return super().loss_gradient(x, y, training_mode=training_mode, sampling=False, **kwargs)
        inputs, labels = self._with_labels(x, y)
        loss = F.nll_loss(self.soft(training_mode)(inputs), labels)
        (gradient,) = torch.autograd.grad(loss, inputs)
        return self._like(x, gradient)

    def class_gradient(  # type: ignore[override]
        self, x: np.ndarray | torch.Tensor, label: Any = None, training_mode: bool = False, **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        """Gradients of the smoothed soft classifier's logits ``log G(x)_k`` with respect to ``x``.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            Inputs ``(n, *input_shape)`` within ``clip_values``.
        label : int or sequence of int, optional
            One class for every input, one class per input, or ``None`` for every class.
        training_mode : bool
            Run the network in training mode.

        Returns
        -------
        numpy.ndarray or torch.Tensor
            ``(n, nb_classes, *input_shape)`` for ``label=None``, else ``(n, 1, *input_shape)``
            (ART's layout), of the type of ``x``. One draw of ``sample_size`` noises serves
            every class, so the gradients of one call are those of one soft classifier.
        """
        inputs = self._tensor(x)
        outputs = self.soft(training_mode)(inputs)
        if label is None:
            gradients = [torch.autograd.grad(outputs[:, k].sum(), inputs, retain_graph=k + 1 < self.nb_classes)[0]
                         for k in range(self.nb_classes)]
            return self._like(x, torch.stack(gradients, dim=1))
        classes = np.broadcast_to(np.asarray(label), (len(inputs),)) if np.ndim(label) == 0 else label
        chosen = torch.as_tensor(check_labels(classes, self.nb_classes, len(inputs), "label"), device=self._device)
        (gradient,) = torch.autograd.grad(outputs.gather(1, chosen[:, None]).sum(), inputs)
        return self._like(x, gradient[:, None])

    def compute_loss(  # type: ignore[override]
        self, x: np.ndarray | torch.Tensor, y: Any, reduction: str = "none", **kwargs: Any
    ) -> np.ndarray | torch.Tensor:
        """The smoothed soft classifier's cross-entropy ``-log G(x)_y`` (the loss of :meth:`loss_gradient`).

        ``reduction`` is ``"none"`` (one loss per input), ``"mean"`` or ``"sum"``, as in ART.
        """
        check_choice(reduction, ("none", "mean", "sum"), "reduction")
        inputs, labels = self._with_labels(x, y, requires_grad=False)
        with torch.no_grad():
            loss = F.nll_loss(self.soft()(inputs), labels, reduction=reduction)
        return self._like(x, loss)

    def get_activations(  # type: ignore[override]
        self, x: np.ndarray | torch.Tensor, layer: int | str | None = None, batch_size: int = 128,
        framework: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """ART's activations of the base network (refused inside ART's attacks, which would bypass the noise)."""
        attack_in_progress(self)
        return super().get_activations(x, layer, batch_size, framework)

    def _predict_framework(self, *args: Any, **kwargs: Any) -> Any:
        attack_in_progress(self)
        return super()._predict_framework(*args, **kwargs)

    @property
    def model(self) -> nn.Module:
        """The base network (refused inside ART's attacks that would bypass the noise)."""
        attack_in_progress(self)
        return super().model

    def _inputs(self, x: Any, name: str) -> np.ndarray | torch.Tensor:
        return checked_inputs(x, name, self.input_shape, self.clip_values)

    def _tensor(self, x: Any, requires_grad: bool = True) -> torch.Tensor:
        """Checked inputs as a float32 tensor on the device, a leaf that records gradients."""
        attack_in_progress(self)
        inputs = torch.as_tensor(self._inputs(x, "x"), dtype=torch.float32, device=self._device).detach()
        return inputs.requires_grad_(requires_grad)

    def _with_labels(self, x: Any, y: Any, requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self._tensor(x, requires_grad)
        labels = check_labels(y, self.nb_classes, len(inputs))
        return inputs, torch.as_tensor(labels, device=self._device)

    @staticmethod
    def _like(x: Any, result: torch.Tensor) -> np.ndarray | torch.Tensor:
        """``result`` as a tensor when ``x`` was one, else as a numpy array."""
        return result if isinstance(x, torch.Tensor) else result.detach().cpu().numpy()
