"""All-or-nothing file output: a reader sees the old file or the whole new one, never a part.

Every file the project writes (datasets, checkpoints, assets, reports, VDB caches) goes through
:func:`atomic_path`: the content is written to a temporary file in the target's folder, flushed
to disk, then renamed over the target, so a crash or a cancelled bake cannot leave a truncated
output behind, and a writer that fails (a full disk, a read-only folder) ends in one
:class:`OutputError` naming the file, with the previous file intact.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from . import stopping
from .errors import OutputError

# Given the finished temporary, what makes it incomplete (None: nothing).
Verifier = Callable[[Path], "str | None"]

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would have given the file


@contextmanager
def atomic_path(path: str | Path, verify: Verifier | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The temporary keeps the target's suffix, because some writers (OpenEXR, Pillow, openvdb)
    pick the format from it. Before the rename the temporary must be complete: not empty, and
    whatever ``verify`` (given the temporary) says is wrong with it must be nothing, because a
    writer that fails quietly on a full disk would otherwise replace a good file with a stub.
    On any error the temporary is removed and ``path`` is untouched; a failure to write (full
    disk, read-only folder, an incomplete file) is an :class:`OutputError` naming ``path``.
    """
    path = Path(path)
    with stopping.deferred():  # a stop signal waits: old file or new one, never a temporary
        yield from _replaced_when_complete(path, verify)


def _replaced_when_complete(path: Path, verify: Verifier | None) -> Iterator[Path]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix
        )
    except OSError as error:
        raise OutputError(f"cannot write here ({_reason(error)})", path) from error
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        problem = _incompleteness(temporary, verify)
        if problem is not None:
            raise OutputError(f"the write did not complete ({problem}); nothing replaced", path)
        os.chmod(temporary, FILE_MODE)  # mkstemp creates 0600
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OutputError(f"cannot write ({_reason(error)}); nothing replaced", path) from error
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def verify(temporary: Path) -> str | None:
        written_bytes = temporary.stat().st_size
        return None if written_bytes == len(data) else f"{written_bytes} of {len(data)} bytes"

    with atomic_path(path, verify) as temporary:
        temporary.write_bytes(data)


def _incompleteness(temporary: Path, verify: Verifier | None) -> str | None:
    if verify is not None:
        return verify(temporary)
    return "the file is empty" if temporary.stat().st_size == 0 else None


def _reason(error: OSError) -> str:
    """The OS's words for ``error``, without the temporary's name it may carry."""
    return error.strerror or str(error)


def _fsync_directory(folder: Path) -> None:
    """Make the rename itself durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
