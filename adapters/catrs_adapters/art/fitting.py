"""ART's ``fit`` semantics on the shared training loop (:func:`catrs_plugin.train.loop.train`).

ART's ``PyTorchRandomizedSmoothing.fit(x, y, batch_size, nb_epochs, training_mode, drop_last,
scheduler, verbose)`` trains with the estimator's optimizer and steps the caller's learning-rate
scheduler after every epoch; ART's trainers also pass ``validation_data``. The shared loop runs
them after each epoch (its ``epoch_end``, :func:`epoch_end`); ``drop_last`` and the range check
of a generator's batches are kinds of training data (:class:`DropLastData`,
:class:`RangeCheckedLoaderData`).

The learning rate:

* an estimator built with an optimizer keeps it, and its learning rate is the caller's: fixed,
  or set by the caller's ``scheduler``, stepped once after every epoch as ART steps it (the
  loop leaves a caller's optimizer's rates alone).
* an estimator without an optimizer (ART would refuse to train it) trains with the paper's SGD
  and step schedule, set by :data:`SCHEDULE_OPTIONS`.

CAT-RS without soft labels (:func:`fit_soft_labels`): ART's ``fit(x, y)`` carries no soft
labels, so ``fit`` runs the paper's whole recipe when none are given: it trains a Gaussian
teacher at :data:`TEACHER_SIGMA` (:func:`train_teacher`: a copy of the estimator's network as it
is, on ``(x, y)``), takes the teacher's smoothed predictions with :data:`TEACHER_SAMPLES` noise
samples per example (:func:`teacher_soft_labels`), then trains CAT-RS on them. The reference
computes them on one random crop and flip of each training image; ART's ``fit`` trains on ``x``
as given, without augmentation, so the soft labels are those of ``x`` as given. A teacher the
caller passes skips the teacher's training. One INFO line says which happened.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from catrs_adapters.art.inputs import check_range, checked_inputs
from catrs_adapters.art.modules import Preprocessed
from catrs_plugin.methods.base import Method
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.loop import LoaderData, TensorData, TrainConfig, train
from catrs_plugin.train.soft_labels import smoothed_soft_labels
from catrs_plugin.utils import streams
from catrs_plugin.utils.validation import check_labels, check_positive_int, check_sigma, check_soft_labels

logger = logging.getLogger(__name__)

#: The paper's soft labels: the smoothed predictions of a Gaussian teacher trained and smoothed at
#: sigma 0.25, with 10,000 noise samples per example (the same soft labels for every training sigma).
TEACHER_SIGMA = 0.25
TEACHER_SAMPLES = 10_000

#: Options that configure the optimizer and schedule ``fit`` creates when the estimator has none.
SCHEDULE_OPTIONS = ("lr", "momentum", "weight_decay", "lr_step_size", "gamma", "lr_drop")

#: ``fit`` options passed on to :class:`catrs_plugin.train.loop.TrainConfig`.
TRAIN_OPTIONS = SCHEDULE_OPTIONS + ("checkpoint", "amp", "channels_last", "fused")


def epoch_end(scheduler: Any, validate: Callable[[int], None] | None) -> Callable[[int], None]:
    """What ART's ``fit`` does after each epoch: validation, then one step of the caller's scheduler.

    Parameters
    ----------
    scheduler : torch.optim.lr_scheduler.LRScheduler or None
        The caller's scheduler of the estimator's optimizer.
    validate : callable, optional
        Called with the 0-based epoch (see :func:`validation`).
    """

    def end(epoch: int) -> None:
        if validate is not None:
            validate(epoch)
        if scheduler is not None:
            scheduler.step()

    return end


class DropLastData(TensorData):
    """In-memory data whose incomplete last batch is skipped, as ART's loader does with ``drop_last``."""

    def __init__(self, data: TensorData) -> None:
        vars(self).update(vars(data))

    def batches(self, epoch: int, batch_size: int, seed: int, device: torch.device, rank: int = 0,
                world: int = 1, order: torch.Tensor | None = None) -> Iterator[tuple]:
        full = batch_size // world
        return (batch for batch in super().batches(epoch, batch_size, seed, device, rank, world, order)
                if len(batch[0]) == full)

    def num_batches(self, batch_size: int, order: torch.Tensor | None = None) -> int:
        return (len(self) if order is None else len(order)) // batch_size


