"""Which examples each epoch trains on, and in which order: the loop's side of :attr:`Method.schedule`.

Without a data schedule an epoch visits every training example once, in the permutation seeded
by ``(seed, epoch)`` (:func:`epoch_order`). A method with a schedule hook
(:class:`~catrs_plugin.methods.base.ScheduleHook`) is asked at the start of every epoch which
examples to draw from and how often (:class:`~catrs_plugin.methods.base.DataSchedule`); the
epoch's examples are then :func:`scheduled_order`, drawn from the same ``(seed, epoch)``
generator. The schedule in force is saved in every checkpoint (:func:`schedule_state`) and read
back on resume, so a resumed run trains on the examples and weights of an uninterrupted one;
under DDP every rank takes rank 0's schedule (:func:`next_schedule`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from catrs_plugin.methods.base import DataSchedule, EpochView, Method
from catrs_plugin.utils import streams


def epoch_order(count: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits ``count`` examples (a permutation seeded by ``(seed, epoch)``)."""
    return torch.randperm(count, generator=streams.generator(streams.EPOCH_ORDER, seed, epoch))


def scheduled_order(schedule: DataSchedule, seed: int, epoch: int) -> torch.Tensor:
    """The training-set indices epoch ``epoch`` visits under ``schedule``, from the ``(seed, epoch)`` generator.

    Without ``draws``: ``schedule.indices`` in the order :func:`epoch_order` gives their positions (for
    every example, exactly :func:`epoch_order`). With ``draws``: that many positions drawn with
    replacement, uniformly (``torch.randint``) or, with weights, as ``torch.multinomial`` draws
    them, which is what ``WeightedRandomSampler(weights, draws, replacement=True)`` yields for the same
    generator.
    """
    indices = torch.from_numpy(np.asarray(schedule.indices, dtype=np.int64))
    if schedule.draws is None:
        return indices[epoch_order(len(indices), seed, epoch)]
    generator = streams.generator(streams.EPOCH_ORDER, seed, epoch)
    if schedule.weights is None:
        return indices[torch.randint(len(indices), (schedule.draws,), generator=generator)]
    weights = torch.as_tensor(schedule.weights, dtype=torch.float64)
    return indices[torch.multinomial(weights, schedule.draws, replacement=True, generator=generator)]


def next_schedule(
    method: Method,
    hyperparameters: Mapping[str, Any],
    current: DataSchedule,
    model: nn.Module,
    data: Any,
    *,
    epoch: int,
    sigma: float,
    seed: int,
    device: torch.device,
    world: int = 1,
) -> DataSchedule:
    """Ask ``method.schedule`` for epoch ``epoch``'s schedule, check it, and share rank 0's under DDP.

    ``data`` is the loop's training data; its ``views(indices, batch_size, device, seed, epoch)``
    gives the hook the examples it reads. Every rank calls the hook (the replicas are identical),
    and every rank then trains on rank 0's result, so rounding differences between devices cannot
    make the ranks draw different examples.
    """
    view = EpochView(
        model=model, epoch=epoch, sigma=sigma, size=training_size(data),
        examples=lambda indices, batch_size: data.views(indices, batch_size, device, seed, epoch),
        generator=streams.generator(streams.DATA_SCHEDULE, seed, epoch, device=device),
    )
    schedule = method.schedule(view, current, **hyperparameters).check(
        view.size, f"the data schedule of method {method.name!r} for epoch {epoch + 1}")
    if world > 1:
        box = [schedule]
        dist.broadcast_object_list(box, src=0)
        schedule = box[0]
    return schedule


def training_size(data: Any) -> int:
    """Examples in the training set of ``data`` (a :class:`~catrs_plugin.train.loop.TensorData` or a
    :class:`~catrs_plugin.train.loop.LoaderData` whose loader has a sized ``dataset``)."""
    if hasattr(data, "x"):
        return len(data.x)
    dataset = getattr(getattr(data, "loader", None), "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        raise ValueError("a method with a data schedule needs in-memory training data (TensorData) or a loader "
                         "with a sized map-style dataset, e.g. from catrs_plugin.train.data.loader_of")
    return len(dataset)


def schedule_state(schedule: DataSchedule) -> dict[str, Any]:
    """``schedule`` as checkpoint entries: tensors and plain values, which ``weights_only=True`` loads."""
    return {"indices": torch.from_numpy(np.asarray(schedule.indices, dtype=np.int64)),
            "weights": None if schedule.weights is None else torch.as_tensor(schedule.weights, dtype=torch.float64),
            "draws": schedule.draws}


def schedule_from_state(state: Any, count: int, path: str) -> DataSchedule:
    """The schedule :func:`schedule_state` saved in checkpoint ``path``, checked against ``count`` examples.

    Raises
    ------
    ValueError
        Naming the checkpoint, when the entry is not such a schedule (damaged or tampered) or does
        not fit the training set.
    """
    source = f"the data schedule saved in checkpoint {str(path)!r}"
    weights = state.get("weights") if isinstance(state, Mapping) else None
    if not (isinstance(state, Mapping) and isinstance(state.get("indices"), torch.Tensor)
            and (weights is None or isinstance(weights, torch.Tensor))):
        raise ValueError(f"{source} must be a dict with the tensors 'indices' and 'weights' (or None) and 'draws', "
                         f"got {type(state).__name__}")
    return DataSchedule(state["indices"].cpu().numpy(), None if weights is None else weights.cpu().numpy(),
                        state.get("draws")).check(count, source)


__all__ = ["training_size", "epoch_order", "next_schedule",
           "schedule_from_state", "schedule_state", "scheduled_order"]
