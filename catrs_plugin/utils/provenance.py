"""What produced a resumable output, recorded with it and checked before the output is continued.

Every output that a rerun continues or reuses (CERTIFY and PREDICT result files, attack rows
and adversarial examples, soft labels, training checkpoints, comparison folders, shards of a
distributed run, corruption results) is described by its *settings*: a dict of plain values
naming the model (a SHA-256 of its weights), the data (a SHA-256 of the arrays), the selected
examples, and every parameter that changes the numbers (sigma, N0, N, alpha, seed, precision,
the training method and its hyper-parameters ...). What cannot change the numbers (batch
sizes, progress bars, the number of data-loading workers) is left out, so a rerun may change
it; options that may round differently (autocast, ``channels_last``, ``torch.compile``) are
recorded.

Before an existing output is continued or reused, its recorded settings must equal the current
ones; otherwise :class:`ProvenanceError` names every setting that differs. An existing output
without a record is refused as well: nothing says it belongs to this run. Every record also
carries ``noise_streams``, the version of the seed derivation (:data:`catrs_plugin.utils.streams.SCHEME`,
added by :func:`stamped`): an output whose random draws came from another version (or from the
unversioned first one) is refused, never continued with draws of this one.

Where the record lives: files keep their format (Cohen-format TSVs stay readable by other
tools), so the record is a sidecar ``<file>.provenance.json`` written atomically next to the
file; checkpoints carry it inside, under the key ``provenance``. The order of the writes makes
sure that a run killed at any point never leaves a file next to the record of another run:

* files appended to (:func:`start`): the old file and record are removed, the new record is
  written, then the rows are appended;
* files written whole (:func:`save`): the old record is removed, the file is written
  atomically, then the new record is written.

torch is imported only where a model or tensor is digested, so that reading result files
(``catrs analyze``) does not import it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

from catrs_plugin.utils import streams
from catrs_plugin.utils.atomic import write_atomic
from catrs_plugin.utils.reading import FormatError, parsing, read_text
from catrs_plugin.utils.validation import is_tensor

#: Suffix of the record next to an output file.
SIDECAR_SUFFIX = ".provenance.json"

#: How to start afresh, for callers of the Python functions (the command line says it its own way).
DEFAULT_HINT = "to start afresh, pass resume=False (catrs commands: --restart), delete it or choose another path"

#: The setting of every record that holds the seed derivation's version (:data:`catrs_plugin.utils.streams.SCHEME`).
STREAMS_SETTING = "noise_streams"

#: Segments that wrappers (``DataParallel``, ``DistributedDataParallel``, ``torch.compile``)
#: add to state-dict keys; the same weights give the same digest with or without them.
_WRAPPER_SEGMENTS = ("module", "_orig_mod")


class ProvenanceError(ValueError):
    """An output exists but was produced with other settings (or nothing says by what).

    Attributes
    ----------
    problem : str
        What is wrong, naming the output and each setting that differs.
    path : pathlib.Path
        The output.
    hint : str
        How to start afresh (:data:`DEFAULT_HINT` unless the caller knows better).
    """

    def __init__(self, problem: str, path: Path, hint: str = DEFAULT_HINT) -> None:
        self.problem = problem
        self.path = path
        self.hint = hint
        super().__init__(f"{problem}; {hint}")

    def __reduce__(self):  # picklable (worker processes send their exceptions back)
        return type(self), (self.problem, self.path, self.hint)


def stamped(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` with :data:`STREAMS_SETTING`: what every record holds (records written here get it themselves)."""
    return {**dict(settings), STREAMS_SETTING: streams.SCHEME}