class RangeCheckedLoaderData(LoaderData):
    """Loader data whose every batch is checked against the estimator's ``clip_values``."""

    def __init__(self, data: LoaderData, clip_values: Any) -> None:
        super().__init__(data.loader)
        self.clip_values = clip_values

    def batches(self, epoch: int, batch_size: int, seed: int, device: torch.device, rank: int = 0,
                world: int = 1, order: torch.Tensor | None = None) -> Iterator[tuple]:
        for batch in super().batches(epoch, batch_size, seed, device, rank, world, order):
            check_range(batch[0], "the generator's batch", self.clip_values)
            yield batch


def tensor_data(estimator: Any, x: Any, y: Any, soft_labels: Any) -> TensorData:
    """Checked in-memory training data for ``estimator``: labels as indices (one-hot accepted)."""
    x = checked_inputs(x, "x", estimator.input_shape, estimator.clip_values)
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


def validation(estimator: Any, validation_data: Any, results: dict[int, float]) -> Callable[[int], None]:
    """A per-epoch evaluation of the smoothed classifier on ``validation_data = (x_val, y_val)``.

    Each call runs the estimator's ``predict`` (Cohen's PREDICT with ``sample_size`` samples;
    the noise is seeded per example, so every epoch is measured with the same noise), counts
    an abstention as an error, logs the accuracy at INFO level (as ART's trainers log theirs)
    and stores it in ``results`` under the 1-based epoch.
    """
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError(
            "validation_data must be a pair (x_val, y_val) of inputs and labels (indices or one-hot), got "
            f"{type(validation_data).__name__}"
        )
    x = checked_inputs(validation_data[0], "validation_data[0]", estimator.input_shape, estimator.clip_values)
    labels = check_labels(validation_data[1], estimator.nb_classes, len(x), "validation_data[1]")

    def evaluate(epoch: int) -> None:
        rows = estimator.predict(x)
        answered = rows.sum(axis=1) == 1
        correct = int(np.sum(answered & (rows.argmax(axis=1) == labels)))
        results[epoch + 1] = correct / len(x)
        logger.info(
            "epoch %d: validation accuracy of the smoothed classifier %.4f (%d of %d correct, %d abstained; "
            "PREDICT with %d samples at alpha %g)", epoch + 1, correct / len(x), correct, len(x),
            int(np.sum(~answered)), estimator.sample_size, estimator.alpha,
        )

    return evaluate


def train_estimator(
    estimator: Any,
    method: Method,
    hyperparameters: Mapping[str, Any],
    data: TensorData | LoaderData,
    nb_epochs: int,
    batch_size: int,
    verbose: bool,
    seed: int,
    options: Mapping[str, Any],
    *,
    training_mode: bool = True,
    drop_last: bool = False,
    scheduler: Any = None,
    validation_data: Any = None,
) -> list[dict[str, float]]:
    """Train an ART randomized-smoothing estimator's model in place at its ``scale``, as ART's ``fit`` would.

    Parameters
    ----------
    estimator : PyTorchRandomizedSmoothing
        The estimator; its optimizer is used when it has one (see the module notes).
    method, hyperparameters
        The training objective and its resolved hyper-parameters.
    data : TensorData or LoaderData
        Checked training data (:func:`tensor_data`, :func:`loader_data`).
    nb_epochs, batch_size, verbose, seed
        Epochs, loader batch size, progress bars, seed of data order and noise.
    options : mapping
        :data:`TRAIN_OPTIONS`; :data:`SCHEDULE_OPTIONS` only when the estimator has no optimizer.
    training_mode : bool
        ``False`` trains with the network in evaluation mode (ART's meaning).
    drop_last : bool
        Skip the incomplete last batch of in-memory data.
    scheduler : torch.optim.lr_scheduler.LRScheduler, optional
        The caller's scheduler of the estimator's optimizer, stepped after every epoch.
    validation_data : tuple, optional
        ``(x_val, y_val)`` evaluated after every epoch (see :func:`validation`).

    Returns
    -------
    list of dict
        Per-epoch ``epoch``, ``loss``, ``lr``, ``seconds`` and, with ``validation_data``,
        ``val_accuracy``.
    """
    check_options(estimator, scheduler, options)
    optimizer = estimator.optimizer
    results: dict[int, float] = {}
    validate = None if validation_data is None else validation(estimator, validation_data, results)
    if isinstance(data, TensorData) and drop_last:
        data = DropLastData(data)
    elif isinstance(data, LoaderData) and estimator.clip_values is not None:
        data = RangeCheckedLoaderData(data, estimator.clip_values)
    config = TrainConfig(epochs=nb_epochs, batch_size=batch_size, seed=seed, progress=verbose, **options)
    model = Preprocessed(estimator, fit=True, training_mode=bool(training_mode))
    history = train(model, method, hyperparameters, estimator.scale, data, config, optimizer=optimizer,
                    epoch_end=epoch_end(scheduler, validate))
    for entry in history:
        if entry["epoch"] in results:
            entry["val_accuracy"] = results[entry["epoch"]]
    return history


