"""Exclusive folder locks the operating system keeps: one holder at a time, none left stale.

A lock is a file (``bake.lock``, ``train.lock``) held open with an exclusive ``flock`` (POSIX)
or a ``msvcrt`` byte lock (Windows) for as long as the work runs. The kernel drops it when the
holder exits, however it exits, so a crashed run never blocks the next one and nothing has to
guess whether a recorded process id is still alive. The file's content (process id and host)
only names the holder for the message the loser sees.

Taking the lock is race-free: whoever gets the kernel lock on the file that is at the path wins;
a lock taken on a file that was unlinked meanwhile (its holder released it) is retried on the
new one. Releasing unlinks the file while still holding it, so a waiter never locks a file that
no longer names the lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from . import stopping
from .errors import VbnfError

# Someone probing a free lock holds it for an instant; a taker retries for this long before it
# calls the lock busy.
PROBE_GRACE_S = 0.25
_RETRY_S = 0.01
_WINDOWS_LOCK_OFFSET = 1 << 20  # Windows locks bytes: lock one past the content, not over it

_held: dict[str, int] = {}  # resolved lock path -> descriptor, for the locks this process holds


class FolderBusy(VbnfError):
    """Another running process holds the lock."""


@dataclass(frozen=True)
class LockHolder:
    """The process that holds a lock, as its lock file names it."""

    pid: int
    host: str

    def __str__(self) -> str:
        if self.pid < 0:  # it holds the lock but has not written its name yet
            return "a process just starting"
        here = self.host == socket.gethostname()
        return f"process {self.pid}" + ("" if here else f" on {self.host}")


def acquire(path: Path, what: str) -> None:
    """Take the lock at ``path`` (its folder is created) or raise :class:`FolderBusy` naming
    the holder; ``what`` says what the holder is doing ("another bake of this asset")."""
    path = Path(path)
    with stopping.deferred():  # a stop signal waits until the lock is recorded as held
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = _take(path, what)
            content = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
            os.ftruncate(descriptor, 0)
            os.write(descriptor, content)
        except OSError as error:
            raise VbnfError(f"cannot take the lock ({error.strerror or error})", path) from error
        _held[_key(path)] = descriptor


def release(path: Path) -> None:
    """Give up this process's lock at ``path`` (nothing happens if it holds none there)."""
    with stopping.deferred():  # a stop signal waits: no lock file is left behind
        descriptor = _held.pop(_key(Path(path)), None)
        if descriptor is None:
            return
        with suppress(OSError):
            if sys.platform != "win32":  # unlinked while held: nobody can lock a stale file
                os.unlink(path)
            _unlock(descriptor)
        os.close(descriptor)
        if sys.platform == "win32":
            with suppress(OSError):
                os.unlink(path)


@contextmanager
def held(path: Path, what: str) -> Iterator[None]:
    """The lock at ``path`` for the duration of the block."""
    acquire(path, what)
    try:
        yield
    finally:
        release(path)


def holder(path: Path) -> LockHolder | None:
    """Who holds the lock at ``path`` now (None: nobody). This process's own lock counts."""
    path = Path(path)
    if _key(path) in _held:
        return LockHolder(os.getpid(), socket.gethostname())
    try:
        descriptor = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        if _try_lock(descriptor):
            _unlock(descriptor)
            return None
        return _read_holder(path) or LockHolder(-1, socket.gethostname())
    finally:
        os.close(descriptor)


def _take(path: Path, what: str) -> int:
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if _try_lock(descriptor):
            if _same_file(descriptor, path):
                return descriptor
            os.close(descriptor)  # locked a file its holder just released and unlinked
            continue
        os.close(descriptor)
        if time.monotonic() > deadline:
            named = _read_holder(path)
            who = f" ({named})" if named else ""
            raise FolderBusy(f"{what} is running{who}; it holds {path.name}", path.parent)
        time.sleep(_RETRY_S)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except OSError:
        return False


def _read_holder(path: Path) -> LockHolder | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return LockHolder(int(document["pid"]), str(document["host"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None  # between creation and the holder's first write, or not ours


def _key(path: Path) -> str:
    return os.path.abspath(path)


if sys.platform == "win32":
    import msvcrt

    def _try_lock(descriptor: int) -> bool:
        os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(descriptor, 0, os.SEEK_SET)
        return True

    def _unlock(descriptor: int) -> None:
        os.lseek(descriptor, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_UNLCK, 1)
        os.lseek(descriptor, 0, os.SEEK_SET)

else:
    import fcntl

    def _try_lock(descriptor: int) -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(descriptor: int) -> None:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
