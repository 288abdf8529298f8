"""One writer per output: the lock of :mod:`catrs_plugin.utils.locking` between processes and threads.

The module imports only the standard library, and these tests load it from its file, so they
run on any interpreter, also one without torch or numpy (``python3.13 -m pytest --noconftest
tests/test_locking.py``). Other processes are plain interpreters holding a lock, started in
milliseconds.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[1] / "catrs_plugin" / "utils" / "locking.py"
spec = importlib.util.spec_from_file_location("catrs_locking_under_test", MODULE)
locking = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = locking  # pickling finds OutputLocked under this name
spec.loader.exec_module(locking)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the holder processes are POSIX-only (signals, fork)")

HOLDER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("locking", sys.argv[1])
locking = importlib.util.module_from_spec(spec)
spec.loader.exec_module(locking)
lock = locking.acquire(sys.argv[2], sys.argv[3])
print("held", flush=True)
sys.stdin.readline()
locking.release(lock)
print("released", flush=True)
"""


class Holder:
    """Another process holding the lock of ``path`` until :meth:`release` (or a kill)."""

    def __init__(self, path: Path, what: str = "result file") -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(MODULE), str(path), what, "holder-marker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "held"

    def release(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"
        self.process.wait(timeout=30)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def test_a_second_process_is_refused_and_told_who_writes(tmp_path):
    output = tmp_path / "c.tsv"
    holder = Holder(output)
    try:
        with pytest.raises(locking.OutputLocked) as refused:
            locking.acquire(output, "result file")
        message = str(refused.value)
        assert f"result file {str(output)!r} is being written by pid {holder.process.pid}" in message
        assert f"on host {socket.gethostname()}" in message and "holder-marker" in message and "\n" not in message
        assert refused.value.holder["pid"] == holder.process.pid
        assert not output.exists()  # the refused writer created nothing but looked at the lock
    finally:
        holder.release()
    assert not locking.lock_path(output).exists(), "a released lock removes its file"
    lock = locking.acquire(output, "result file")  # free again
    locking.release(lock)


def test_the_lock_of_a_killed_process_blocks_nobody(tmp_path):
    output = tmp_path / "m.pt"
    holder = Holder(output)
    holder.kill()  # kill -9: the lock file stays behind, the operating system dropped the lock
    assert locking.lock_path(output).exists()
    lock = locking.acquire(output, "checkpoint")
    assert f'"pid": {os.getpid()}' in locking.lock_path(output).read_text()  # taken over
    locking.release(lock)
    assert not locking.lock_path(output).exists()


def test_a_folder_is_locked_by_a_file_next_to_it(tmp_path):
    folder = tmp_path / "compare-output"
    holder = Holder(folder, "comparison folder")
    try:
        assert (tmp_path / "compare-output.lock").is_file() and not folder.exists()  # nothing made inside it
        with pytest.raises(locking.OutputLocked, match="comparison folder .* is being written by pid"):
            with locking.exclusive(folder, "comparison folder"):
                pass
    finally:
        holder.release()
    assert not list(tmp_path.iterdir())


def test_reentrant_in_one_thread_exclusive_between_threads(tmp_path):
    output = tmp_path / "soft.npy"
    refusals = []

    def other_thread():
        try:
            locking.acquire(output, "soft labels")
        except locking.OutputLocked as error:
            refusals.append(str(error))

    with locking.exclusive(output, "soft labels"):
        with locking.exclusive(output, "soft labels"):  # a command that locked early, then its writer
            worker = threading.Thread(target=other_thread)
            worker.start()
            worker.join()
        assert locking.lock_path(output).exists(), "the inner release keeps the outer lock"
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert len(refusals) == 2 and f"pid {os.getpid()}" in refusals[0]
    assert not locking.lock_path(output).exists()
    with locking.exclusive(None):  # no output, no lock
        pass


def test_a_lock_file_replaced_after_it_was_opened_is_not_trusted(tmp_path, monkeypatch):
    """The race of a run that opened the lock file just before its holder released (and removed) it."""
    output = tmp_path / "c.tsv"
    opened = []
    real_open = locking._open_lock_file

    def open_then_lose_the_race(lock, what, path):
        fd = real_open(lock, what, path)
        if not opened:  # the holder releases now: the file we opened is gone, another run locks a new one
            os.unlink(lock)
            lock.write_text("{}")
        opened.append(fd)
        return fd

    monkeypatch.setattr(locking, "_open_lock_file", open_then_lose_the_race)
    lock = locking.acquire(output, "result file")
    assert len(opened) == 2, "the first, removed file was dropped and the lock taken on the current one"
    assert os.fstat(opened[1]).st_ino == os.stat(locking.lock_path(output)).st_ino
    locking.release(lock)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_lock_path_that_is_no_regular_file_is_refused(tmp_path):
    output = tmp_path / "c.tsv"
    os.mkfifo(locking.lock_path(output))
    with pytest.raises(ValueError, match="lock file .* is not a regular file"):
        locking.acquire(output, "result file")


def test_the_decorator_locks_the_output_its_arguments_name(tmp_path):
    seen = []

    @locking.holding(lambda arguments: arguments["outfile"], "result file")
    def write(rows, outfile=None, *, settings=None):
        seen.append(locking.lock_path(outfile).exists() if outfile else None)
        return rows

    assert write(3, tmp_path / "a.tsv") == 3 and write(4, outfile=tmp_path / "b.tsv") == 4 and write(5) == 5
    assert seen == [True, True, None] and not list(tmp_path.iterdir())
    assert write.__name__ == "write"


def test_the_refusal_survives_pickling(tmp_path):
    error = locking.OutputLocked("result file 'x' is being written by pid 1", tmp_path / "x", {"pid": 1})
    copy = pickle.loads(pickle.dumps(error))  # worker processes send their exceptions back
    assert str(copy) == str(error) and copy.path == error.path and copy.holder == {"pid": 1}


def test_a_file_system_without_locks_warns_and_goes_on(tmp_path, monkeypatch):
    import errno

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(locking.fcntl, "flock", no_locks)
    with pytest.warns(RuntimeWarning, match="cannot lock files here .* would not be stopped"):
        with locking.exclusive(tmp_path / "c.tsv", "result file"):
            pass