def check_options(estimator: Any, scheduler: Any, options: Mapping[str, Any]) -> None:
    """Refuse unknown ``fit`` options and schedule options that do not apply to the estimator's optimizer."""
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown training option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(TRAIN_OPTIONS)}"
        )
    _check_schedule(estimator.optimizer, scheduler, options)


def teacher_module(teacher: Any) -> tuple[nn.Module, float]:
    """A teacher the caller passes as ``(module taking raw inputs, sigma it is smoothed at)``.

    An ART randomized-smoothing estimator is smoothed at its own ``scale``, behind its
    preprocessing; a bare ``torch.nn.Module`` (taking the raw inputs) at :data:`TEACHER_SIGMA`.
    """
    from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing

    if isinstance(teacher, PyTorchRandomizedSmoothing):
        return Preprocessed(teacher, fit=False), check_sigma(teacher.scale, "teacher.scale")
    if isinstance(teacher, nn.Module):
        return teacher, TEACHER_SIGMA
    raise ValueError(
        f"teacher must be an ART PyTorchRandomizedSmoothing estimator or a torch.nn.Module, got {type(teacher).__name__}"
    )


def teacher_soft_labels(estimator: Any, teacher: nn.Module, sigma: float, x: Any, samples: int, seed: int,
                        verbose: bool) -> np.ndarray:
    """The class frequencies of ``teacher`` (taking raw inputs) over ``samples`` noisy copies of each input of ``x``.

    ``x`` is checked against the estimator's input shape and ``clip_values``; the noise of example
    ``i`` is its soft-label stream under ``seed``.
    """
    inputs = checked_inputs(x, "x", estimator.input_shape, estimator.clip_values)
    return smoothed_soft_labels(teacher, inputs, estimator.nb_classes, sigma=sigma,
                                n=check_positive_int(samples, "teacher_samples"), seed=seed, progress=verbose)


def train_teacher(estimator: Any, data: TensorData, epochs: int, batch_size: int, verbose: bool, seed: int,
                  options: Mapping[str, Any], training_mode: bool = True) -> nn.Module:
    """Train a Gaussian teacher at :data:`TEACHER_SIGMA` as the paper does, and return its network.

    The teacher is a copy of the estimator's network as it is (so it starts where the student
    starts), behind the same preprocessing, trained on ``data`` for ``epochs`` epochs with a
    fresh optimizer of the estimator's optimizer's class and settings (without one, the
    paper's SGD and step schedule of ``options``). With a ``checkpoint`` option it is
    checkpointed next to it, in ``<checkpoint>.teacher``, and resumed from there.
    """
    epochs = check_positive_int(epochs, "teacher_epochs")
    network = copy.deepcopy(estimator.model)
    own = estimator.optimizer
    optimizer = None if own is None else type(own)(network.parameters(), **own.defaults)
    settings = dict(options)
    if settings.get("checkpoint"):
        path = Path(settings["checkpoint"])
        settings["checkpoint"] = str(path.with_name(path.name + ".teacher"))
    config = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, progress=verbose, **settings)
    module = Preprocessed(estimator, fit=True, training_mode=bool(training_mode), net=network)
    train(module, get_registry().method("gaussian"), {}, TEACHER_SIGMA, data, config, optimizer=optimizer)
    return network