def sidecar(path: str | os.PathLike) -> Path:
    """The record next to ``path``: ``<path>.provenance.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _tensor_bytes(tensor: torch.Tensor) -> tuple[str, tuple[int, ...], memoryview]:
    import torch

    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), memoryview(flat.view(torch.uint8).numpy())


def _array_bytes(array: Any) -> tuple[str, tuple[int, ...], memoryview]:
    if is_tensor(array):
        return _tensor_bytes(array)
    array = np.ascontiguousarray(array)
    return str(array.dtype), array.shape, memoryview(array.reshape(-1).view(np.uint8))


def digest(*arrays: Any) -> str:
    """SHA-256 (hex) of the dtype, shape and content of each array or tensor (``None`` counts too).

    A numpy array and a tensor with the same dtype, shape and values have the same digest.
    """
    sha = hashlib.sha256()
    for array in arrays:
        if array is None:
            sha.update(b"None;")
            continue
        dtype, shape, content = _array_bytes(array)
        sha.update(f"{dtype}{shape};".encode())
        sha.update(content)
    return sha.hexdigest()


def _clean_key(key: str) -> str:
    return ".".join(part for part in key.split(".") if part not in _WRAPPER_SEGMENTS)


def weights_digest(model: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a model's state dict: every entry's name, dtype, shape and values.

    ``DataParallel`` / ``torch.compile`` wrappers do not change it.
    """
    from torch import nn

    state = model.state_dict() if isinstance(model, nn.Module) else model
    sha = hashlib.sha256()
    for key, value in sorted((_clean_key(k), v) for k, v in state.items()):
        sha.update(f"{key}={digest(value)};".encode())
    return sha.hexdigest()


def architecture_digest(model: nn.Module) -> str:
    """SHA-256 (hex) of a model's state-dict names, dtypes and shapes (not its values)."""
    entries = sorted(f"{_clean_key(k)}:{str(v.dtype).removeprefix('torch.')}{tuple(v.shape)}"
                     for k, v in model.state_dict().items())
    return hashlib.sha256(";".join(entries).encode()).hexdigest()


def data_identity(x: Any, y: Any) -> str:
    """The digest of inputs and labels; for inputs decoded on access (not an array), their type and
    shape with the digest of the labels."""
    if isinstance(x, np.ndarray) or is_tensor(x):
        return digest(x, y)
    return f"{type(x).__name__} of shape {tuple(x.shape)}, labels {digest(y)}"


def indices_record(indices: Sequence[int] | np.ndarray) -> str:
    """A short description of a selection of example indices that changes whenever the selection does."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        return "no examples"
    return f"{len(indices)} examples, indices {indices.min()} to {indices.max()}, {digest(indices)[:16]}"


def precision_name(autocast_dtype: torch.dtype | None) -> str:
    """``fp32`` without autocast, else the autocast dtype (``bfloat16``, ``float16``)."""
    return "fp32" if autocast_dtype is None else str(autocast_dtype).removeprefix("torch.")


def normalise(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON would give them back (tuples become lists, numpy scalars numbers)."""

    def plain(value: Any) -> Any:
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"setting of type {type(value).__name__} cannot be recorded: {value!r}")

    return json.loads(json.dumps(dict(settings), sort_keys=True, default=plain))


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return f"sha256 {value[:12]}"
    return repr(value)


def differences(recorded: Mapping[str, Any], settings: Mapping[str, Any],
                template: str = "{key} was {old}, now {new}", ignore: Collection[str] = ()) -> list[str]:
    """One ``template`` line (default ``"<setting> was <recorded>, now <current>"``) per setting that
    differs, apart from those in ``ignore``; nested dicts are compared by dotted key."""
    old, new = _flatten(normalise(recorded)), _flatten(normalise(settings))
    missing = object()
    changed = []
    for key in sorted((set(old) | set(new)) - set(ignore)):
        before, after = old.get(key, missing), new.get(key, missing)
        if before != after:
            was = "not recorded" if before is missing else _show(before)
            now = "not set" if after is missing else _show(after)
            changed.append(template.format(key=key, old=was, new=now))
    return changed


