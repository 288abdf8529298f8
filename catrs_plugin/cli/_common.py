"""Options and helpers shared by several ``catrs`` sub-commands.

Building the parser imports nothing heavy (``catrs --help`` does not import torch): the sub-command
modules import the core inside the functions that run a command, and so does this module.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import numpy as np
    import torch

    from catrs_plugin.plugins.specs import DatasetSpec


def say(text: str) -> None:
    """Print a line of a command's output on ``sys.stdout`` without breaking the progress bars on the terminal
    (``tqdm.write``: the bars are cleared, the line printed, the bars drawn again below it)."""
    from tqdm import tqdm

    tqdm.write(text, file=sys.stdout)
    sys.stdout.flush()


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    parser.add_argument("--device", default="auto", help="torch device; auto picks CUDA when available (default: auto)")


def resolve_device(name: str, option: str = "--device") -> torch.device:
    """The device named on the command line by ``option`` (``auto``: CUDA if available, else CPU).

    ``cpu:0`` is the CPU; ``mps`` is accepted where torch has the MPS backend.

    Raises
    ------
    ValueError
        If the name is not a device this package runs on (``meta`` and other kinds of device are
        not), or names a CUDA or MPS device this machine does not have.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps") or (device.type != "cuda" and device.index):
        raise ValueError(f"{option} must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if device.type == "cpu":
        return torch.device("cpu")  # torch.load cannot map to "cpu:0"
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{option} {name}: the MPS backend is not available on this machine; use --device cpu "
                             "or auto")
        return torch.device("mps")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {name}: CUDA is not available on this machine; use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{option} {name}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def positive_int(text: str) -> int:
    """argparse type of counts and sizes: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def batch_size_argument(text: str) -> int | str:
    """argparse type of ``--batch`` options: an integer >= 1 or ``auto``."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 or auto, got {text!r}") from None


def claim_output(args: argparse.Namespace, path: str | os.PathLike, name: str) -> Path:
    """Lock the output ``path`` (a file or a folder) until the command ends, before any work.

    A second command writing the same output is refused at once (:mod:`catrs_plugin.utils.locking`),
    before it loads anything or, with ``--restart``, removes anything. Only rank 0 of a distributed
    run locks (the other ranks write no shared output).

    Raises
    ------
    catrs_plugin.utils.locking.OutputLocked
        If another run holds the lock; the message names ``name`` and who holds it.
    """
    from catrs_plugin.certify.distributed import rank_and_world
    from catrs_plugin.utils import locking

    path = Path(path)
    if rank_and_world()[0] == 0:
        args.held_outputs.enter_context(locking.exclusive(path, name))
    return path


@contextlib.contextmanager
def for_argument(name: str) -> Iterator[None]:
    """Prefix the message of a :class:`ValueError` or :class:`FileNotFoundError` with the argument it concerns."""
    try:
        yield
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{name}: {error}") from None
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: where file-based datasets live (ignored by the embedded digits data)."""
    parser.add_argument("--data-dir", default=None, help="directory holding the dataset files")


def load_split(dataset: str, split: str, data_dir: str | None) -> tuple[DatasetSpec, np.ndarray, np.ndarray]:
    """The dataset's spec and one split as numpy arrays."""
    from catrs_plugin.plugins.registry import get_registry

    spec = get_registry().dataset(dataset)
    if split not in spec.splits:
        raise ValueError(f"--split must be one of {', '.join(spec.splits)} for dataset {dataset!r}, got {split!r}")
    with for_argument("--data-dir"):
        x, y = spec.load(split, data_dir=data_dir)
    return spec, x, y


#: What the table commands print (``--format``): aligned plain text, a Markdown pipe table, or a LaTeX
#: ``tabular`` with booktabs rules (:func:`catrs_plugin.results.report.render_table`).
TABLE_FORMATS = ("table", "markdown", "latex")


def add_format_argument(parser: argparse.ArgumentParser, default: str = "table", extra: tuple[str, ...] = ()) -> None:
    """``--format``: one of :data:`TABLE_FORMATS` (and ``extra`` ones, e.g. ``json``)."""
    parser.add_argument("--format", choices=(*TABLE_FORMATS, *extra), default=default,
                        help="how tables are printed: table (aligned text), markdown, latex (a booktabs tabular, "
                             f"\\usepackage{{booktabs}}){''.join(f', {name}' for name in extra)} (default: {default})")


def table_style(name: str) -> dict[str, bool]:
    """The ``markdown`` / ``latex`` keywords of the table renderers for ``--format NAME``."""
    return {"markdown": name == "markdown", "latex": name == "latex"}

