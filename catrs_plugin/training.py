"""The training loop shared by every method, the ART trainer and the command line.

Per epoch: shuffle with a generator seeded by ``(seed, epoch)``; split each loader batch into
``method.chunks`` optimizer steps (the reference code's mini-batch chunking); compute the
method's loss with noise drawn from a device generator seeded by ``(seed, epoch)``; step the
learning-rate schedule; write a checkpoint atomically. A run restarted with the same
arguments resumes after the last finished epoch and repeats its numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.checkpoint import read_checkpoint, save_checkpoint
from catrs_plugin.methods.base import Method, TrainBatch
from catrs_plugin.smoothing import derive_seed, model_device
from catrs_plugin.validation import check_non_negative, check_positive_int, check_sigma


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
        Multiply the learning rate by ``gamma`` every this many epochs (50 for CIFAR-10).
    gamma : float
        Learning-rate decay factor.
    lr_drop : int or None
        Epoch of one extra multiplication by ``gamma`` (the reference's ``--lr_drop``).
    seed : int
        Seed of the data order and of every noise draw.
    checkpoint : str or None
        File written atomically after every epoch, and resumed from when it exists.
    progress : bool
        Show a progress bar per epoch.
    """

    epochs: int = 150
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_step_size: int = 50
    gamma: float = 0.1
    lr_drop: int | None = None
    seed: int = 0
    checkpoint: str | None = None
    progress: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first setting out of range."""
        check_positive_int(self.epochs, "epochs")
        check_positive_int(self.batch_size, "batch_size")
        check_positive_int(self.lr_step_size, "lr_step_size")
        check_non_negative(self.lr, "lr")
        check_non_negative(self.momentum, "momentum")
        check_non_negative(self.weight_decay, "weight_decay")
        check_non_negative(self.gamma, "gamma")


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
    """

    def __init__(self, x: Any, y: Any, soft_labels: Any = None) -> None:
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.y = torch.as_tensor(np.asarray(y, dtype=np.int64))
        self.soft = None if soft_labels is None else torch.as_tensor(np.asarray(soft_labels, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.x)

    def batches(self, epoch: int, batch_size: int, seed: int, device: torch.device) -> Iterator[tuple]:
        """Yield ``(x, y, soft_labels or None)`` batches of one epoch, on ``device``."""
        generator = torch.Generator().manual_seed(derive_seed(seed, epoch, 0))
        order = torch.randperm(len(self.x), generator=generator)
        for start in range(0, len(order), batch_size):
            take = order[start : start + batch_size]
            soft = None if self.soft is None else self.soft[take].to(device)
            yield self.x[take].to(device), self.y[take].to(device), soft

    def num_batches(self, batch_size: int) -> int:
        """Loader batches per epoch."""
        return -(-len(self.x) // batch_size)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, as in the reference code."""
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def train(
    model: nn.Module,
    method: Method,
    hyperparameters: Mapping[str, Any],
    sigma: float,
    data: TensorData,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer | None = None,
    checkpoint_fields: Mapping[str, Any] | None = None,
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
    data : TensorData
        Training data (with soft labels when the method needs them).
    config : TrainConfig
        Optimisation settings.
    optimizer : torch.optim.Optimizer, optional
        Defaults to :func:`make_optimizer`; a StepLR schedule is attached either way.
    checkpoint_fields : mapping, optional
        Extra entries for the checkpoint (``arch``, ``dataset``): plain values only.

    Returns
    -------
    list of dict
        One entry per epoch: ``epoch``, ``loss``, ``lr``, ``seconds``.
    """
    sigma = check_sigma(sigma)
    config.validate()
    if method.needs_soft_labels and data.soft is None:
        raise ValueError(
            f"method {method.name!r} needs soft labels: pass soft_labels (an array of shape (examples, "
            "classes)), e.g. catrs_plugin.smoothed_soft_labels(teacher, x, sigma=0.25)"
        )
    device = model_device(model)
    optimizer = optimizer or make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step_size, gamma=config.gamma)
    chunks = int(hyperparameters[method.chunks]) if method.chunks else 1
    history: list[dict[str, float]] = []
    start_epoch = 0
    if config.checkpoint and Path(config.checkpoint).exists():
        start_epoch, history = _resume(config.checkpoint, model, optimizer, scheduler, method, sigma, device)

    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        if config.lr_drop is not None and epoch == config.lr_drop:
            for group in optimizer.param_groups:
                group["lr"] *= config.gamma
        generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, epoch, 1))
        model.train()
        total, count = torch.zeros((), device=device), 0
        bar = tqdm(
            data.batches(epoch, config.batch_size, config.seed, device),
            total=data.num_batches(config.batch_size),
            desc=f"{method.name} epoch {epoch + 1}/{config.epochs}",
            disable=not config.progress,
            leave=False,
        )
        for x, y, soft in bar:
            size = len(x) // chunks
            for k in range(chunks if size else 0):
                part = slice(k * size, (k + 1) * size)
                batch = TrainBatch(x[part], y[part], None if soft is None else soft[part], sigma, generator, epoch)
                loss = method.compute_loss(model, batch, hyperparameters)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * size
                count += size
        bar.close()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        history.append(
            {"epoch": epoch + 1, "loss": float(total) / max(count, 1), "lr": lr, "seconds": time.perf_counter() - began}
        )
        if config.checkpoint:
            save_checkpoint(
                config.checkpoint,
                {
                    **dict(checkpoint_fields or {}),
                    "epoch": epoch + 1,
                    "state_dict": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "method": method.name,
                    "hyperparameters": dict(hyperparameters),
                    "sigma": sigma,
                    "seed": config.seed,
                    "history": history,
                },
            )
    return history


def _resume(
    path: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    method: Method,
    sigma: float,
    device: torch.device,
) -> tuple[int, list[dict[str, float]]]:
    payload = read_checkpoint(path, map_location=device)
    if payload.get("method") != method.name or float(payload.get("sigma", -1)) != sigma:
        raise ValueError(
            f"checkpoint {path!r} was written by method {payload.get('method')!r} at sigma "
            f"{payload.get('sigma')!r}, not {method.name!r} at sigma {sigma}; pass another checkpoint path"
        )
    model.load_state_dict(payload["state_dict"])
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    return int(payload["epoch"]), list(payload.get("history", []))
