"""Folder locks between real processes: of many started at once exactly one wins, the losers
get one line naming the winner, and a holder that dies leaves the lock free."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from core import locks
from core.errors import VbnfError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = 12

# Waits for the start gate, tries the lock; the winner holds it until the release file appears.
CONTENDER = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from core import locks
from core.errors import VbnfError
lock, gate, release = map(Path, sys.argv[2:5])
while not gate.exists():
    time.sleep(0.001)
try:
    locks.acquire(lock, "another contender")
except VbnfError as error:
    print(f"busy {error}", flush=True)
    sys.exit(0)
print(f"won {os.getpid()}", flush=True)
while not release.exists():
    time.sleep(0.01)
if sys.argv[5] == "release":
    locks.release(lock)
os._exit(0)  # a holder that ends without releasing: the system drops its lock
"""


def contender(tmp_path: Path, ending: str) -> subprocess.Popen[str]:
    arguments = [str(REPO_ROOT), *(str(tmp_path / name) for name in ("lock", "gate", "release"))]
    return subprocess.Popen(
        [sys.executable, "-c", CONTENDER, *arguments, ending], stdout=subprocess.PIPE, text=True
    )


def race(tmp_path: Path, ending: str) -> tuple[str, list[str]]:
    """Start the contenders, open the gate; returns the winner's line and the losers'."""
    for name in ("gate", "release"):
        (tmp_path / name).unlink(missing_ok=True)
    processes = [contender(tmp_path, ending) for _ in range(CONTENDERS)]
    time.sleep(0.5)  # let every interpreter start and wait at the gate
    (tmp_path / "gate").touch()
    lines: dict[subprocess.Popen[str], str] = {}
    for process in processes:
        assert process.stdout is not None
        lines[process] = process.stdout.readline().strip()
    (tmp_path / "release").touch()
    for process in processes:
        process.communicate(timeout=30)
    winners = [line for line in lines.values() if line.startswith("won")]
    losers = [line for line in lines.values() if line.startswith("busy")]
    assert len(winners) == 1 and len(losers) == CONTENDERS - 1, lines
    return winners[0], losers


def test_of_many_processes_started_at_once_exactly_one_wins(tmp_path: Path) -> None:
    for ending in ("release", "die"):
        winner, losers = race(tmp_path, ending)
        winner_pid = winner.split()[1]
        for line in losers:
            assert f"another contender is running (process {winner_pid})" in line, line
            assert str(tmp_path) in line and "\n" not in line
        assert locks.holder(tmp_path / "lock") is None  # released, or dropped at its death
    locks.acquire(tmp_path / "lock", "this test")
    assert locks.holder(tmp_path / "lock") == locks.LockHolder(os.getpid(), socket.gethostname())
    try:
        locks.acquire(tmp_path / "lock", "this test")
        raise AssertionError("a second acquire in the same process must fail")
    except VbnfError as error:
        assert f"this test is running (process {os.getpid()})" in str(error)
    locks.release(tmp_path / "lock")
    assert not (tmp_path / "lock").exists() and locks.holder(tmp_path / "lock") is None
