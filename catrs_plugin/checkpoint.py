"""Checkpoints: atomic writes and safe loading (always ``weights_only=True``).

A checkpoint is a dict of tensors and plain values, like the reference code's
``{'epoch', 'arch', 'state_dict', 'optimizer'}``; ours adds ``dataset``, ``method``,
``hyperparameters``, ``sigma``, ``scheduler`` and ``history``. The model it describes is
``Sequential(NormalizeLayer, network)``.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn


def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` with :func:`torch.save` atomically: to a temporary file, then rename.

    A run killed during the write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(dict(payload), stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint's dict with ``weights_only=True``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a PyTorch checkpoint, is truncated, or holds pickled code
        (which ``weights_only=True`` refuses to run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if zipfile.is_zipfile(path):
            raise ValueError(
                f"checkpoint {str(path)!r} holds objects other than tensors and plain values, which "
                f"weights_only=True refuses to load (it may contain pickled code): {error}"
            ) from None
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch checkpoint: {error}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch checkpoint: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"checkpoint {str(path)!r} must hold a dict, got {type(payload).__name__}")
    return payload


def load_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` strictly; on mismatch, say which keys were missing or unexpected."""
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


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model a checkpoint describes, with its normalisation layer, in eval mode.

    The architecture comes from the checkpoint's ``arch`` and ``dataset`` fields through the
    model registry.
    """
    from catrs_plugin.registry import get_registry

    payload = read_checkpoint(path, map_location)
    for key in ("arch", "dataset", "state_dict"):
        if key not in payload:
            raise ValueError(f"checkpoint {str(path)!r} has no {key!r} entry; keys: {sorted(payload)}")
    model = get_registry().create_model(payload["arch"], payload["dataset"])
    load_state(model, payload["state_dict"], f"checkpoint {str(path)!r}")
    return model.to(map_location).eval()