def fit_soft_labels(
    estimator: Any,
    method: Method,
    x: Any,
    y: Any,
    soft_labels: Any,
    teacher: Any,
    teacher_epochs: int,
    teacher_samples: int,
    batch_size: int,
    verbose: bool,
    seed: int,
    options: Mapping[str, Any],
    *,
    scheduler: Any = None,
    training_mode: bool = True,
    drop_last: bool = False,
) -> Any:
    """The soft labels ``fit(x, y)`` trains ``method`` with: those given, or else those of the paper's recipe.

    Without ``soft_labels`` a method that needs them (CAT-RS) gets the smoothed predictions of
    ``teacher``, or of a Gaussian teacher trained now for ``teacher_epochs`` epochs
    (:func:`train_teacher`, on ``(x, y)`` with ``batch_size``, ``drop_last`` and ``options``), with
    ``teacher_samples`` noise samples per example (see the module notes). The teacher trains with
    seed ``derive_seed(TEACHER, seed)`` and its soft labels are drawn with that seed. Logs one
    INFO line saying which happened (none for methods without soft labels).
    """
    if not method.needs_soft_labels:
        return soft_labels
    if soft_labels is not None:
        logger.info("fit: %s trains with the soft labels given", method.name)
        return soft_labels
    check_options(estimator, scheduler, options)
    check_positive_int(teacher_samples, "teacher_samples")  # before a teacher trains
    teacher_seed = streams.derive_seed(streams.TEACHER, seed)
    if teacher is None:
        data = tensor_data(estimator, x, y, None)
        network = train_teacher(estimator, DropLastData(data) if drop_last else data, teacher_epochs, batch_size,
                                verbose, teacher_seed, options, training_mode)
        module, sigma = Preprocessed(estimator, fit=False, net=network), TEACHER_SIGMA
        what = (f"trained a Gaussian teacher (a copy of the network) at sigma {TEACHER_SIGMA:g} for {teacher_epochs} "
                "epochs on (x, y)")
    else:
        module, sigma = teacher_module(teacher)
        what = f"took the teacher given, smoothed at sigma {sigma:g}"
    soft = teacher_soft_labels(estimator, module, sigma, x, teacher_samples, teacher_seed, verbose)
    logger.info("fit without soft labels, so the paper's recipe: %s; its smoothed predictions on x (%d noise samples "
                "each) are the soft labels %s now trains with", what, teacher_samples, method.name)
    return soft


def _check_schedule(optimizer: torch.optim.Optimizer | None, scheduler: Any, options: Mapping[str, Any]) -> None:
    if optimizer is not None:
        owned = [name for name in SCHEDULE_OPTIONS if name in options]
        if owned:
            raise ValueError(
                f"{', '.join(owned)} configure the SGD optimizer and step schedule that fit creates for an estimator "
                f"without an optimizer; this estimator has its own ({type(optimizer).__name__}), whose settings and "
                "learning rate are yours: change them on the optimizer, or pass scheduler= (stepped after every "
                "epoch, as ART does)"
            )
        if "checkpoint" in options and scheduler is not None:
            raise ValueError(
                "checkpoint cannot be combined with scheduler: the checkpoint holds the model and the optimizer, "
                "not your scheduler's state, so a resumed run would restart its schedule"
            )
    if scheduler is None:
        return
    if optimizer is None:
        raise ValueError(
            "scheduler needs the estimator's optimizer: ART's fit steps a scheduler of the optimizer given to the "
            "estimator's constructor, and this estimator has none (fit then trains with SGD and its own step "
            f"schedule, set by {', '.join(SCHEDULE_OPTIONS)})"
        )
    if not callable(getattr(scheduler, "step", None)) or getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ValueError(
            "scheduler must be a learning-rate scheduler (with a step method) of this estimator's optimizer, got "
            f"{type(scheduler).__name__}"
        )
