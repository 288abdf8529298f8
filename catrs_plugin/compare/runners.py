"""Where independent training-and-certification runs execute: here, on every device, or on Slurm.

A job is a picklable module-level function called as ``fn(*args, device=..., log=...)``; the
runner chooses the device. Three runners share one interface (``submit(fn, *args)`` returns a
handle with ``done()`` and ``result()``):

* :class:`InProcess`: one job after the other in this process, on one device (the default);
* :class:`DevicePool`: worker processes, ``runs_per_device`` of them per device, each bound to
  its device for life, so the runs of a table spread over every visible GPU and several runs
  can share one GPU (a CAT-RS run at batch 64 leaves a large GPU mostly idle);
* :class:`SubmititRunner`: each job as a cluster job through ``submitit`` (Slurm, or its
  local executor), for labs that already schedule their GPUs that way.

:func:`run_jobs` submits jobs as soon as the job they depend on has finished (CAT-RS runs wait
for the teacher's soft labels) and collects the results. Every job resumes from its own files,
so a rerun after a failure or a cancelled Slurm job picks up where each run stopped.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import torch

from catrs_plugin.utils.defaults import DEFAULT_RUNS_PER_GPU
from catrs_plugin.utils.validation import check_positive_int

#: Seconds between checks of running jobs' states (submitit's own state cache refreshes slower).
POLL_SECONDS = 0.2

Log = Callable[[str], None]

logger = logging.getLogger(__name__)


def _log_to_stdout(prefix: str) -> None:
    """In a worker process or cluster job: the package's INFO messages on its stdout, after ``prefix``."""
    package = logging.getLogger("catrs_plugin")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)


class InProcess:
    """Run the jobs one after the other, here, on ``device``; the first failure stops the table."""

    def __init__(self, device: torch.device | str = "cpu", log: Log = logger.info) -> None:
        self.device = torch.device(device)
        self.log = log

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args, device=self.device, log=self.log)

    def describe(self) -> str:
        return f"{self.device}, one run at a time"

    def close(self) -> None:
        """Nothing to release."""


_WORKER_DEVICE: torch.device | None = None


def _bind_worker(devices: "multiprocessing.Queue[str]", cpu_threads: int, show_info: bool) -> None:
    global _WORKER_DEVICE
    _WORKER_DEVICE = torch.device(devices.get())
    if _WORKER_DEVICE.type == "cpu":
        torch.set_num_threads(cpu_threads)
    if show_info:
        _log_to_stdout(f"[{_WORKER_DEVICE} pid {os.getpid()}] ")


def _on_worker_device(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args, device=_WORKER_DEVICE, log=logger.info)


