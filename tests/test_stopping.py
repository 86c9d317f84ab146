"""Stop signals in this process: a write in progress finishes before the cancellation, a stop
outside one cancels at once, and a second stop on the way out changes nothing."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from core import stopping
from core.atomic import atomic_path


def test_a_stop_during_a_write_waits_for_the_write(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    target.write_bytes(b"old")
    with (
        stopping.handled(),
        pytest.raises(stopping.StopSignal, match="stopped by SIGTERM"),
        atomic_path(target) as temporary,
    ):
        temporary.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)  # handled here, but deferred
        temporary.write_bytes(b"new and complete")
    assert target.read_bytes() == b"new and complete"
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


def test_a_stop_outside_a_write_cancels_at_once_and_only_once() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    reached = []
    with stopping.handled():
        with pytest.raises(stopping.StopSignal, match="stopped by SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            reached.append("after the signal")
        os.kill(os.getpid(), signal.SIGTERM)  # on the way out: recorded, not raised
        reached.append("exit path")
    assert reached == ["exit path"]
    assert signal.getsignal(signal.SIGTERM) is previous  # restored when main ends


def test_the_training_loop_polls_instead_of_being_interrupted() -> None:
    seen = []
    with stopping.handled(), pytest.raises(stopping.StopSignal), stopping.polled() as requested:
        os.kill(os.getpid(), signal.SIGTERM)
        seen.append(list(requested))  # the loop sees it and saves before it cancels
    assert seen == [["SIGTERM"]]  # and a loop that ends without cancelling is cancelled after
