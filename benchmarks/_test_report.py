"""A pytest plugin for ``benchmarks/gpu_table.py``'s CUDA tests: one JSON line per test outcome.

Each line is appended to the file that ``CATRS_TEST_REPORT`` names as soon as the test ends,
so a run stopped at its time limit keeps what finished. Load it with ``-p _test_report``
(``benchmarks/`` on ``PYTHONPATH``). A line holds the test's node id, its outcome (``passed``,
``failed``, ``skipped``, or ``error`` for a setup, teardown or collection that failed), the
phase it came from, its seconds and, unless it passed, the reason (the skip reason or the
failure's message).
"""

from __future__ import annotations

import json
import os


def _write(nodeid: str, outcome: str, when: str, seconds: float, message: str | None) -> None:
    with open(os.environ["CATRS_TEST_REPORT"], "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"test": nodeid, "outcome": outcome, "when": when, "seconds": round(seconds, 3),
                                 "message": message}) + "\n")


def _message(report) -> str | None:
    if report.passed:
        return None
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)  # the exception's message, where pytest has one
    lines = report.longreprtext.strip().splitlines()
    return (crash.message if crash is not None else lines[-1] if lines else "")[:500] or None


def pytest_runtest_logreport(report) -> None:
    # a test's outcome is its call's, or that of a setup that skipped or failed it, or of a teardown that failed
    if report.when == "call" or (report.when == "setup" and not report.passed) or report.failed:
        outcome = "error" if report.failed and report.when != "call" else report.outcome
        _write(report.nodeid, outcome, report.when, report.duration, _message(report))


def pytest_collectreport(report) -> None:
    if report.failed:
        _write(report.nodeid, "error", "collect", 0.0, _message(report))
