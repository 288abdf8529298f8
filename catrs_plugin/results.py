"""Cohen-format result files: ``idx label predict radius correct time``, one row per example.

Rows are appended and flushed one at a time, so a killed run loses at most the row it was
writing; :class:`ResultWriter` drops such a partial last line and reports which indices are
already done, so that the run can continue where it stopped.
"""

from __future__ import annotations

import csv
import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CERTIFY_HEADER = ("idx", "label", "predict", "radius", "correct", "time")
PREDICT_HEADER = ("idx", "label", "predict", "correct", "time")

_TIME = re.compile(r"^(?:(?P<days>-?\d+) days?, )?(?P<h>\d+):(?P<m>\d{2}):(?P<s>\d{2}(?:\.\d+)?)$")


def format_time(seconds: float) -> str:
    """Format seconds the way Cohen et al.'s scripts do: ``str(datetime.timedelta)``."""
    return str(datetime.timedelta(seconds=float(seconds)))


def parse_time(text: str) -> float:
    """Seconds from a ``H:MM:SS[.ffffff]`` field, optionally prefixed by ``D day(s),``."""
    match = _TIME.match(text.strip())
    if match is None:
        raise ValueError(f"time field {text!r} is not of the form H:MM:SS.ffffff")
    days = int(match.group("days") or 0)
    return days * 86400 + int(match.group("h")) * 3600 + int(match.group("m")) * 60 + float(match.group("s"))


def format_certify_row(idx: int, label: int, predict: int, radius: float, seconds: float) -> str:
    """One tab-separated CERTIFY row; the radius keeps 3 significant digits like ``certify.py``."""
    correct = int(predict == label)
    return f"{idx}\t{label}\t{predict}\t{radius:.3}\t{correct}\t{format_time(seconds)}"


def format_predict_row(idx: int, label: int, predict: int, seconds: float) -> str:
    """One tab-separated PREDICT row, as written by Cohen et al.'s ``predict.py``."""
    return f"{idx}\t{label}\t{predict}\t{int(predict == label)}\t{format_time(seconds)}"


@dataclass(frozen=True)
class CertifyResults:
    """Columns of a Cohen-format CERTIFY file as numpy arrays (``time`` in seconds)."""

    path: str
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    radius: np.ndarray
    correct: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return len(self.idx)


def read_certify_results(path: str | os.PathLike) -> CertifyResults:
    """Read a Cohen-format CERTIFY TSV (header ``idx label predict radius correct time``).

    Raises
    ------
    ValueError
        If the header or a row is malformed; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"result file {str(path)!r} does not exist")
    lines = path.read_text().splitlines()
    if not lines or tuple(lines[0].split()) != CERTIFY_HEADER:
        raise ValueError(
            f"{path}: first line must be the header {' '.join(CERTIFY_HEADER)!r} (tab-separated)"
        )
    columns: list[list] = [[] for _ in CERTIFY_HEADER]
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(CERTIFY_HEADER):
            raise ValueError(f"{path}:{number}: expected {len(CERTIFY_HEADER)} tab-separated fields, got {len(fields)}")
        try:
            values = (int(fields[0]), int(fields[1]), int(fields[2]), float(fields[3]), int(fields[4]), parse_time(fields[5]))
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
        for column, value in zip(columns, values):
            column.append(value)
    idx, label, predict, radius, correct, seconds = columns
    return CertifyResults(
        path=str(path),
        idx=np.asarray(idx, dtype=np.int64),
        label=np.asarray(label, dtype=np.int64),
        predict=np.asarray(predict, dtype=np.int64),
        radius=np.asarray(radius, dtype=np.float64),
        correct=np.asarray(correct, dtype=np.int64),
        time=np.asarray(seconds, dtype=np.float64),
    )


def predict_accuracy(path: str | os.PathLike) -> float:
    """Fraction of rows of a Cohen-format PREDICT file with ``correct == 1`` (abstentions count as errors)."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path} holds no PREDICT rows")
    return float(np.mean([int(row["correct"]) == 1 for row in rows]))


class ResultWriter:
    """Append rows to a result file, resuming after the last complete row.

    Parameters
    ----------
    path : str or os.PathLike
        The TSV to write.
    header : tuple of str
        :data:`CERTIFY_HEADER` or :data:`PREDICT_HEADER`.
    resume : bool
        Keep the complete rows of an existing file (default) instead of starting over.

    Attributes
    ----------
    done : set of int
        Indices whose rows the file already holds.
    """

    def __init__(self, path: str | os.PathLike, header: tuple[str, ...] = CERTIFY_HEADER, resume: bool = True) -> None:
        self.path = Path(path)
        self.header = header
        self.done: set[int] = set()
        if resume and self.path.exists():
            self._recover()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w") as handle:
                handle.write("\t".join(header) + "\n")
        self._handle = open(self.path, "a")

    def _recover(self) -> None:
        text = self.path.read_text()
        header = "\t".join(self.header)
        if not text.startswith(header + "\n"):
            raise ValueError(
                f"{self.path} exists but does not start with the header {header!r}; "
                "pass another output path or remove the file"
            )
        complete = text[: text.rfind("\n") + 1]
        for line in complete.splitlines()[1:]:
            fields = line.split("\t")
            if len(fields) == len(self.header):
                self.done.add(int(fields[0]))
        if complete != text:
            with open(self.path, "r+") as handle:
                handle.truncate(len(complete.encode()))

    def write(self, line: str) -> None:
        """Append one formatted row and flush it to the operating system."""
        self._handle.write(line + "\n")
        self._handle.flush()
        self.done.add(int(line.split("\t", 1)[0]))

    def close(self) -> None:
        """Close the file."""
        self._handle.close()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
