"""Cohen-format result files: ``idx label predict radius correct time``, one row per example.

Sequential certification (:mod:`catrs_plugin.certify.sequential`) writes the same columns plus
``samples``, the estimation samples of each row, before ``time``
(:data:`SEQUENTIAL_HEADER`); every reader here accepts both kinds.

Rows are appended and flushed one at a time, so a killed run loses at most the row it was
writing; :class:`ResultWriter` drops such a partial last line and reports which indices are
already done, so that the run can continue where it stopped. It continues a file only when
the record next to it (``<file>.provenance.json``, see :mod:`catrs_plugin.utils.provenance`) says
the rows come from the same model, data and settings; the TSV itself keeps the exact format of
Cohen et al.'s scripts, so other tools read it unchanged.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterable, Mapping

import numpy as np

from catrs_plugin.utils import locking, provenance
from catrs_plugin.utils.reading import read_text
from catrs_plugin.utils.validation import check_output_file

CERTIFY_HEADER = ("idx", "label", "predict", "radius", "correct", "time")
SEQUENTIAL_HEADER = ("idx", "label", "predict", "radius", "correct", "samples", "time")
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


def format_certify_row(idx: int, label: int, predict: int, radius: float, seconds: float,
                       samples: int | None = None) -> str:
    """One tab-separated CERTIFY row; the radius keeps 3 significant digits like ``certify.py``.

    With ``samples`` (sequential certification's estimation samples) the row has the columns of
    :data:`SEQUENTIAL_HEADER`.
    """
    correct = int(predict == label)
    extra = "" if samples is None else f"{int(samples)}\t"
    return f"{idx}\t{label}\t{predict}\t{radius:.3}\t{correct}\t{extra}{format_time(seconds)}"


def format_predict_row(idx: int, label: int, predict: int, seconds: float) -> str:
    """One tab-separated PREDICT row, as written by Cohen et al.'s ``predict.py``."""
    return f"{idx}\t{label}\t{predict}\t{int(predict == label)}\t{format_time(seconds)}"


@dataclass(frozen=True)
class CertifyResults:
    """Columns of a Cohen-format CERTIFY file as numpy arrays (``time`` in seconds); ``samples``
    is the estimation samples per row of a sequential file, ``None`` for an exact CERTIFY file."""

    path: str
    idx: np.ndarray
    label: np.ndarray
    predict: np.ndarray
    radius: np.ndarray
    correct: np.ndarray
    time: np.ndarray
    samples: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.idx)


#: How each column of each kind of file is parsed.
_COLUMN_TYPES = {
    CERTIFY_HEADER: (int, int, int, float, int, parse_time),
    SEQUENTIAL_HEADER: (int, int, int, float, int, int, parse_time),
    PREDICT_HEADER: (int, int, int, int, parse_time),
}


@dataclass(frozen=True)
class ResultTable:
    """The rows of a Cohen-format file as :func:`read_table` found them.

    Attributes
    ----------
    header : tuple of str
        :data:`CERTIFY_HEADER`, :data:`SEQUENTIAL_HEADER` or :data:`PREDICT_HEADER`.
    lines : list of str
        The complete rows as written (without the newline).
    values : list of tuple
        The same rows parsed (``time`` in seconds).
    complete_bytes : int
        Length of the file up to the end of its last complete row.
    """

    header: tuple[str, ...]
    lines: list[str]
    values: list[tuple]
    complete_bytes: int


def read_table(
    path: str | os.PathLike,
    headers: tuple[tuple[str, ...], ...] = (CERTIFY_HEADER, SEQUENTIAL_HEADER, PREDICT_HEADER),
    cut_last_row: bool = False,
) -> ResultTable:
    """Read and check every row of a Cohen-format file.

    Parameters
    ----------
    path : str or os.PathLike
        The TSV.
    headers : tuple of header tuples
        The kinds of file accepted.
    cut_last_row : bool
        Ignore a last line without a newline (a row a killed run was writing) instead of
        parsing it.

    Raises
    ------
    ValueError
        If the file is not UTF-8 text, lacks one of ``headers`` as its first line, holds a
        malformed or impossible row (:func:`check_row`), or two rows of one example; the
        message names the file (and line).
    """
    path = Path(path)
    text = read_text(path, "result file")
    if cut_last_row:
        text = text[: text.rfind("\n") + 1]
    lines = text.splitlines()
    header = tuple(lines[0].split()) if lines else ()
    if header not in headers:
        expected = " or ".join(repr(" ".join(h)) for h in headers)
        found = f"starts with {lines[0][:80]!r}" if lines else "is empty"
        raise ValueError(f"{path}: a Cohen-format result file starts with the header {expected} (tab-separated); "
                         f"this file {found}")
    types = _COLUMN_TYPES[header]
    rows, values = [], []
    first_line: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(types):
            raise ValueError(f"{path}:{number}: expected {len(types)} tab-separated fields "
                             f"({' '.join(header)}), got {len(fields)}: {line[:80]!r}")
        try:
            row = dict(zip(header, (parse(field) for parse, field in zip(types, fields))))
            check_row(row)
        except ValueError as error:
            raise ValueError(f"{path}:{number}: {error}") from None
        if row["idx"] in first_line:
            raise ValueError(f"{path}:{number}: example {row['idx']} already has a row (line "
                             f"{first_line[row['idx']]}); a result file holds one row per example (did two runs "
                             "write into it at once?)")
        first_line[row["idx"]] = number
        values.append(tuple(row.values()))
        rows.append(line)
    return ResultTable(header, rows, values, len(text.encode()))


