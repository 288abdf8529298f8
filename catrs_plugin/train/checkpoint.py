"""Checkpoints: atomic writes and safe loading (always ``weights_only=True``).

A checkpoint is a dict of tensors and plain values, like the reference code's
``{'epoch', 'arch', 'state_dict', 'optimizer'}``; ours adds ``dataset``, ``input_shape`` (of
in-memory training data), ``method``, ``hyperparameters``, ``sigma`` and ``history``. The model
it describes is ``Sequential(NormalizeLayer, network)``. Loading one for a dataset checks that
the dataset's inputs and classes are those it was trained on, and a checkpoint is checked
entry by entry before a run resumes from it (:func:`check_training_state`).

Checkpoints written by the reference training scripts (Cohen et al.'s and CAT-RS's) load
unchanged: they name no dataset, so it comes from the caller or from the reference code's
convention for the architecture (:data:`REFERENCE_DATASETS`); the ``module.`` segments that
``DataParallel`` put into the ImageNet ResNet-50's keys (``1.module.conv1.weight``) are dropped,
and batch-norm ``num_batches_tracked`` counters missing from old checkpoints are set to 0.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from typing import Any, Mapping

import torch
from torch import nn

from catrs_plugin.utils.atomic import write_atomic
from catrs_plugin.utils.reading import FormatError, one_line, parsing, require_file
from catrs_plugin.utils.validation import FLOAT32_MAX


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` with :func:`torch.save` atomically: to a temporary file, then rename.

    A run killed during the write leaves the previous checkpoint intact. The payload is
    serialised in memory first, so that a full disk is an :class:`OSError` of the write (torch's
    own writer reports it as an unspecific ``RuntimeError``).
    """
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    write_atomic(path, buffer.getvalue())


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint's dict with ``weights_only=True``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If ``path`` is not a PyTorch checkpoint (text, random bytes, an empty or truncated
        file ...), holds pickled code (which ``weights_only=True`` refuses to run), or
        ``map_location`` is a CUDA device on a machine without CUDA.
    """
    path = require_file(path, "checkpoint")
    if isinstance(map_location, (str, torch.device)) and torch.device(map_location).type == "cuda" \
            and not torch.cuda.is_available():
        raise ValueError(f"cannot load checkpoint {str(path)!r} onto {map_location}: CUDA is not available")
    refused = None
    with parsing(path, "checkpoint", "a PyTorch checkpoint"):
        with open(path, "rb") as handle:
            first = handle.read(1)
        if first and first != b"\x80" and not zipfile.is_zipfile(path):
            raise FormatError("it is neither a zip archive (the format torch.save writes) nor a legacy pickled file")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            if not zipfile.is_zipfile(path):
                raise
            refused = error
    if refused is not None:
        raise ValueError(
            f"checkpoint {str(path)!r} holds objects other than tensors and plain values, which "
            f"weights_only=True refuses to load (it may contain pickled code): {one_line(str(refused))}"
        )
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {str(path)!r} must hold a dict, got {type(payload).__name__}")
    return payload


def load_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` strictly; on mismatch, say which keys were missing or unexpected, or
    which tensors have other shapes; refuse NaN or infinite values.

    Keys in the reference code's layout (``DataParallel``'s ``module.`` segments, no
    ``num_batches_tracked``) are first mapped to the model's when that makes them match.
    """
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items()
    ):
        raise ValueError(f"{source}: state_dict must map parameter names to tensors, got {type(state_dict).__name__}")
    state_dict = _reference_layout(model, state_dict)
    expected = set(model.state_dict())
    given = set(state_dict)
    if expected != given:
        missing = sorted(expected - given)
        unexpected = sorted(given - expected)
        raise ValueError(
            f"{source}: state_dict does not match the architecture; missing keys "
            f"{_preview(missing)}, unexpected keys {_preview(unexpected)}; expected keys look like "
            f"{_preview(sorted(expected))}"
        )
    reference = model.state_dict()
    mismatched = [f"{key} {tuple(value.shape)} (architecture: {tuple(reference[key].shape)})"
                  for key, value in state_dict.items() if value.shape != reference[key].shape]
    if mismatched:
        raise ValueError(f"{source}: state_dict does not match the architecture; size mismatch of "
                         f"{_preview(mismatched, 3)}")
    broken = [key for key, value in state_dict.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise ValueError(f"{source}: state_dict holds NaN or infinite values in {_preview(broken, 3)}; such a "
                         "model (e.g. of a diverged training run) gives no meaningful predictions")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:  # e.g. a dtype that cannot be copied into the parameter
        raise ValueError(f"{source}: {one_line(str(error))}") from None


def _reference_layout(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    expected = model.state_dict()
    if set(state_dict) == set(expected):
        return state_dict
    renamed = reference_keys(state_dict, expected)
    return renamed if set(renamed) == set(expected) else state_dict


def reference_keys(
    state_dict: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state_dict`` with the reference code's key layout mapped to ``expected``'s (a model's state dict).

    Drops the ``module.`` segments that ``DataParallel`` put into the keys and sets the batch-norm
    ``num_batches_tracked`` counters that ``expected`` has and the file lacks (old checkpoints) to 0.
    """
    renamed = {".".join(p for p in key.split(".") if p != "module"): value for key, value in state_dict.items()}
    for key in set(expected) - set(renamed):
        if key.endswith(".num_batches_tracked"):
            renamed[key] = torch.zeros_like(expected[key])
    return renamed


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"


#: Dataset the reference code pairs with each of its architectures (its checkpoints name none).
REFERENCE_DATASETS = {
    "cifar_resnet20": "cifar10",
    "cifar_resnet110": "cifar10",
    "cifar100_resnet110": "cifar100",
    "lenet": "mnist",
    "resnet50": "imagenet",
}


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", dataset: str | None = None
) -> nn.Module:
    """Rebuild the model a checkpoint describes, with its normalisation layer, in eval mode.

    The architecture comes from the checkpoint's ``arch`` field through the model registry;
    the normalisation and number of classes from its dataset.

    Parameters
    ----------
    path : str or os.PathLike
        Our checkpoint or one written by the reference training scripts.
    map_location : str or torch.device
        Device of the returned model: the CPU by default, as with ``torch.load`` and
        ``timm.create_model``; a model is never moved to a GPU unless asked (e.g.
        ``map_location="cuda"``).
    dataset : str, optional
        Dataset for checkpoints that name none (the reference code's, whose ``certify.py``
        takes it on the command line too); default: :data:`REFERENCE_DATASETS` of the ``arch``.
        A checkpoint's own ``dataset`` entry takes precedence.

    Raises
    ------
    ValueError
        If the checkpoint lacks ``arch`` or ``state_dict``, names an unknown architecture or
        dataset (the message lists the registered ones), was trained on inputs or classes other
        than ``dataset``'s (its recorded ``input_shape``, else its dataset's), or its keys or
        tensor shapes do not match the architecture, or it holds NaN or infinite weights.
    """
    from catrs_plugin.plugins.registry import get_registry

    payload = read_checkpoint(path, map_location)
    for key in ("arch", "state_dict"):
        if key not in payload:
            raise ValueError(f"checkpoint {str(path)!r} has no {key!r} entry; keys: {sorted(map(str, payload))}")
    arch = payload["arch"]
    if not isinstance(arch, str) or not isinstance(payload.get("dataset", ""), (str, type(None))):
        raise ValueError(f"checkpoint {str(path)!r}: 'arch' and 'dataset' must be names (strings), got "
                         f"{_describe(arch)} and {_describe(payload.get('dataset'))}")
    name = payload.get("dataset") or dataset or REFERENCE_DATASETS.get(arch)
    if name is None:
        raise ValueError(
            f"checkpoint {str(path)!r} has no 'dataset' entry and its arch {arch!r} is none of the reference "
            f"code's ({', '.join(sorted(REFERENCE_DATASETS))}); pass the dataset it was trained on"
        )
    registry = get_registry()
    if dataset is not None:
        _check_fits(payload, registry.dataset(name), registry.dataset(dataset), path)
    model = registry.create_model(arch, name)
    load_state(model, payload["state_dict"], f"checkpoint {str(path)!r}")
    return model.to(map_location).eval()


def _check_fits(payload: Mapping[str, Any], trained: Any, used: Any, path: str | os.PathLike) -> None:
    """Refuse a checkpoint whose inputs or classes differ from the dataset it is used on (a 1-channel
    image would be broadcast into a 3-channel normalisation without any error)."""
    recorded = payload.get("input_shape", trained.input_shape)
    if recorded is None:  # not recorded (training data from a loader): the dataset's
        recorded = trained.input_shape
    if not (isinstance(recorded, (list, tuple))
            and all(isinstance(size, int) and not isinstance(size, bool) for size in recorded)):
        raise ValueError(f"checkpoint {str(path)!r}: 'input_shape' must be a list of integers, got "
                         f"{_describe(recorded)}")
    shape = tuple(recorded)
    if shape != tuple(used.input_shape) or trained.num_classes != used.num_classes:
        raise ValueError(
            f"checkpoint {str(path)!r} was trained on {trained.name} (inputs of shape {shape}, "
            f"{trained.num_classes} classes) and does not fit dataset {used.name} (inputs of shape "
            f"{tuple(used.input_shape)}, {used.num_classes} classes)"
        )


def epochs_done(payload: Mapping[str, Any], path: str | os.PathLike) -> int:
    """The number of finished epochs a training checkpoint records (its ``epoch`` entry).

    Raises
    ------
    ValueError
        If the entry is missing or not an integer >= 0.
    """
    epoch = payload.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"checkpoint {str(path)!r}: 'epoch' must be the number of finished epochs (an integer >= 0), "
                         f"got {_describe(epoch)}")
    return epoch


def check_training_state(payload: Mapping[str, Any], path: str | os.PathLike, optimizer: torch.optim.Optimizer,
                         device: torch.device | str = "cpu") -> int:
    """Check what a resumed run restores from a training checkpoint, apart from the weights
    (:func:`load_state` checks those); returns the finished epochs.

    Checks the ``epoch``, the presence of ``state_dict``, the ``optimizer`` state against
    ``optimizer`` (its groups, parameter counts, the kind of every setting, and per-parameter
    buffers of the parameters' shapes, such as SGD's momentum), the random states (restored into
    a copy of the generator, which refuses a state it did not produce), the gradient scaler's
    state, ``history`` (per-epoch dicts of numbers) and ``provenance`` (a dict), so that a
    damaged or tampered checkpoint is refused before anything is restored instead of failing
    inside torch (or at the first optimizer step).

    Raises
    ------
    ValueError
        Naming the checkpoint and the entry that is wrong.
    """
    source = f"checkpoint {str(path)!r}"
    epoch = epochs_done(payload, path)
    for key in ("state_dict", "optimizer"):
        if key not in payload:
            raise ValueError(f"{source} has no {key!r} entry, which a resumed run restores; keys: "
                             f"{sorted(map(str, payload))}")
    if not isinstance(payload.get("provenance", {}), dict):
        raise ValueError(f"{source}: 'provenance' must be a dict of settings, got {_describe(payload['provenance'])}")
    _check_optimizer_state(payload["optimizer"], optimizer, source)
    device = torch.device(device)
    for key, cuda in (("rng_state", False), ("cuda_rng_state", True)):
        if key not in payload or (cuda and device.type != "cuda"):
            continue
        state = payload[key]
        try:
            if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8):
                raise TypeError("not a uint8 tensor")
            with torch.random.fork_rng(devices=[device] if cuda else []):  # the caller's state is left alone
                if cuda:
                    torch.cuda.set_rng_state(state.cpu(), device)
                else:
                    torch.set_rng_state(state.cpu())
        except (TypeError, RuntimeError) as error:
            raise ValueError(f"{source}: {key!r} is not a state of torch's generator ({_describe(state)}: "
                             f"{one_line(str(error), 80)})") from None
    scaler = payload.get("scaler", {})
    if not (isinstance(scaler, dict) and all(isinstance(key, str) and _is_setting(value)
                                             for key, value in scaler.items())):
        raise ValueError(f"{source}: 'scaler' must be a gradient scaler's state (a dict of numbers), got "
                         f"{_describe(scaler)}")
    history = payload.get("history", [])
    if not isinstance(history, list) or not all(
            isinstance(entry, dict) and all(_is_number(entry.get(field)) for field in HISTORY_FIELDS)
            for entry in history):
        raise ValueError(f"{source}: 'history' must be a list of per-epoch dicts with numbers "
                         f"{', '.join(map(repr, HISTORY_FIELDS))}")
    return epoch


#: What every per-epoch entry of a checkpoint's ``history`` holds (:func:`catrs_plugin.train.loop.train`).
HISTORY_FIELDS = ("epoch", "loss", "lr", "seconds")


def _check_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer, source: str) -> None:
    """``saved`` must be a state of ``optimizer``'s kind: the same groups and parameter counts, every
    setting of the same kind (a finite number, a flag), and per-parameter buffers of the parameters' shapes."""
    current = optimizer.state_dict()
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not (isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
            and isinstance(saved.get("state"), dict)):
        raise ValueError(f"{source}: 'optimizer' must be an optimizer state (a dict of 'state' and 'param_groups')")
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in current["param_groups"]]:
        raise ValueError(f"{source}: 'optimizer' holds groups of {[len(g['params']) for g in groups]} parameters, "
                         f"the model's optimizer {[len(g['params']) for g in current['param_groups']]}")
    for group, reference in zip(groups, current["param_groups"]):
        for name, value in reference.items():
            given = group.get(name)
            if _is_number(value):
                fits = _is_setting(given)
            elif isinstance(value, bool) or value is None:
                fits = isinstance(given, bool) or (value is None and given is None)
            else:
                fits = name == "params" or name in group
            if not fits:
                kind = f"a finite number of at most {FLOAT32_MAX:g}" if _is_number(value) else "True or False"
                raise ValueError(f"{source}: optimizer setting {name!r} must be {kind}, got {_describe(given)}")
    indices = [index for group in groups for index in group["params"]]
    live = [parameter for group in optimizer.param_groups for parameter in group["params"]]
    if not all(isinstance(index, int) and not isinstance(index, bool) for index in indices) \
            or len(set(indices)) != len(indices):
        raise ValueError(f"{source}: 'optimizer' must name each parameter once by its index, got {_describe(indices)}")
    parameters = dict(zip(indices, live))
    for index, state in saved["state"].items():
        if index not in parameters or not isinstance(state, dict):
            raise ValueError(f"{source}: optimizer state of unknown parameter {_describe(index)}")
        for name, value in state.items():
            step = name == "step" and (_is_number(value) or (isinstance(value, torch.Tensor) and value.ndim == 0))
            buffer = isinstance(value, torch.Tensor) and value.shape == parameters[index].shape
            if not (step or buffer or value is None):
                raise ValueError(f"{source}: optimizer state {name!r} of parameter {index} is {_describe(value)}, "
                                 f"not a buffer of the parameter's shape {tuple(parameters[index].shape)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_setting(value: Any) -> bool:
    """A number torch can take as a setting: finite, within float32's range, an integer within int64's."""
    return _is_number(value) and math.isfinite(value) and abs(value) <= FLOAT32_MAX and (
        not isinstance(value, int) or abs(value) < 2**63)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {one_line(repr(value), 60)}"
