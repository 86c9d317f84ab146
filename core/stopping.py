"""Stopping on SIGINT or SIGTERM at any moment without a lost, half-written or stray file.

While :func:`handled` is active (the command line's ``main``, from its first line to its last
write) a stop signal raises :class:`StopSignal` where the program is, except inside a
:func:`deferred` block, which finishes first: every write (``atomic_path``) is one, so a stop
leaves the old file or the new one and never a temporary. The training loop polls instead
(:func:`polled`): it saves a checkpoint, then cancels. After the first cancellation further
signals are only recorded, so the way out (the ``cancelled`` event, the message) is never cut
short. A stop that lands inside an import waits for the import to end (an exception there would
surface as the imported module's own error). Outside :func:`handled` (the Blender extension,
tests calling the engine) nothing here changes how signals behave.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from .errors import TrainingCancelled


class StopSignal(BaseException):
    """A stop signal, raised where the program was. Like ``KeyboardInterrupt`` it is no
    ``Exception``, so no ``except Exception`` on its way out (a reader that wraps whatever its
    library raises) turns the stop into some other error."""


# SIGBREAK: what the extension's CTRL_BREAK_EVENT arrives as on Windows.
IMPORT_RETRY_S = 0.05
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM) + (
    (signal.SIGBREAK,) if hasattr(signal, "SIGBREAK") else ()
)


class _State:
    def __init__(self) -> None:
        self.requested: list[str] = []  # names of the stop signals received
        self.installed = False
        self.deferred_depth = 0
        self.cancelled = False  # a cancellation was raised: later signals are only recorded


_state = _State()


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state.deferred_depth == 0 and not _state.cancelled and _in_import(frame):
        # An exception raised inside an import comes out as the importer's own error (numpy's
        # "do not import numpy from its source tree" ImportError), so the signal is delivered
        # again shortly, once the import is over.
        retry = threading.Timer(IMPORT_RETRY_S, _redeliver, (signum,))
        retry.daemon = True
        retry.start()
        return
    _state.requested.append(signal.Signals(signum).name)
    if _state.deferred_depth == 0:
        _cancel()


def _in_import(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def _redeliver(signum: int) -> None:
    if _state.installed:  # main has not ended meanwhile
        signal.raise_signal(signum)


def _cancel() -> None:
    if _state.cancelled:
        return
    _state.cancelled = True
    raise StopSignal(f"stopped by {_state.requested[0]}")


@contextmanager
def _signals_handled() -> Iterator[None]:
    previous: dict[int, Any] = {sig: signal.signal(sig, _handler) for sig in STOP_SIGNALS}
    _state.installed = True
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.installed = False


@contextmanager
def handled() -> Iterator[None]:
    """Stop signals cancel the block (see the module's docstring)."""
    global _state
    _state = _State()
    if threading.current_thread() is not threading.main_thread():  # signals go to the main one
        yield
        return
    with _signals_handled():
        yield


def disarm() -> None:
    """From now on stop signals are only recorded: the program is on its way out."""
    _state.cancelled = True


@contextmanager
def deferred() -> Iterator[None]:
    """A stop signal arriving inside the block cancels only when the block has ended."""
    _state.deferred_depth += 1
    try:
        yield
    finally:
        _state.deferred_depth -= 1
    if _state.deferred_depth == 0 and _state.requested and _state.installed:
        _cancel()


@contextmanager
def polled() -> Iterator[list[str]]:
    """Stop signals inside the block are only recorded in the yielded list, for a loop that
    checks it between steps and cancels itself. Handlers are installed for the block if no
    :func:`handled` is active (a trainer run directly, from the main thread)."""
    global _state
    installing = not _state.installed and threading.current_thread() is threading.main_thread()
    if installing:
        _state = _State()
    with _signals_handled() if installing else _nothing(), deferred():
        try:
            yield _state.requested
        except (TrainingCancelled, StopSignal):
            _state.cancelled = True
            raise


@contextmanager
def _nothing() -> Iterator[None]:
    yield
