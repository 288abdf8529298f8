"""Checkpoints: atomic writes and safe loading (always ``weights_only=True``).

A checkpoint is a dict of tensors and plain values, like the reference code's
``{'epoch', 'arch', 'state_dict', 'optimizer'}``; ours adds ``dataset``, ``method``,
``hyperparameters``, ``sigma`` and ``history``. The model it describes is
``Sequential(NormalizeLayer, network)``.

Checkpoints written by the reference training scripts (Cohen et al.'s and CAT-RS's) load
unchanged: they name no dataset, so it comes from the caller or from the reference code's
convention for the architecture (:data:`REFERENCE_DATASETS`); the ``module.`` segments that
``DataParallel`` put into the ImageNet ResNet-50's keys (``1.module.conv1.weight``) are dropped,
and batch-norm ``num_batches_tracked`` counters missing from old checkpoints are set to 0.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from typing import Any, Mapping

import torch
from torch import nn

from catrs_plugin.utils.atomic import atomic_writer
from catrs_plugin.utils.reading import FormatError, one_line, parsing, require_file


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` with :func:`torch.save` atomically: to a temporary file, then rename.

    A run killed during the write leaves the previous checkpoint intact.
    """
    with atomic_writer(path) as stream:
        torch.save(dict(payload), stream)


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
    """Load ``state_dict`` strictly; on mismatch, say which keys were missing or unexpected.

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
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise ValueError(f"{source}: {error}") from None


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
        dataset (the message lists the registered ones), or its keys do not match the
        architecture (the message lists missing, unexpected and expected keys).
    """
    from catrs_plugin.plugins.registry import get_registry

    payload = read_checkpoint(path, map_location)
    for key in ("arch", "state_dict"):
        if key not in payload:
            raise ValueError(f"checkpoint {str(path)!r} has no {key!r} entry; keys: {sorted(payload)}")
    arch = payload["arch"]
    if not isinstance(arch, str) or not isinstance(payload.get("dataset", ""), (str, type(None))):
        raise ValueError(f"checkpoint {str(path)!r}: 'arch' and 'dataset' must be names (strings), got {arch!r}")
    name = payload.get("dataset") or dataset or REFERENCE_DATASETS.get(arch)
    if name is None:
        raise ValueError(
            f"checkpoint {str(path)!r} has no 'dataset' entry and its arch {arch!r} is none of the reference "
            f"code's ({', '.join(sorted(REFERENCE_DATASETS))}); pass the dataset it was trained on"
        )
    model = get_registry().create_model(arch, name)
    load_state(model, payload["state_dict"], f"checkpoint {str(path)!r}")
    return model.to(map_location).eval()
