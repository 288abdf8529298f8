"""What a training run keeps beside its checkpoint: per-epoch metrics as CSV and JSON, and optionally
TensorBoard event files.

``CHECKPOINT.metrics.csv`` has one row per finished epoch (``epoch, loss, accuracy, lr, seconds``;
``accuracy`` is the accuracy on the training batches, see
:meth:`~catrs_plugin.methods.base.TrainBatch.observe`, empty for a method that reports none) and
``CHECKPOINT.metrics.json`` the same rows with the run's method, sigma and provenance record
(:mod:`catrs_plugin.utils.provenance`). Both are rewritten atomically from the checkpoint's own
history after every epoch, so they always describe the epochs the checkpoint holds: a resumed run
continues them, and a run killed between the checkpoint and its metrics rewrites them at the next
epoch. With a TensorBoard folder, each epoch's values are also added as scalars ``train/loss``,
``train/accuracy``, ``train/lr`` and ``train/seconds`` at step ``epoch``; a resumed run first purges
the events of epochs the checkpoint does not hold. TensorBoard needs the ``tensorboard`` package
(``pip install 'catrs-plugin[tensorboard]'``); nothing else here does.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from catrs_plugin.utils.atomic import write_atomic

#: Columns of the metrics files, in order (the keys of each history entry of :func:`catrs_plugin.train.loop.train`).
METRICS = ("epoch", "loss", "accuracy", "lr", "seconds")

#: Suffixes appended to the checkpoint's name.
CSV_SUFFIX, JSON_SUFFIX = ".metrics.csv", ".metrics.json"


def metrics_paths(checkpoint: str | os.PathLike) -> tuple[Path, Path]:
    """``CHECKPOINT.metrics.csv`` and ``CHECKPOINT.metrics.json``."""
    path = Path(checkpoint)
    return path.with_name(path.name + CSV_SUFFIX), path.with_name(path.name + JSON_SUFFIX)


def _plain(value: Any) -> Any:
    """A JSON-ready number: None for a missing or non-finite value."""
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def write_metrics(checkpoint: str | os.PathLike, history: Sequence[Mapping[str, Any]],
                  run: Mapping[str, Any]) -> tuple[Path, Path]:
    """Rewrite both metrics files of ``checkpoint`` from ``history`` (atomically); return their paths.

    ``run`` (method, sigma, provenance ...) goes into the JSON file beside the rows.
    """
    csv_path, json_path = metrics_paths(checkpoint)
    rows = [{name: _plain(entry.get(name)) for name in METRICS} for entry in history]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({name: "" if value is None else value for name, value in row.items()} for row in rows)
    write_atomic(csv_path, buffer.getvalue())
    write_atomic(json_path, json.dumps({"checkpoint": Path(checkpoint).name, **run, "history": rows}, indent=2,
                                       default=str))
    return csv_path, json_path


def read_metrics(checkpoint: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``CHECKPOINT.metrics.json``."""
    return list(json.loads(metrics_paths(checkpoint)[1].read_text())["history"])


def tensorboard_writer(log_dir: str | os.PathLike, purge_step: int | None = None) -> Any:
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``; events at steps >= ``purge_step`` are dropped.

    Raises
    ------
    ValueError
        If the ``tensorboard`` package is not installed.
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(f"TensorBoard logging to {str(log_dir)!r} needs the tensorboard package: "
                         "pip install 'catrs-plugin[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


def add_epoch_scalars(writer: Any, entry: Mapping[str, Any]) -> None:
    """One epoch's values as ``train/<name>`` scalars at step ``epoch`` (missing values are skipped)."""
    for name in METRICS[1:]:
        value = _plain(entry.get(name))
        if value is not None:
            writer.add_scalar(f"train/{name}", value, int(entry["epoch"]))
    writer.flush()


__all__ = ["METRICS", "add_epoch_scalars", "metrics_paths", "read_metrics", "tensorboard_writer", "write_metrics"]
