"""ART's ``fit`` semantics on the shared training loop (:func:`catrs_plugin.training.train`).

ART's ``PyTorchRandomizedSmoothing.fit(x, y, batch_size, nb_epochs, training_mode, drop_last,
scheduler, verbose)`` trains with the estimator's optimizer and steps the caller's learning-rate
scheduler after every epoch; ART's trainers also pass ``validation_data``. The shared loop runs
whole epochs, so what ART does around an epoch travels with the data: the loop asks its data
for each epoch's batches, and :class:`EpochHooks` run before the first and after the last.

The learning rate:

* an estimator built with an optimizer keeps it, and its learning rate is the caller's: fixed,
  or set by the caller's ``scheduler``, stepped once after every epoch as ART steps it. The
  loop's own schedule never reaches it (the hooks restore the caller's rate before every epoch
  and after the last, and remove the ``initial_lr`` entry the loop adds to its parameter groups).
* an estimator without an optimizer (ART would refuse to train it) trains with the paper's SGD
  and step schedule, set by :data:`SCHEDULE_OPTIONS`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from catrs_adapters.art.inputs import check_range, checked_inputs
from catrs_adapters.art.modules import Preprocessed
from catrs_plugin.methods.base import Method
from catrs_plugin.training import LoaderData, TensorData, TrainConfig, train
from catrs_plugin.validation import check_labels, check_soft_labels

logger = logging.getLogger(__name__)

#: Options that configure the optimizer and schedule ``fit`` creates when the estimator has none.
SCHEDULE_OPTIONS = ("lr", "momentum", "weight_decay", "lr_step_size", "gamma", "lr_drop")

#: ``fit`` options passed on to :class:`catrs_plugin.training.TrainConfig`.
TRAIN_OPTIONS = SCHEDULE_OPTIONS + ("checkpoint", "amp", "channels_last", "fused")


class EpochHooks:
    """What ART's ``fit`` does around each epoch: the caller's learning rate and scheduler, validation.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer or None
        The caller's optimizer, whose learning rate the hooks keep; ``None`` when the loop
        created the optimizer and owns its schedule.
    scheduler : torch.optim.lr_scheduler.LRScheduler or None
        The caller's scheduler of ``optimizer``, stepped after every epoch.
    validate : callable, optional
        Called with the 0-based epoch after each epoch.
    """

    def __init__(self, optimizer: torch.optim.Optimizer | None, scheduler: Any, validate: Callable[[int], None] | None):
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.validate = validate
        self.pending_step = False
        groups = [] if optimizer is None else optimizer.param_groups
        self.rates = [group["lr"] for group in groups]
        self.had_initial_lr = ["initial_lr" in group for group in groups]

    def start(self) -> None:
        """Before an epoch: the caller's rate, then the scheduler step owed by the previous epoch."""
        if self.optimizer is None:
            return
        for group, rate in zip(self.optimizer.param_groups, self.rates):
            group["lr"] = rate
        if self.pending_step and self.scheduler is not None:
            self.scheduler.step()
            self.rates = [group["lr"] for group in self.optimizer.param_groups]
        self.pending_step = False

    def end(self, epoch: int) -> None:
        """After an epoch: validation; the scheduler step is taken before the next epoch or in :meth:`finish`."""
        if self.validate is not None:
            self.validate(epoch)
        self.pending_step = True

    def finish(self) -> None:
        """After the loop: the last epoch's scheduler step, and the optimizer's groups as the caller left them."""
        self.start()
        for group, had in zip(self.optimizer.param_groups if self.optimizer else [], self.had_initial_lr):
            if not had:
                group.pop("initial_lr", None)


class _Hooked:
    """Mixin over :class:`TensorData` and :class:`LoaderData`: hooks around each epoch's batches."""

    hooks: EpochHooks

    def batches(self, epoch: int, batch_size: int, seed: int, device: torch.device, rank: int = 0,
                world: int = 1) -> Iterator[tuple]:
        self.hooks.start()
        for batch in super().batches(epoch, batch_size, seed, device, rank, world):  # type: ignore[misc]
            if self.keep(batch, batch_size // world):
                yield batch
        self.hooks.end(epoch)

    def keep(self, batch: tuple, full: int) -> bool:
        return True


class HookedTensorData(_Hooked, TensorData):
    """In-memory data with :class:`EpochHooks`; ``drop_last`` skips the incomplete last batch (as ART's loader)."""

    def __init__(self, data: TensorData, hooks: EpochHooks, drop_last: bool) -> None:
        vars(self).update(vars(data))
        self.hooks = hooks
        self.drop_last = bool(drop_last)

    def keep(self, batch: tuple, full: int) -> bool:
        return not self.drop_last or len(batch[0]) == full

    def num_batches(self, batch_size: int) -> int:
        return len(self) // batch_size if self.drop_last else super().num_batches(batch_size)


class HookedLoaderData(_Hooked, LoaderData):
    """Loader data with :class:`EpochHooks`; every batch is checked against the estimator's ``clip_values``."""

    def __init__(self, data: LoaderData, hooks: EpochHooks, clip_values: Any) -> None:
        vars(self).update(vars(data))
        self.hooks = hooks
        self.clip_values = clip_values

    def keep(self, batch: tuple, full: int) -> bool:
        if self.clip_values is not None:
            check_range(batch[0], "the generator's batch", self.clip_values)
        return True


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
    unknown = sorted(set(options) - set(TRAIN_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown training option(s) {', '.join(map(repr, unknown))}; valid: {', '.join(TRAIN_OPTIONS)}"
        )
    optimizer = estimator.optimizer
    _check_schedule(optimizer, scheduler, options)
    results: dict[int, float] = {}
    validate = None if validation_data is None else validation(estimator, validation_data, results)
    hooks = EpochHooks(optimizer, scheduler, validate)
    if isinstance(data, TensorData):
        hooked: TensorData | LoaderData = HookedTensorData(data, hooks, drop_last)
    else:
        hooked = HookedLoaderData(data, hooks, estimator.clip_values)
    config = TrainConfig(epochs=nb_epochs, batch_size=batch_size, seed=seed, progress=verbose, **options)
    model = Preprocessed(estimator, fit=True, training_mode=bool(training_mode))
    try:
        history = train(model, method, hyperparameters, estimator.scale, hooked, config, optimizer=optimizer)
    finally:
        hooks.finish()
    for entry in history:
        if entry["epoch"] in results:
            entry["val_accuracy"] = results[entry["epoch"]]
    return history


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