class DevicePool:
    """Worker processes spread over ``devices``: ``runs_per_device`` workers per device.

    Parameters
    ----------
    devices : sequence of str
        torch devices, e.g. ``["cuda:0", "cuda:1"]`` or ``["cpu"]``.
    runs_per_device : int
        Concurrent runs on each device.

    Workers are started with ``spawn`` (CUDA cannot be used in forked children). Workers on the
    CPU split its cores evenly between them. When this process shows the package's INFO log
    messages (as ``catrs`` does), the workers print theirs on the shared stdout, prefixed with
    their device and process id. A failed run is reported at the end; the other
    runs carry on.
    """

    def __init__(self, devices: Sequence[str], runs_per_device: int = 1) -> None:
        if not devices:
            raise ValueError("devices is empty; name at least one device, e.g. cuda:0 or cpu")
        self.devices = [str(torch.device(device)) for device in devices]
        self.runs_per_device = check_positive_int(runs_per_device, "runs_per_device")
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        slots = [device for _ in range(self.runs_per_device) for device in self.devices]
        for device in slots:
            queue.put(device)
        cpu_slots = sum(device == "cpu" for device in slots)
        threads = max(1, (os.cpu_count() or 1) // max(cpu_slots, 1))
        self._executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=len(slots), mp_context=context, initializer=_bind_worker,
            initargs=(queue, threads, logging.getLogger("catrs_plugin").isEnabledFor(logging.INFO)),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        return self._executor.submit(_on_worker_device, fn, *args)

    def describe(self) -> str:
        return f"{', '.join(self.devices)} with {self.runs_per_device} concurrent run(s) each"

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def _on_job_device(fn: Callable[..., Any], *args: Any) -> Any:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _log_to_stdout("")  # into the job's log file
    return fn(*args, device=device, log=logger.info)


class SubmititRunner:
    """Each job as a cluster job of a ``submitit`` executor, on the job's GPU (or CPU without one).

    Parameters
    ----------
    executor : submitit.Executor
        E.g. from :func:`slurm_executor`, or ``submitit.LocalExecutor(folder)`` to run the same
        jobs as local processes. Its parameters (time limit, partition, GPUs) are the caller's.
    """

    def __init__(self, executor: Any) -> None:
        self.executor = executor

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.executor.submit(_on_job_device, fn, *args)

    def describe(self) -> str:
        return f"submitit {type(self.executor).__name__} (logs in {self.executor.folder})"

    def close(self) -> None:
        """Jobs outlive the runner; nothing to release."""


def check_slurm(option: str = "--slurm") -> None:
    """Check that jobs can be submitted to Slurm here: ``submitit`` is installed and ``srun`` and
    ``sbatch`` are on the ``PATH``.

    Raises
    ------
    ImportError
        Without submitit (``pip install catrs-plugin[slurm]``).
    ValueError
        Without the Slurm commands (not a Slurm cluster), naming ``option``.
    """
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise ImportError(f"{option} needs submitit: pip install 'catrs-plugin[slurm]' (or pip install submitit)",
                          name="submitit") from None
    missing = [command for command in ("srun", "sbatch") if shutil.which(command) is None]
    if missing:
        raise ValueError(f"{option}: {' and '.join(missing)} not found on the PATH, so this is no Slurm cluster (or "
                         "Slurm's commands are not set up here); run without --slurm, or on a Slurm login node")


def slurm_executor(folder: str | os.PathLike, *, partition: str | None = None, time_min: int = 24 * 60,
                   gpus: int = 1, cpus: int = 8, extra: Mapping[str, Any] | None = None) -> Any:
    """A ``submitit.AutoExecutor`` for Slurm: one GPU job per run, logs under ``folder``.

    Needs the optional dependency ``submitit`` (``pip install catrs-plugin[slurm]``) and a Slurm
    cluster (:func:`check_slurm`). ``extra`` holds further ``update_parameters`` arguments (e.g.
    ``slurm_account``).
    """
    check_slurm()
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    parameters: dict[str, Any] = {"timeout_min": time_min, "gpus_per_node": gpus, "cpus_per_task": cpus,
                                  **dict(extra or {})}
    if partition:
        parameters["slurm_partition"] = partition
    executor.update_parameters(**parameters)
    return executor


@dataclass(frozen=True)
class Job:
    """One unit of work: ``fn(*args)``, submitted once ``after`` (a job key) has succeeded."""

    fn: Callable[..., Any]
    args: tuple
    after: Hashable | None = None


def run_jobs(runner: Any, jobs: Mapping[Hashable, Job], poll: float = POLL_SECONDS) -> tuple[dict, dict]:
    """Run ``jobs`` on ``runner`` respecting ``after``; returns ``(results, failures)`` by job key.

    :class:`InProcess` runs them in the order given (which must list a job after the job it
    needs) and lets the first exception propagate. The other runners submit every job whose
    dependency has succeeded, keep going when one fails, and return the failures (a failed
    job's dependants are not started).
    """
    results: dict[Hashable, Any] = {}
    if isinstance(runner, InProcess):
        for key, job in jobs.items():
            results[key] = runner.run(job.fn, *job.args)
        return results, {}
    failures: dict[Hashable, BaseException] = {}
    pending: dict[Hashable, Any] = {}
    waiting = dict(jobs)

    def release(done_key: Hashable | None) -> None:
        for key, job in list(waiting.items()):
            if job.after == done_key:
                del waiting[key]
                pending[key] = runner.submit(job.fn, *job.args)

    release(None)
    while pending:
        finished = [key for key, handle in pending.items() if handle.done()]
        if not finished:
            time.sleep(poll)
            continue
        for key in finished:
            try:
                results[key] = pending.pop(key).result()
            except Exception as error:  # noqa: BLE001 - reported with the other failures
                failures[key] = error
                continue
            release(key)
    for key, job in waiting.items():
        failures[key] = RuntimeError(f"not started: the job it needs ({job.after!r}) failed")
    return results, failures


__all__ = ["DEFAULT_RUNS_PER_GPU", "DevicePool", "InProcess", "Job", "SubmititRunner", "check_slurm", "run_jobs",
           "slurm_executor"]
