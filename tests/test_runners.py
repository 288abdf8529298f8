"""The whole table in one command: runs spread over worker processes (two on the CPU here) or submitted
through submitit's local executor give the numbers a run in this process gives, resume, and merge."""

import csv
import os
import re
import time

import pytest
import torch

from catrs_plugin.compare import Budget, parse_methods, run_comparison
from catrs_plugin.compare.runners import DevicePool, InProcess, Job, SubmititRunner, run_jobs
from catrs_plugin.plugins.registry import get_registry

TINY = Budget(epochs=1, batch_size=128, lr=0.1, lr_step_size=1, soft_samples=20, n0=20, n=100, alpha=0.01,
              max_examples=12, train_examples=128)
SIGMAS = [0.25, 0.5]
#: Threads per worker when two workers share the CPU (what DevicePool gives each of them).
WORKER_THREADS = max(1, (os.cpu_count() or 1) // 2)


def pid_job(tag, meet, *, device, log):
    """A job that reports where it ran. With ``meet`` (a folder) it waits, up to two minutes, until the other
    job meeting there has started too: two of them overlap in time when there are two workers, however long a
    worker takes to start."""
    if meet is not None:
        (meet / tag).touch()
        deadline = time.monotonic() + 120
        while len(list(meet.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    if tag == "broken":
        raise ValueError("this job fails on purpose")
    return tag, os.getpid(), str(device)


def test_device_pool_runs_jobs_in_parallel_workers_and_respects_dependencies(tmp_path):
    jobs = {"a": Job(pid_job, ("a", tmp_path)), "b": Job(pid_job, ("b", tmp_path)),
            "after-a": Job(pid_job, ("c", None), "a"), "broken": Job(pid_job, ("broken", None)),
            "after-broken": Job(pid_job, ("d", None), "broken")}
    pool = DevicePool(["cpu"], runs_per_device=2)
    try:
        results, failures = run_jobs(pool, jobs)
    finally:
        pool.close()
    assert set(results) == {"a", "b", "after-a"} and set(failures) == {"broken", "after-broken"}
    assert {pid for _, pid, _ in results.values()} - {os.getpid()}, "jobs must run in worker processes"
    assert results["a"][1] != results["b"][1], "two overlapping jobs need two workers"
    assert all(device == "cpu" for _, _, device in results.values())
    assert "fails on purpose" in str(failures["broken"]) and "not started" in str(failures["after-broken"])


def table(output, runner, sigmas=SIGMAS):
    return run_comparison("digits", parse_methods("gaussian,catrs", get_registry()), sigmas, output, "quick", TINY,
                          runner=runner, log=lambda line: None, certify_collapsed=True)


def rows(comparisons):
    """Every certified row without its timing column, per sigma and method."""
    found = {}
    for comparison in comparisons:
        for outcome in comparison.outcomes:
            with open(outcome.summary["certify_path"], newline="") as handle:
                found[(comparison.sigma, outcome.name)] = [row[:-1] for row in csv.reader(handle, delimiter="\t")]
    return found


@pytest.fixture(scope="module")
def in_process(tmp_path_factory):
    """The reference: every run one after the other in this process, with a worker's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(WORKER_THREADS)
    try:
        comparisons = table(tmp_path_factory.mktemp("in-process"), InProcess("cpu"))
    finally:
        torch.set_num_threads(threads)
    return comparisons


@pytest.mark.slow
def test_two_worker_processes_give_the_same_table_and_resume(in_process, tmp_path):
    parallel = table(tmp_path, DevicePool(["cpu"], runs_per_device=2))
    assert rows(parallel) == rows(in_process)
    assert [[o.epochs_trained for o in c.outcomes] for c in parallel] == [[0, 1], [1, 1]]  # gaussian 0.25: teacher
    assert [[(o.summary["acr"], o.summary["certified_accuracy"]) for o in c.outcomes] for c in parallel] == \
        [[(o.summary["acr"], o.summary["certified_accuracy"]) for o in c.outcomes] for c in in_process]
    merged = (tmp_path / "summary.md").read_text()
    assert all(re.search(rf"\| {sigma:g} \| {method}( \(collapsed\))? \| 12 \|", merged)
               for sigma in SIGMAS for method in ("gaussian", "catrs"))
    again = table(tmp_path, DevicePool(["cpu"], runs_per_device=2))
    assert [[(o.epochs_trained, o.rows_certified) for o in c.outcomes] for c in again] == [[(0, 0)] * 2] * 2
    assert not again[0].soft_labels_computed


@pytest.mark.slow
def test_submitit_local_executor_gives_the_same_rows(in_process, tmp_path):
    submitit = pytest.importorskip("submitit")
    executor = submitit.AutoExecutor(folder=str(tmp_path / "jobs"), cluster="local")
    executor.update_parameters(timeout_min=30)
    submitted = table(tmp_path / "table", SubmititRunner(executor), sigmas=[0.25])  # teacher + 2 jobs
    assert submitted[0].soft_labels_computed
    expected = {key: value for key, value in rows(in_process).items() if key[0] == 0.25}
    assert rows(submitted) == expected
    assert list((tmp_path / "jobs").glob("*_log.out")), "the jobs ran through submitit"
