"""One writer per output: an exclusive lock on every file or folder a run writes.

Two runs that write the same output at once corrupt it without a sign (rows appended twice,
a soft-label file that two processes extended, a checkpoint overwritten by another run's
epoch). Every writer therefore holds an exclusive lock on its output for as long as it writes
(:func:`exclusive`); a second writer is refused at once with :class:`OutputLocked`, whose
message says who holds the lock (process id, host, command line and since when).

The lock is ``flock`` (``msvcrt.locking`` on Windows) on a sidecar ``<output>.lock`` next to the
output (a file or a folder), which exists while the lock is held. The operating system releases
it when its process ends, however it ends, so a lock file left behind by a killed run
(``kill -9``) blocks nobody: the next run takes it over. A released lock removes its file; the
file's inode is checked after locking, so a run that opened the file just before its holder
removed it tries again instead of holding a lock on a removed file.

Locks are re-entrant within one thread (a command that locks its output early, before loading
a model, and the writer it calls that locks the same output again), and exclusive between
threads and between processes.

This module imports only the standard library, so that it can be tested on any interpreter.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import functools
import inspect
import json
import os
import socket
import stat
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
    import msvcrt

#: Suffix of the lock file next to an output.
LOCK_SUFFIX = ".lock"

#: What a lock held by another process looks like: flock's EWOULDBLOCK, msvcrt's EACCES or EDEADLOCK.
_HELD_ERRORS = {errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)}

_registry_guard = threading.Lock()
_held: dict[str, "_Held"] = {}

Function = TypeVar("Function", bound=Callable[..., Any])


class OutputLocked(ValueError):
    """Another process (or thread) is writing the output.

    ``error.path`` is the output, ``error.holder`` what the lock file says of its holder
    (``pid``, ``host``, ``command``, ``since``; empty when it could not be read).
    """

    def __init__(self, message: str, path: Path, holder: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.path = Path(path)
        self.holder = dict(holder)

    def __reduce__(self):  # picklable (worker processes send their exceptions back)
        return type(self), (str(self), self.path, self.holder)


class _Held:
    def __init__(self, fd: int, thread: int) -> None:
        self.fd = fd
        self.thread = thread
        self.count = 1


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output (a file or a folder): ``<path>.lock`` next to it."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting; False if another holds it.

    On a file system without locks (``ENOLCK``, e.g. NFS mounted with ``nolock``) it warns and
    returns True: the run goes on, unprotected, rather than being refused forever.
    """
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as error:
        if error.errno in _HELD_ERRORS:
            return False
        warnings.warn(f"cannot lock files here ({error.strerror}): a second run writing the same output would "
                      "not be stopped", RuntimeWarning, stacklevel=2)
    return True


def describe_holder(holder: Mapping[str, Any]) -> str:
    """``pid 123 on host h since 2026-01-01T10:00:00, command: catrs certify ...`` (what is known)."""
    if not holder.get("pid"):
        return "another process"
    text = f"pid {holder['pid']} on host {holder.get('host', '?')}"
    if holder.get("since"):
        text += f" since {holder['since']}"
    if holder.get("command"):
        text += f", command: {holder['command']}"
    return text


def _holder_record() -> bytes:
    record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv) or sys.executable,
              "since": datetime.datetime.now().isoformat(timespec="seconds")}
    return (json.dumps(record) + "\n").encode()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        holder = json.loads(os.read(fd, 65536).decode())
    except (OSError, ValueError):  # being written, or not ours
        return {}
    return holder if isinstance(holder, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)


def _open_lock_file(lock: Path, what: str, path: Path) -> int:
    lock.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(lock, flags, 0o666)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{what} {str(path)!r}: its lock file {str(lock)!r} is not a regular file; remove it")
    return fd


def acquire(path: str | os.PathLike, what: str = "output") -> Path:
    """Lock the output ``path`` for this thread; returns the lock file (absolute) to pass to :func:`release`.

    Raises
    ------
    OutputLocked
        If another process or thread holds the lock.
    """
    path = Path(path)
    lock = Path(os.path.realpath(lock_path(path)))
    key = str(lock)
    with _registry_guard:
        held = _held.get(key)
        if held is not None and held.thread == threading.get_ident():
            held.count += 1
            return lock
    while True:
        fd = _open_lock_file(lock, what, path)
        if not try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise OutputLocked(
                f"{what} {str(path)!r} is being written by {describe_holder(holder)}; wait until it has "
                "finished or choose another path (two runs writing one output would mix their results)",
                path, holder,
            )
        if fcntl is None or _same_file(fd, lock):
            break
        os.close(fd)  # its holder removed the file we opened, and someone may have locked a new one: again
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, _holder_record())
    with _registry_guard:
        _held[key] = _Held(fd, threading.get_ident())
    return lock


def release(lock: Path) -> None:
    """Release a lock taken by :func:`acquire` (the last release of a re-entrant lock removes its file)."""
    key = str(lock)
    with _registry_guard:
        held = _held[key]
        held.count -= 1
        if held.count:
            return
        del _held[key]
    if fcntl is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # while still locked: whoever opens the old file sees it is gone
        os.close(held.fd)
    else:
        os.close(held.fd)
        with contextlib.suppress(OSError):
            os.unlink(lock)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike | None, what: str = "output") -> Iterator[None]:
    """Hold the exclusive lock of the output ``path`` (a file or a folder) during the block.

    ``path=None`` locks nothing (an output that is not written).

    Raises
    ------
    OutputLocked
        If another process or thread holds the lock; nothing has been written then.
    """
    if path is None:
        yield
        return
    lock = acquire(path, what)
    try:
        yield
    finally:
        release(lock)


def holding(path_of: Callable[[Mapping[str, Any]], str | os.PathLike | None],
            what: str) -> Callable[[Function], Function]:
    """Decorate a function so that it runs holding the lock of the output ``path_of(arguments)``.

    ``arguments`` maps each parameter name of the function to its value in the call (defaults
    included); ``path_of`` returns the output, or ``None`` when the call writes none.
    """

    def decorate(function: Function) -> Function:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            with exclusive(path_of(bound.arguments), what):
                return function(*args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate


__all__ = ["OutputLocked", "acquire", "describe_holder", "exclusive", "holding", "lock_path", "release", "try_lock"]
