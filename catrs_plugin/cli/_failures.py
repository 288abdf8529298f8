"""The last resort of the ``catrs`` command: known failures as one line naming the argument concerned.

Every argument and file is checked before work starts (:mod:`catrs_plugin.cli._checks`, the
readers of :mod:`catrs_plugin.utils.reading`), but some failures only the operating system or
torch can tell: an allocation that does not fit, a device that fails, a full disk, a file that
torch or pickle cannot parse, a missing optional package. :func:`explain` recognises them and
says, on one line, which argument they concern; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import pickle
import re
import struct
import sys
import zipfile

#: Kind of failure -> the arguments (argparse ``dest``) it concerns, the first one given wins.
ARGUMENTS = {
    "memory": ("batch", "certify_batch"),
    "device": ("devices", "device"),
    "disk": ("outfile", "outdir", "checkpoint", "output"),
    "format": ("base_classifier", "teacher", "checkpoint", "soft_labels", "files", "data_dir"),
}

#: Optional package -> the argument that needs it.
PACKAGES = {"robustbench": "split", "pyautoattack": "split", "submitit": "slurm", "art": "attack_eps"}

_MEMORY = re.compile(r"can't allocate memory|out of memory|not enough memory|failed to allocate|bad_alloc", re.I)
_DEVICE = re.compile(r"CUDA error|cuDNN|CUBLAS|device-side assert|no kernel image|meta tensor|'Meta' backend|"
                     r"MPS backend|on the same device|Found no NVIDIA driver", re.I)
_DISK = re.compile(r"file write failed|PytorchStreamWriter|No space left", re.I)
_FORMAT = re.compile(r"PytorchStreamReader|Error\(s\) in loading state_dict|size mismatch|invalid load key", re.I)
_DISK_ERRORS = {getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS", "EIO", "EFBIG") if hasattr(errno, name)}


def classify(error: BaseException) -> str | None:
    """``memory``, ``device``, ``disk``, ``format``, ``dependency`` or None (not a known failure)."""
    text = str(error)
    torch = sys.modules.get("torch")  # not imported: no torch error (`catrs analyze` does not import it)
    out_of_memory = (MemoryError,) if torch is None else (MemoryError, torch.OutOfMemoryError)
    if isinstance(error, out_of_memory) or (isinstance(error, RuntimeError) and _MEMORY.search(text)):
        return "memory"
    if isinstance(error, OSError) and error.errno in _DISK_ERRORS:
        return "disk"
    if isinstance(error, ImportError):
        return "dependency"
    if isinstance(error, (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, UnicodeDecodeError, struct.error)):
        return "format"
    if isinstance(error, (RuntimeError, NotImplementedError)):
        for kind, pattern in (("device", _DEVICE), ("disk", _DISK), ("format", _FORMAT)):
            if pattern.search(text):
                return kind
    return None


def _argument(args: argparse.Namespace, options: dict[str, str], dests: tuple[str, ...]) -> str:
    """``"--batch 100000: "`` for the first of ``dests`` the command has and was given, else ``""``."""
    for dest in dests:
        value = getattr(args, dest, None)
        if dest in options and value not in (None, False, [], ""):
            if value is True:
                return f"{options[dest]}: "
            return f"{options[dest]} {value!r}: " if isinstance(value, str) else f"{options[dest]} {value}: "
    return ""


def explain(error: BaseException, args: argparse.Namespace, options: dict[str, str]) -> str | None:
    """One line for a known failure, starting with the argument it concerns; None for anything else."""
    from catrs_plugin.compare.run import RunsFailed, describe_job

    if isinstance(error, RunsFailed):
        parts = [f"{describe_job(key)}: {explain(failure, args, options) or f'{type(failure).__name__}: {failure}'}"
                 for key, failure in error.failures.items()]
        return (f"{len(parts)} run(s) failed ({'; '.join(parts)}); the others finished, rerun the same command to "
                "resume them")
    kind = classify(error)
    text = " ".join(str(error).split()) or type(error).__name__
    if kind == "memory":
        return (f"{_argument(args, options, ARGUMENTS['memory'])}not enough memory ({text}); give a smaller batch "
                "(results do not depend on it)")
    if kind == "device":
        return f"{_argument(args, options, ARGUMENTS['device'])}the device failed: {text}"
    if kind == "disk":
        return f"{_argument(args, options, ARGUMENTS['disk'])}cannot write the output: {text}"
    if kind == "format":
        return f"{_argument(args, options, ARGUMENTS['format'])}a file is damaged or of another kind: {text}"
    if kind == "dependency":
        package = (getattr(error, "name", None) or "").split(".")[0]
        needs = _argument(args, options, (PACKAGES[package],)) if package in PACKAGES else ""
        return f"{needs}a missing optional package: {text}"
    return None