def check_row(row: Mapping[str, Any]) -> None:
    """Refuse a parsed row whose values cannot come from CERTIFY or PREDICT, by column name (any kind of file).

    ``idx`` and ``label`` are >= 0, ``predict`` a class or -1 (abstain), ``radius`` finite and >= 0
    (0 on abstain), ``correct`` 1 exactly when ``predict == label`` and 0 otherwise, ``time`` and a
    sequential file's ``samples`` >= 0.
    Columns of other names are not checked here.

    Raises
    ------
    ValueError
        Naming the column and the value.
    """
    for name in ("idx", "label", "time", "samples"):
        if name in row and not row[name] >= 0:
            raise ValueError(f"{name} must be >= 0, got {row[name]}")
    if "predict" in row and row["predict"] < -1:
        raise ValueError(f"predict must be a class index or -1 (abstain), got {row['predict']}")
    if "radius" in row:
        radius = row["radius"]
        if not (math.isfinite(radius) and radius >= 0):
            raise ValueError(f"radius must be a finite number >= 0, got {radius}")
        if row.get("predict") == -1 and radius != 0:
            raise ValueError(f"an abstention (predict -1) has radius 0, got {radius}")
    if "correct" in row and {"predict", "label"} <= set(row):
        expected = int(row["predict"] == row["label"])
        if row["correct"] != expected:
            raise ValueError(f"correct must be {expected} for predict {row['predict']} and label {row['label']} "
                             f"(1 exactly when they are equal), got {row['correct']}")


def read_certify_results(path: str | os.PathLike) -> CertifyResults:
    """Read a Cohen-format CERTIFY TSV (header ``idx label predict radius correct time``), or a
    sequential one (with ``samples`` before ``time``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If it is not a CERTIFY file (a folder, binary, another header, a malformed row); the
        message names the file and line.
    """
    table = read_table(path, (CERTIFY_HEADER, SEQUENTIAL_HEADER))
    columns = dict(zip(table.header, zip(*table.values) if table.values else [()] * len(table.header)))
    return CertifyResults(
        path=str(path),
        idx=np.asarray(columns["idx"], dtype=np.int64),
        label=np.asarray(columns["label"], dtype=np.int64),
        predict=np.asarray(columns["predict"], dtype=np.int64),
        radius=np.asarray(columns["radius"], dtype=np.float64),
        correct=np.asarray(columns["correct"], dtype=np.int64),
        time=np.asarray(columns["time"], dtype=np.float64),
        samples=np.asarray(columns["samples"], dtype=np.int64) if "samples" in columns else None,
    )


def predict_accuracy(path: str | os.PathLike) -> float:
    """Fraction of rows of a Cohen-format PREDICT file with ``correct == 1`` (abstentions count as errors)."""
    table = read_table(path, (PREDICT_HEADER,))
    if not table.values:
        raise ValueError(f"{path} holds no PREDICT rows")
    return float(np.mean([row[3] == 1 for row in table.values]))


