"""Runs over several processes and machines with ``torch.distributed`` (launched by ``torchrun``).

Training: :func:`catrs_plugin.train.loop.train` wraps the model in ``DistributedDataParallel``
whenever a process group is initialised, and splits every loader batch across the ranks.

Certification: each rank certifies every ``world``-th selected example (``indices[rank::world]``)
into its own file ``OUTFILE.rank{r}``, appended and flushed row by row like a single-process
run. :func:`merge_shards` then writes ``OUTFILE``: the rows of all shards in the order of the
selected indices. Because the noise of an example depends only on the seed and the example's
index, the merged file equals a single-process run with the same seed, apart from ``time``.
Every shard records the run that produced it (model, data, the whole run's selection,
settings: see :mod:`catrs_plugin.utils.provenance`); shards are only merged when their records agree,
and the merged file gets the same record.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import warnings
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from catrs_plugin.results.tsv import read_table
from catrs_plugin.utils import locking, provenance
from catrs_plugin.utils.atomic import write_atomic

#: How long ranks that finished their shard wait for the others before the merge: shards of a
#: large data set can take very different times, so the default 30 minutes is far too short.
SHARD_TIMEOUT = datetime.timedelta(days=7)


#: How to get shards that belong together.
MERGE_HINT = "rerun the distributed certification (with --restart to start afresh) to write every shard again"


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the default process group, ``(0, 1)`` when there is none."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(
    device: torch.device, backend: str | None = None, timeout: datetime.timedelta | None = None
) -> torch.device:
    """Join the process group ``torchrun`` describes, and return this rank's device.

    Does nothing (and returns ``device``) unless the environment names more than one process
    (``WORLD_SIZE > 1``) or a group already exists. On CUDA without an explicit index the
    device becomes ``cuda:LOCAL_RANK``.

    Parameters
    ----------
    device : torch.device
        The device asked for (``cpu`` or ``cuda``).
    backend : str, optional
        ``nccl`` for CUDA and ``gloo`` otherwise by default; certification only needs a
        barrier and uses ``gloo`` everywhere.
    timeout : datetime.timedelta, optional
        Timeout of collective operations (the ``torch.distributed`` default when omitted).
    """
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    options = {} if timeout is None else {"timeout": timeout}
    dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"), **options)
    atexit.register(_destroy)
    return device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_path(outfile: str | os.PathLike, rank: int) -> Path:
    """The file rank ``rank`` writes its rows to: ``OUTFILE.rank{rank}``."""
    return Path(f"{os.fspath(outfile)}.rank{rank}")


@contextlib.contextmanager
def sharded_output(outfile: str | os.PathLike, indices: Sequence[int] | np.ndarray) -> Iterator[tuple[Path, np.ndarray]]:
    """This rank's output file and share of ``indices``; on exit, merge all shards into ``outfile``.

    Without a process group this yields ``(outfile, indices)`` unchanged. With one, it yields
    ``(OUTFILE.rank{r}, indices[r::world])``; after the body, every rank waits for the others
    and rank 0 writes the merged ``outfile``, checking that every selected index is there.
    When rank 0 cannot see every shard (nodes without a shared file system), it warns and
    leaves the merge to :func:`merge_shards` (``catrs merge-shards``) after the shards are
    copied together.
    """
    indices = np.asarray(indices, dtype=np.int64)
    rank, world = rank_and_world()
    if world == 1:
        yield Path(outfile), indices
        return
    yield shard_path(outfile, rank), indices[rank::world]
    dist.barrier()
    shards = [shard_path(outfile, r) for r in range(world)]
    missing = [str(path) for path in shards if not path.exists()]
    if rank == 0 and missing:
        warnings.warn(
            f"cannot merge: {', '.join(missing)} not visible on this machine (no shared file system?); "
            f"copy every shard next to {os.fspath(outfile)} and run `catrs merge-shards {os.fspath(outfile)}`",
            RuntimeWarning,
            stacklevel=3,
        )
    elif rank == 0:
        merge_shards(outfile, shards, expected=indices)
    dist.barrier()


def find_shards(outfile: str | os.PathLike) -> list[Path]:
    """The shard files ``OUTFILE.rank{r}`` next to ``outfile``, by rank."""
    outfile = Path(outfile)
    found = []
    for candidate in outfile.parent.glob(f"{outfile.name}.rank*"):
        suffix = candidate.name[len(outfile.name) + len(".rank"):]
        if suffix.isdigit():
            found.append((int(suffix), candidate))
    return [path for _, path in sorted(found)]


@locking.holding(lambda arguments: arguments["outfile"], "result file")
def merge_shards(
    outfile: str | os.PathLike,
    shards: Sequence[str | os.PathLike] | None = None,
    expected: Sequence[int] | np.ndarray | None = None,
) -> int:
    """Merge per-rank result files into one Cohen-format TSV, written atomically.

    Parameters
    ----------
    outfile : str or os.PathLike
        The merged file (replaced if it exists).
    shards : sequence of paths, optional
        The shard files (default: every ``OUTFILE.rank{r}`` found).
    expected : sequence of int, optional
        The selected indices: rows come out in this order and a missing index is an error.
        Without it, rows are sorted by index.

    Returns
    -------
    int
        Number of rows written.

    Raises
    ------
    ValueError
        If the shards have different headers, disagree on an example (an index certified twice,
        e.g. after a restart with another number of ranks, must give the same row apart from
        ``time``), or miss an expected index.
    catrs_plugin.utils.provenance.ProvenanceError
        If a shard has no provenance record or was produced by another run than the others
        (the merged file gets their common record).
    FileNotFoundError
        If there is no shard.
    """
    paths = [Path(p) for p in shards] if shards is not None else find_shards(outfile)
    if not paths:
        raise FileNotFoundError(f"no shard files {os.fspath(outfile)}.rank0, .rank1, ... to merge")
    records = [provenance.read_record(path) for path in paths]
    for path, other in zip(paths, records):
        if other is None:
            provenance.check(None, {}, path, "shard", MERGE_HINT)  # the message of an output without a record
        provenance.check_streams(other, path, "shard", MERGE_HINT)
        changed = provenance.differences(records[0], other, "{key} {old} in the first shard, {new} in this one")
        if changed:
            raise provenance.ProvenanceError(
                f"shard {str(path)!r} comes from another run than {str(paths[0])!r} ({'; '.join(changed)})",
                path, MERGE_HINT)
    header, rows = None, {}
    for path in paths:
        table = read_table(path, cut_last_row=True)  # a row cut short by a killed run: that run redoes it
        if header not in (None, table.header):
            raise ValueError(f"{path}: its header {' '.join(table.header)!r} is not that of the other shards "
                             f"({' '.join(header)!r})")
        header = table.header
        for line in table.lines:
            fields = line.split("\t")
            index = int(fields[0])
            if index in rows and rows[index][:-1] != fields[:-1]:
                raise ValueError(f"{path}: example {index} has rows that differ beyond the time column: "
                                 f"{rows[index]} and {fields}")
            rows.setdefault(index, fields)
    if expected is None:
        order = sorted(rows)
    else:
        order = [int(i) for i in expected]
        missing = [i for i in order if i not in rows]
        if missing:
            raise ValueError(f"the shards lack {len(missing)} of {len(order)} selected examples "
                             f"(first: {missing[:5]}); rerun the certification to complete them")
    text = "\n".join(["\t".join(header)] + ["\t".join(rows[i]) for i in order]) + "\n"
    provenance.save(outfile, records[0], lambda path: write_atomic(path, text))
    return len(order)