def check(recorded: Mapping[str, Any] | None, settings: Mapping[str, Any], path: str | os.PathLike, what: str,
          hint: str = DEFAULT_HINT, ignore: Collection[str] = ()) -> None:
    """Raise :class:`ProvenanceError` unless the record of the output at ``path`` equals ``settings``
    (apart from the settings in ``ignore``, which the caller checks its own way).

    Parameters
    ----------
    recorded : mapping or None
        The output's record; ``None`` when it has none.
    settings : mapping
        The settings of the current run.
    path : str or os.PathLike
        The output, for the message.
    what : str
        What the output is, for the message (``"result file"``, ``"checkpoint"`` ...).
    hint : str
        How to start afresh.
    """
    path = Path(path)
    if recorded is None:
        raise ProvenanceError(
            f"{what} {str(path)!r} exists but nothing records which run produced it (no {sidecar(path).name} "
            "next to it, or it was written by an older version): it may hold another model's or setting's results",
            path, hint,
        )
    check_streams(recorded, path, what, hint)
    changed = differences(recorded, stamped(settings), ignore=ignore)
    if changed:
        raise ProvenanceError(
            f"{what} {str(path)!r} was produced with other settings ({'; '.join(changed)}), so it cannot be continued",
            path, hint,
        )


def check_streams(recorded: Mapping[str, Any], path: str | os.PathLike, what: str, hint: str = DEFAULT_HINT) -> None:
    """Raise :class:`ProvenanceError` unless the record was written under this version of the noise-stream seeds."""
    if recorded.get(STREAMS_SETTING) != streams.SCHEME:
        raise ProvenanceError(
            f"{what} {str(path)!r} was produced under version {recorded.get(STREAMS_SETTING, 1)} of the noise-stream "
            f"seeds, this is version {streams.SCHEME} (catrs_plugin.utils.streams): its random draws are not this "
            "version's, so it cannot be continued or reused", Path(path), hint,
        )


def read_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """A JSON object from ``path``.

    Raises
    ------
    ValueError
        If the file is not a UTF-8 JSON object (damaged); the message names it.
    """
    text = read_text(path, what)
    with parsing(path, what, "a JSON object"):
        settings = json.loads(text)
        if not isinstance(settings, dict):
            raise FormatError(f"it holds a JSON {type(settings).__name__}")
    return settings


def read_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The record next to ``path``, or ``None`` when there is none.

    Raises
    ------
    ValueError
        If the record is not a JSON object (damaged).
    """
    record = sidecar(path)
    return read_json(record, "provenance record") if record.exists() else None


def write_record(path: str | os.PathLike, settings: Mapping[str, Any]) -> None:
    """Write the record (:func:`stamped` ``settings``) next to ``path`` atomically."""
    write_atomic(sidecar(path), json.dumps(normalise(stamped(settings)), indent=1, sort_keys=True) + "\n")


def start(path: str | os.PathLike, settings: Mapping[str, Any], resume: bool = True, what: str = "output",
          hint: str = DEFAULT_HINT) -> bool:
    """Prepare a file that rows are appended to: continue it, or start it afresh.

    Returns ``True`` when ``resume`` is set and ``path`` exists with a record equal to
    ``settings`` (the caller continues the file). Otherwise removes the old file and record,
    writes the new record and returns ``False`` (the caller creates the file).

    Raises
    ------
    ProvenanceError
        If ``resume`` is set and ``path`` exists with other settings or without a record.
    """
    path = Path(path)
    if resume and path.exists():
        check(read_record(path), settings, path, what, hint)
        return True
    path.unlink(missing_ok=True)
    write_record(path, settings)
    return False


def reuse(path: str | os.PathLike, settings: Mapping[str, Any], what: str = "output",
          hint: str = DEFAULT_HINT) -> bool:
    """Whether a file written whole can be reused: ``True`` if it exists with a record equal to
    ``settings``, ``False`` if it does not exist.

    Raises
    ------
    ProvenanceError
        If it exists with other settings or without a record.
    """
    path = Path(path)
    if not path.exists():
        return False
    check(read_record(path), settings, path, what, hint)
    return True


def save(path: str | os.PathLike, settings: Mapping[str, Any], write: Callable[[Path], None]) -> None:
    """Write a whole file with ``write(path)`` (which must write atomically), then its record."""
    path = Path(path)
    sidecar(path).unlink(missing_ok=True)
    write(path)
    write_record(path, settings)


def discard(path: str | os.PathLike) -> None:
    """Remove a file and its record (when they exist)."""
    Path(path).unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)