class ResultWriter:
    """Append rows to a result file, resuming after the last complete row of the same run.

    A file is continued only when its record (``<path>.provenance.json``, see
    :mod:`catrs_plugin.utils.provenance`) holds the same settings, apart from the selection of
    examples: because every row depends only on its own example, a rerun may select more
    examples (e.g. a larger ``--max``) and the continued file then equals a fresh run with the
    new selection. A rerun whose selection leaves out rows the file already holds is refused.

    The writer holds the file's lock (:mod:`catrs_plugin.utils.locking`) from its creation to
    :meth:`close`, so that a second writer of the same file is refused before it reads or
    changes anything. A new file (or the file that ``resume=False`` replaces) is only created
    with the first row: a run that fails before leaves the path as it was.

    Parameters
    ----------
    path : str or os.PathLike
        The TSV to write.
    settings : mapping
        What produces the rows (model digest, data, sigma, N, ...; the selection under
        ``indices``), recorded next to the file.
    header : tuple of str
        :data:`CERTIFY_HEADER`, :data:`SEQUENTIAL_HEADER` or :data:`PREDICT_HEADER`.
    resume : bool
        Keep the complete rows of an existing file (default) instead of starting over.
    selection : iterable of int, optional
        The example indices this run writes; required for continuing a file whose record
        names another selection.

    Attributes
    ----------
    done : set of int
        Indices whose rows the file already holds.

    Raises
    ------
    catrs_plugin.utils.provenance.ProvenanceError
        If ``resume`` is set and the file exists but was produced with other settings, holds
        rows outside ``selection``, or nothing records what produced it.
    catrs_plugin.utils.locking.OutputLocked
        If another process or thread is writing the file.
    ValueError
        If an existing file is not a result file of this kind (or holds impossible or
        duplicate rows), or the path is not a regular file that can be written.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        settings: Mapping[str, Any],
        header: tuple[str, ...] = CERTIFY_HEADER,
        resume: bool = True,
        selection: Iterable[int] | None = None,
    ) -> None:
        self.path = check_output_file(path, "result file")
        self.header = header
        self.settings = settings
        self.done: set[int] = set()
        self._handle: IO[str] | None = None
        self._lock = locking.acquire(self.path, "result file")
        try:
            table = None
            if resume and self.path.exists():
                recorded = provenance.read_record(self.path)
                provenance.check(recorded, settings, self.path, "result file", ignore=("indices",))
                table = self._read()
            if table is not None:
                self.done = {int(values[0]) for values in table.values}
                self._check_selection(recorded, settings, selection)
                if table.complete_bytes != self.path.stat().st_size:
                    with open(self.path, "r+b") as handle:
                        handle.truncate(table.complete_bytes)  # a row cut short by a killed run
                provenance.write_record(self.path, settings)  # the selection may have grown
                self._handle = open(self.path, "a")
        except BaseException:
            locking.release(self._lock)
            raise

    def _start(self) -> None:
        """Replace whatever was at the path by a new file with the header (and its record): on the
        first row, so that a run that fails before its first row leaves the old file as it was."""
        provenance.start(self.path, self.settings, resume=False)
        with open(self.path, "w") as handle:
            handle.write("\t".join(self.header) + "\n")
        self._handle = open(self.path, "a")

    def _read(self) -> ResultTable | None:
        """The complete rows of the existing file; None if a killed run did not even finish the header."""
        header_line = ("\t".join(self.header) + "\n").encode()
        with open(self.path, "rb") as handle:
            head = handle.read(len(header_line))  # enough to tell; read_table reads the rest
        if b"\n" not in head and header_line.startswith(head):
            return None
        return read_table(self.path, (self.header,), cut_last_row=True)

    def _check_selection(self, recorded: Mapping[str, Any], settings: Mapping[str, Any],
                         selection: Iterable[int] | None) -> None:
        """A rerun may select more examples, never fewer than the file holds (the file must equal a fresh run)."""
        if recorded.get("indices") == settings.get("indices"):
            return
        outside = sorted(self.done - {int(i) for i in selection}) if selection is not None else sorted(self.done)
        if outside:
            raise provenance.ProvenanceError(
                f"result file {str(self.path)!r} holds rows of {len(outside)} examples this run does not select "
                f"(first: {outside[:5]}); it was written for {recorded.get('indices')}, this run selects "
                f"{settings.get('indices')} (another selection of examples, e.g. other --skip or --max)", self.path,
            )

    def write(self, line: str) -> None:
        """Append one formatted row and flush it to the operating system."""
        if self._handle is None:
            self._start()
        self._handle.write(line + "\n")
        self._handle.flush()
        self.done.add(int(line.split("\t", 1)[0]))

    def close(self) -> None:
        """Close the file (a new file gets its header even without rows) and release the lock."""
        if self._lock is None:
            return
        try:
            if self._handle is None:
                self._start()
            self._handle.close()
        finally:
            locking.release(self._lock)
            self._lock = None

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        if kind is not None and self._handle is None and self._lock is not None:
            locking.release(self._lock)  # failed before the first row: the path stays as it was
            self._lock = None
            return
        self.close()
