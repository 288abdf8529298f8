"""The training loop shared by every method, the ART trainer and the command line.

Per epoch: set the learning rate the reference scripts use in that epoch
(:func:`catrs_plugin.train.schedules.learning_rate`; a caller's own optimizer keeps its rates); shuffle with a generator seeded by
``(seed, epoch)``; augment each loader batch on the device with the data set's training
augmentation, drawn from a generator seeded by ``(seed, epoch, batch)``; split each loader
batch into ``method.chunks`` optimizer steps (the reference code's mini-batch chunking);
compute the method's loss with noise drawn from a device generator seeded by
``(seed, epoch)``; write a checkpoint atomically. Each of these streams has its own domain
(:mod:`catrs_plugin.utils.streams`), which no certification stream shares. A method with a data schedule
(:attr:`~catrs_plugin.methods.base.Method.schedule`) chooses at the start of each epoch which
examples it draws and how often (:mod:`catrs_plugin.train.data_schedule`); the schedule is part of
the checkpoint. A run restarted with the same arguments
resumes after the last finished epoch and repeats its numbers; the checkpoint records what
produced it (method, hyper-parameters, data, augmentation, optimisation settings: see
:mod:`catrs_plugin.utils.provenance`) and a run with other settings refuses to resume it. An epoch
whose loss is not finite stops the run with :class:`TrainingDiverged` before its checkpoint
is written.

What a user sees and keeps: a bar over the run's epochs (with its ETA) and one over each epoch's
batches (``progress``); one INFO log line per epoch (loss, accuracy on the training batches, learning
rate, seconds; ``catrs`` prints them above the bars); the per-epoch metrics as CSV and JSON beside
the checkpoint and, with ``tensorboard``, as TensorBoard scalars (:mod:`catrs_plugin.train.records`).
A run with nothing left to do shows no bar.

Throughput options (:class:`TrainConfig`): mixed precision (``amp``: bf16 autocast, or fp16
autocast with a gradient scaler), the ``channels_last`` memory format, the fused SGD kernel
on CUDA, and ``torch.compile`` of the model (CUDA graphs in ``"reduce-overhead"`` mode);
:func:`catrs_plugin.train.loop.fast_config` turns them all on. When ``torch.distributed``
is initialised (e.g. under ``torchrun``), the model is wrapped in ``DistributedDataParallel``
and every loader batch is split evenly across the ranks (see :mod:`catrs_plugin.certify.distributed`).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler, Subset
from tqdm.auto import tqdm

from catrs_plugin.certify.smoothing import model_device
from catrs_plugin.methods.base import DataSchedule, Method, TrainBatch
from catrs_plugin.train.checkpoint import check_training_state, load_state, read_checkpoint, save_checkpoint
from catrs_plugin.train.data_schedule import (
    epoch_order,
    next_schedule,
    schedule_from_state,
    schedule_state,
    scheduled_order,
    training_size,
)
from catrs_plugin.train.fast_step import COMPILE_MODES, begin_step, compiled_for_training
from catrs_plugin.train.records import add_epoch_scalars, tensorboard_writer, write_metrics
from catrs_plugin.train.schedules import learning_rate
from catrs_plugin.utils import locking, provenance, streams
from catrs_plugin.utils.validation import check_choice, check_non_negative, check_positive_int, check_sigma

logger = logging.getLogger(__name__)

#: How to start a run afresh when its checkpoint belongs to another run.
RESTART_HINT = "to start afresh, delete it (catrs train: --restart) or choose another checkpoint path"

#: ``TrainConfig.amp`` values and their autocast dtypes.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Share of the free GPU memory that in-memory training data may take to be moved there once.
DATA_ON_DEVICE_FRACTION = 0.25

#: Why file-based data with another loader cannot follow a method's data schedule.
_SCHEDULED_LOADER = ("this method's data schedule chooses the examples of each epoch, which needs in-memory "
                     "training data (TensorData) or a loader from catrs_plugin.train.data.loader_of (its "
                     "EpochBatchSampler draws the scheduled examples)")


@dataclass
class TrainConfig:
    """Optimisation settings (defaults: the paper's CIFAR-10 recipe).

    Attributes
    ----------
    epochs : int
        Epochs to train (150 in the paper for CIFAR-10).
    batch_size : int
        Loader batch size (256 in the paper), split into ``method.chunks`` optimizer steps.
    lr, momentum, weight_decay : float
        SGD settings (0.1, 0.9, 1e-4).
    lr_step_size : int
        Multiply the learning rate by ``gamma`` every this many epochs (50 for CIFAR-10), as the
        reference's ``StepLR`` stepped with ``scheduler.step(epoch)`` does: the first drop is
        in epoch ``lr_step_size + 1`` (0-based; see :mod:`catrs_plugin.train.schedules`).
    gamma : float
        Learning-rate decay factor.
    lr_drop : int or None
        Epoch (0-based) whose rate is multiplied by ``gamma`` once more (the reference's
        ``--lr_drop``, undone in the next epoch as the reference's scheduler undoes it).
    lr_milestones : tuple of int or None
        0-based epochs from which the rate is multiplied by ``gamma`` once more each, instead of
        the ``lr_step_size`` schedule (MACER's own ``MultiStepLR`` recipe: ``(199, 399)``).
    seed : int
        Seed of the data order and of every noise draw.
    checkpoint : str or None
        File written atomically after every epoch, and resumed from when it exists; the
        per-epoch metrics are written beside it (:mod:`catrs_plugin.train.records`).
    progress : bool
        Show a progress bar over the run's epochs (with ETA) and one over each epoch's batches.
    tensorboard : str or None
        Folder of TensorBoard event files to add each epoch's metrics to (needs the
        ``tensorboard`` package). Changes no number, so it is not part of the provenance.
    amp : {"bf16", "fp16"} or None
        Mixed precision: run the loss under ``torch.autocast`` in this dtype; ``fp16`` also
        scales the loss with a ``GradScaler``. Off (fp32) by default.
    channels_last : bool
        Convert the model and inputs to the ``channels_last`` memory format (faster
        convolutions on recent GPUs, above all with ``amp``).
    fused : bool or None
        Use the fused SGD kernel; ``None`` (default) means on CUDA only.
    compile : str or None
        Train through ``torch.compile`` of the model in this mode (see
        :data:`~catrs_plugin.train.fast_step.COMPILE_MODES`; ``"reduce-overhead"`` records CUDA
        graphs on CUDA). Off by default.
    """

    epochs: int = 150
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step_size: int = 50
    gamma: float = 0.1
    lr_drop: int | None = None
    lr_milestones: tuple[int, ...] | None = None
    seed: int = 0
    checkpoint: str | None = None
    progress: bool = True
    tensorboard: str | None = None
    amp: str | None = None
    channels_last: bool = False
    fused: bool | None = None
    compile: str | None = None

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.lr_step_size, "lr_step_size")
        check_non_negative(self.lr, "lr")
        check_non_negative(self.momentum, "momentum")
        check_non_negative(self.weight_decay, "weight_decay")
        check_non_negative(self.gamma, "gamma")
        for milestone in self.lr_milestones or ():
            check_positive_int(milestone, "lr_milestones", minimum=0)
        if self.amp is not None:
            check_choice(self.amp, tuple(AMP_DTYPES), "amp")
        if self.compile is not None:
            check_choice(self.compile, COMPILE_MODES, "compile")

    def learning_rate(self, epoch: int) -> float:
        """The rate of epoch ``epoch`` (0-based)."""
        return learning_rate(epoch, self.lr, step_size=self.lr_step_size, gamma=self.gamma, lr_drop=self.lr_drop,
                             milestones=self.lr_milestones)


def fast_config(config: TrainConfig, device: torch.device | str) -> TrainConfig:
    """``config`` with every fast option on for ``device`` (see :mod:`catrs_plugin.train.fast_step`)."""
    cuda = torch.device(device).type == "cuda"
    return replace(config, amp="bf16", channels_last=True, fused=cuda or None,
                   compile="reduce-overhead" if cuda else "default")


class TrainingDiverged(ValueError):
    """The training loss of an epoch was not finite; the run stopped before saving that epoch."""


def rank_share(count: int, rank: int, world: int) -> slice:
    """Rank ``rank``'s equal contiguous share of a batch of ``count`` (the remainder is dropped)."""
    if world == 1:
        return slice(None)
    share = count // world
    return slice(rank * share, (rank + 1) * share)


class TensorData:
    """In-memory training data, reshuffled every epoch by a seeded generator.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Inputs in [0, 1], ``(n, *input_shape)``.
    y : numpy.ndarray or torch.Tensor
        Class indices ``(n,)``.
    soft_labels : numpy.ndarray or torch.Tensor, optional
        Per-example class probabilities ``(n, C)``; they follow their examples through shuffling.
    augment : callable, optional
        Training augmentation ``augment(x, generator) -> x`` applied on the device to every loader
        batch (e.g. :class:`catrs_plugin.train.augmentation.RandomCropFlip`, a registered dataset's
        ``augment``), with a generator seeded by ``(seed, epoch, batch)``.
    """

    def __init__(
        self,
        x: Any,
        y: Any,
        soft_labels: Any = None,
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    ) -> None:
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.soft = None if soft_labels is None else torch.as_tensor(np.asarray(soft_labels, dtype=np.float32))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.x)

    def batches(
        self, epoch: int, batch_size: int, seed: int, device: torch.device, rank: int = 0, world: int = 1,
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple]:
        """Yield ``(x, y, soft_labels or None)`` batches of one epoch, on ``device``.

        The epoch visits the examples ``order`` names (a data schedule's
        :func:`~catrs_plugin.train.data_schedule.scheduled_order`), by default every example in
        :func:`~catrs_plugin.train.data_schedule.epoch_order`. With ``world > 1`` processes, each
        loader batch of ``batch_size`` examples is cut into ``world`` equal contiguous shares (the
        remainder is dropped so that every rank takes the same number of steps) and this rank gets
        share ``rank``. The augmentation is drawn for the whole loader batch before it is cut, so
        every rank count sees the same images.
        """
        # The order lives where the data does, so that no batch waits for an index copy.
        order = (epoch_order(len(self.x), seed, epoch) if order is None else order).to(self.x.device)
        for number, start in enumerate(range(0, len(order), batch_size)):
            take = order[start : start + batch_size]
            x = self.x[take].to(device)
            if self.augment is not None:
                x = self.augment(x, streams.generator(streams.AUGMENTATION, seed, epoch, number, device=device))
            keep = rank_share(len(take), rank, world)
            soft = None if self.soft is None else self.soft[take[keep]].to(device)
            yield x[keep], self.y[take[keep]].to(device), soft

    def num_batches(self, batch_size: int, order: torch.Tensor | None = None) -> int:
        """Loader batches per epoch (of one visiting ``order``)."""
        return -(-(len(self.x) if order is None else len(order)) // batch_size)

    def views(
        self, indices: np.ndarray, batch_size: int, device: torch.device, seed: int, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of the examples ``indices``, in that order, on ``device``, with the
        training augmentation drawn from the stream ``(SCHEDULE_VIEWS, seed, epoch, batch)``
        (what a data schedule reads, :attr:`~catrs_plugin.methods.base.EpochView.examples`)."""
        order = torch.as_tensor(np.asarray(indices, dtype=np.int64)).to(self.x.device)
        for number, start in enumerate(range(0, len(order), batch_size)):
            take = order[start : start + batch_size]
            x = self.x[take].to(device)
            if self.augment is not None:
                x = self.augment(x, streams.generator(streams.SCHEDULE_VIEWS, seed, epoch, number, device=device))
            yield x, self.y[take].to(device)

    def to(self, device: torch.device) -> "TensorData":
        """A copy whose tensors live on ``device`` (batches are then gathered there)."""
        moved = copy.copy(self)
        moved.x, moved.y = self.x.to(device), self.y.to(device)
        moved.soft = None if self.soft is None else self.soft.to(device)
        return moved


class LoaderData:
    """Training data from a loader of batches, e.g. a ``torch.utils.data.DataLoader`` over data too
    large for memory (ImageNet).

    Parameters
    ----------
    loader : iterable
        Yields ``(x, y)`` or ``(x, y, soft_labels)`` batches of tensors (inputs in [0, 1]).
        When it is a ``DataLoader`` with a ``RandomSampler`` (``shuffle=True``), the sampler's
        generator is reseeded from ``(seed, epoch)`` at the start of every epoch, so the data
        order is reproducible and a resumed run sees the same order as an uninterrupted one.
        When its ``dataset`` has a ``set_epoch(seed, epoch)`` method (as the data sets of
        :mod:`catrs_plugin.train.data` do), it is called first, so that per-example random
        augmentation drawn in worker processes is reproducible too. When its ``batch_sampler``
        has a ``set_epoch(seed, epoch, rank, world)`` method
        (:class:`catrs_plugin.train.data.EpochBatchSampler`), it is called instead of reseeding,
        and it yields this rank's share of each batch only, so that no rank decodes the others' images.
        Its batch size is the loader's own; ``TrainConfig.batch_size`` does not apply.
    """

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader

    def batches(
        self, epoch: int, batch_size: int, seed: int, device: torch.device, rank: int = 0, world: int = 1,
        order: torch.Tensor | None = None,
    ) -> Iterator[tuple]:
        """Yield ``(x, y, soft_labels or None)`` batches of one epoch on ``device``; with
        ``world > 1`` processes, rank ``rank`` takes its equal contiguous share of each batch.
        A data schedule's ``order`` goes to the batch sampler's ``set_epoch(..., order=order)``
        (:class:`~catrs_plugin.train.data.EpochBatchSampler` has it)."""
        sampler = getattr(self.loader, "sampler", None)
        batch_sampler = getattr(self.loader, "batch_sampler", None)
        sharded = callable(getattr(batch_sampler, "set_epoch", None))
        if order is not None and not sharded:
            raise ValueError(_SCHEDULED_LOADER)
        if sharded:
            batch_sampler.set_epoch(seed, epoch, rank, world, **({} if order is None else {"order": order}))
        elif isinstance(sampler, RandomSampler):
            sampler.generator = streams.generator(streams.EPOCH_ORDER, seed, epoch)
        dataset = getattr(self.loader, "dataset", None)
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(seed, epoch)
        for batch in self.loader:
            if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
                raise ValueError(
                    "the training loader must yield (x, y) or (x, y, soft_labels) batches, got "
                    f"{type(batch).__name__} of length {len(batch) if isinstance(batch, (tuple, list)) else '?'}"
                )
            x, y, soft = batch[0], batch[1], batch[2] if len(batch) == 3 else None
            if world > 1 and not sharded:
                take = rank_share(len(x), rank, world)
                x, y, soft = x[take], y[take], None if soft is None else soft[take]
            yield (
                x.to(device, torch.float32, non_blocking=True),
                y.to(device, torch.long, non_blocking=True),
                None if soft is None else soft.to(device, torch.float32, non_blocking=True),
            )

    def num_batches(self, batch_size: int, order: torch.Tensor | None = None) -> int | None:
        """Batches per epoch (of one visiting ``order``) when the loader has a length, else None."""
        if order is not None:
            return -(-len(order) // self.loader.batch_sampler.batch_size)
        return len(self.loader) if hasattr(self.loader, "__len__") else None

    def views(
        self, indices: np.ndarray, batch_size: int, device: torch.device, seed: int, epoch: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches of the examples ``indices``, in that order, on ``device``, each
        decoded and augmented as this epoch's training draws it (the dataset's ``set_epoch``)."""
        dataset = self.loader.dataset
        if callable(getattr(dataset, "set_epoch", None)):
            dataset.set_epoch(seed, epoch)
        subset = Subset(dataset, np.asarray(indices, dtype=np.int64).tolist())
        loader = DataLoader(subset, batch_size=batch_size, num_workers=getattr(self.loader, "num_workers", 0),
                            pin_memory=getattr(self.loader, "pin_memory", False))
        for batch in loader:
            yield batch[0].to(device, torch.float32), batch[1].to(device, torch.long)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as in the reference code (fused kernel on CUDA)."""
    fused = config.fused if config.fused is not None else model_device(model).type == "cuda"
    return torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        fused=fused,
    )


def _checkpoint_written_here(arguments: Mapping[str, Any]) -> str | None:
    """The checkpoint :func:`train` writes in this process (only rank 0 of a distributed run writes it)."""
    distributed = dist.is_available() and dist.is_initialized() and dist.get_rank() != 0
    return None if distributed else arguments["config"].checkpoint


@locking.holding(_checkpoint_written_here, "checkpoint")
def train(
    model: nn.Module,
    method: Method,
    hyperparameters: Mapping[str, Any],
    sigma: float,
    data: TensorData | LoaderData,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
    checkpoint_fields: Mapping[str, Any] | None = None,
    epoch_end: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place with ``method`` and return the per-epoch history.

    Parameters
    ----------
    model : torch.nn.Module
        Classifier taking inputs in [0, 1] (normalisation inside), already on its device.
    method : Method
        The training objective.
    hyperparameters : mapping
        Resolved hyper-parameters (see :meth:`Method.hyperparameters`).
    sigma : float
        Training noise level.
    data : TensorData or LoaderData
        Training data (with soft labels when the method needs them).
    config : TrainConfig
        Optimisation settings.
    optimizer : torch.optim.Optimizer, optional
        The caller's optimizer, whose learning rates are the caller's to set (e.g. by stepping a
        scheduler from ``epoch_end``); without one, :func:`make_optimizer`'s SGD is used and its
        rate set at the start of every epoch by :meth:`TrainConfig.learning_rate`.
    checkpoint_fields : mapping, optional
        Extra entries for the checkpoint (``arch``, ``dataset``): plain values only.
    epoch_end : callable, optional
        Called with the 0-based epoch after each epoch, once its history entry and checkpoint
        are written (e.g. validation, a scheduler step).

    Returns
    -------
    list of dict
        One entry per epoch: ``epoch``, ``loss``, ``accuracy`` (on the training batches, as the
        method's loss observed it; None for a method that reports none), ``lr``, ``seconds``.

    Raises
    ------
    TrainingDiverged
        When an epoch's mean loss is not finite (the checkpoint keeps the last finite epoch).
    catrs_plugin.utils.locking.OutputLocked
        When another run is writing ``config.checkpoint`` (the checkpoint is locked while training).
    ValueError
        When the loader batches are too small for the method's optimizer steps (see
        :meth:`~catrs_plugin.methods.Method.check_batch`), or an epoch took no step at all.
    """
    sigma = check_sigma(sigma)
    config.validate()
    if method.needs_soft_labels and isinstance(data, TensorData) and data.soft is None:
        raise ValueError(
            f"method {method.name!r} needs soft labels: pass soft_labels (an array of shape (examples, "
            "classes)), e.g. catrs_plugin.smoothed_soft_labels(teacher, x, sigma=0.25)"
        )
    record = _provenance(model, method, hyperparameters, sigma, data, config, checkpoint_fields)
    device = model_device(model)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    scheduled = optimizer is None
    optimizer = optimizer or make_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=config.amp == "fp16")
    chunks = int(hyperparameters[method.chunks]) if method.chunks else 1
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    if isinstance(data, TensorData):
        method.check_batch(min(config.batch_size, len(data)) // world, hyperparameters)
    net = model if world == 1 else DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    net = compiled_for_training(net, config.compile)
    if isinstance(data, TensorData) and device.type == "cuda" and _fits_on_device(data, device):
        data = data.to(device)
    history: list[dict[str, float]] = []
    start_epoch = 0
    schedule = DataSchedule.everything(training_size(data)) if method.schedule is not None else None
    if config.checkpoint and Path(config.checkpoint).exists():
        start_epoch, history, saved = _resume(config.checkpoint, model, optimizer, scaler, record, device)
        if schedule is not None and saved is not None:
            schedule = schedule_from_state(saved, len(schedule.indices), config.checkpoint)
        if start_epoch < config.epochs:
            logger.info("%s: resuming from epoch %d of %d", config.checkpoint, start_epoch, config.epochs)
        else:
            logger.info("%s: all %d epochs already done", config.checkpoint, config.epochs)
    run = {"method": method.name, "sigma": sigma, "epochs": config.epochs, "provenance": record}
    writes = bool(config.checkpoint) and rank == 0
    if writes and history:  # the metrics files of a resumed run start as those of its checkpoint
        write_metrics(config.checkpoint, history, run)
    todo = start_epoch < config.epochs
    board = tensorboard_writer(config.tensorboard, purge_step=start_epoch + 1) \
        if config.tensorboard and rank == 0 and todo else None
    run_bar = tqdm(total=config.epochs, initial=start_epoch, unit="epoch", desc=f"{method.name} sigma={sigma:g}",
                   disable=not config.progress or rank != 0 or not todo)

    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        if scheduled:
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate(epoch)
        order = None
        if schedule is not None:
            schedule = next_schedule(method, hyperparameters, schedule, model, data, epoch=epoch, sigma=sigma,
                                     seed=config.seed, device=device, world=world)
            order = scheduled_order(schedule, config.seed, epoch)
        keys = (config.seed, epoch) if world == 1 else (config.seed, epoch, rank)
        generator = streams.generator(streams.TRAINING_NOISE, *keys, device=device)
        net.train()
        total, count = torch.zeros((), device=device), 0
        correct, seen = torch.zeros((), dtype=torch.long, device=device), 0
        bar = tqdm(
            data.batches(epoch, config.batch_size, config.seed, device, rank, world, order),
            total=data.num_batches(config.batch_size, order),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            disable=not config.progress or rank != 0,
            leave=False,
        )
        for x, y, soft in bar:
            if config.channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            size = len(x) // chunks
            for k in range(chunks if size else 0):
                part = slice(k * size, (k + 1) * size)
                batch = TrainBatch(x[part], y[part], None if soft is None else soft[part], sigma, generator, epoch)
                begin_step(config.compile, device)
                with torch.autocast(device.type, dtype=AMP_DTYPES.get(config.amp, torch.bfloat16),
                                    enabled=config.amp is not None):
                    loss = method.compute_loss(net, batch, hyperparameters)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += loss.detach().float() * size
                count += size
                if batch.correct is not None:
                    correct += batch.correct
                    seen += batch.observed
        bar.close()
        if not count:
            raise ValueError(f"{method.name}: epoch {epoch + 1} took no optimizer step (no batch of the training data "
                             f"held the {chunks} examples one step per chunk needs)")
        if world > 1:
            sums = torch.stack([total.double(), *torch.tensor([count, seen], device=device).double(), correct.double()])
            dist.all_reduce(sums)
            total, count, seen, correct = sums[0], int(sums[1]), int(sums[2]), sums[3]
        loss = float(total) / max(count, 1)
        if not np.isfinite(loss):
            kept = f"; the checkpoint keeps epoch {epoch}" if config.checkpoint and epoch else ""
            raise TrainingDiverged(
                f"{method.name} at sigma {sigma}: the mean training loss of epoch {epoch + 1} is {loss}, so the run "
                f"stopped{kept}. Lower the learning rate (it was {optimizer.param_groups[0]['lr']:g}) or the "
                "method's loss weights"
            )
        history.append(
            {"epoch": epoch + 1, "loss": loss, "accuracy": float(correct) / seen if seen else None,
             "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - began}
        )
        if config.checkpoint and rank == 0:
            save_checkpoint(
                config.checkpoint,
                {
                    **dict(checkpoint_fields or {}),
                    "epoch": epoch + 1,
                    "input_shape": list(data.x.shape[1:]) if isinstance(data, TensorData) else None,
                    "state_dict": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "method": method.name,
                    "hyperparameters": dict(hyperparameters),
                    "sigma": sigma,
                    "seed": config.seed,
                    "history": history,
                    "provenance": record,
                    "rng_state": torch.get_rng_state(),
                    **({"cuda_rng_state": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                    **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
                    **({"data_schedule": schedule_state(schedule)} if schedule is not None else {}),
                },
            )
            write_metrics(config.checkpoint, history, run)
        if board is not None:
            add_epoch_scalars(board, history[-1])
        if rank == 0:
            logger.info(epoch_line(method.name, sigma, history[-1], config.epochs))
        run_bar.update(1)
        if epoch_end is not None:
            epoch_end(epoch)
    run_bar.close()
    if board is not None:
        board.close()
    return history


def epoch_line(name: str, sigma: float, entry: Mapping[str, Any], epochs: int) -> str:
    """``gaussian sigma=0.25 epoch 3/80: loss 0.4123, train accuracy 87.2 %, lr 0.1, 1.23 s`` (the epoch's
    seconds to three significant digits, so that a fast epoch does not read 0.0 s)."""
    accuracy = "-" if entry.get("accuracy") is None else f"{100 * entry['accuracy']:.1f} %"
    return (f"{name} sigma={sigma:g} epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.4f}, "
            f"train accuracy {accuracy}, lr {entry['lr']:.4g}, {entry['seconds']:.3g} s")


def _fits_on_device(data: TensorData, device: torch.device) -> bool:
    """Whether the whole data set takes less than :data:`DATA_ON_DEVICE_FRACTION` of the free memory."""
    tensors = [data.x, data.y] + ([] if data.soft is None else [data.soft])
    size = sum(t.numel() * t.element_size() for t in tensors)
    return size < DATA_ON_DEVICE_FRACTION * torch.cuda.mem_get_info(device)[0]


def _provenance(
    model: nn.Module,
    method: Method,
    hyperparameters: Mapping[str, Any],
    sigma: float,
    data: TensorData | LoaderData,
    config: TrainConfig,
    checkpoint_fields: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """What decides the weights of a checkpoint; a run resumes a checkpoint only when they are equal.

    ``epochs`` is not part of it (the schedule does not depend on it, so a longer run continues a
    shorter one), nor are progress bars and the fused kernel. The precision options (``amp``,
    ``channels_last``, ``compile``) are, as they may round differently.
    """
    if not config.checkpoint:
        return {}
    if isinstance(data, TensorData):
        identity = provenance.digest(data.x, data.y, data.soft)
        if data.augment is not None:
            identity += f", augmented by {data.augment!r}"
    else:
        batches = len(data.loader) if hasattr(data.loader, "__len__") else "?"
        identity = f"{type(data.loader).__name__} of {batches} batches"
    optimisation = ("seed", "batch_size", "lr", "momentum", "weight_decay", "lr_step_size", "gamma", "lr_drop",
                    "lr_milestones", "amp", "channels_last", "compile")
    return provenance.stamped({**dict(checkpoint_fields or {}), "method": method.name,
                               "hyperparameters": dict(hyperparameters), "sigma": sigma,
                               "architecture": provenance.architecture_digest(model), "data": identity,
                               **{name: getattr(config, name) for name in optimisation}})


def _resume(
    path: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    record: Mapping[str, Any],
    device: torch.device,
) -> tuple[int, list[dict[str, float]], dict[str, Any] | None]:
    """Load the checkpoint's weights and states; return its epoch, history and data schedule (or None)."""
    payload = read_checkpoint(path, map_location=device)
    epoch = check_training_state(payload, path, optimizer, device)
    provenance.check(payload.get("provenance"), record, path, "checkpoint", RESTART_HINT)
    load_state(model, payload["state_dict"], f"checkpoint {str(path)!r}")
    optimizer.load_state_dict(payload["optimizer"])
    if "rng_state" in payload:
        torch.set_rng_state(payload["rng_state"].cpu())
    if "cuda_rng_state" in payload and device.type == "cuda":
        torch.cuda.set_rng_state(payload["cuda_rng_state"].cpu(), device)
    if "scaler" in payload and scaler.is_enabled():
        scaler.load_state_dict(payload["scaler"])
    return epoch, list(payload.get("history", [])), payload.get("data_schedule")
