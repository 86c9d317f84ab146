"""The training subprocess: its environment, starting it, its JSON events, stopping it.

Training needs torch, which Blender's own Python usually lacks, and would freeze the interface
if it ran inside Blender, so ``python -m core train --events`` runs as a child process. Its
stdout carries one JSON event per line; its stderr carries a progress bar and, on a user error,
one ``error: ...`` line. Both pipes are drained by reader threads into queues: Windows has no
non-blocking pipes, and an undrained stderr would block the child once the pipe buffer fills.
The caller (a modal operator's timer, or a loop in batch mode) polls the queue; no bpy here, so
the threads never touch Blender data.

Stopping sends SIGTERM (CTRL_BREAK on Windows): the engine writes a checkpoint and exits 130.
A child still alive after the grace period is killed.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .engine import ENGINE_ROOT, VbnfError
from .engine import EXIT_CANCELLED as EXIT_CANCELLED  # the trainer's exit codes, for callers
from .engine import EXIT_USER_ERROR as EXIT_USER_ERROR

STOP_GRACE_S = 10.0
SITE_FOLDERS = frozenset({"site-packages", "dist-packages"})
STDERR_TAIL_LINES = 20
_NEW_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)  # Windows only

_live: weakref.WeakSet[TrainingProcess] = weakref.WeakSet()


def engine_environment(python: str = "") -> dict[str, str]:
    """The environment for a child running ``python -m core``: the engine on its path first.

    A child that is this very interpreter (Blender's own Python) also gets this process's
    site-packages folders: Blender installs an extension's bundled wheels into a folder it adds
    to ``sys.path`` at start-up, which a fresh interpreter would not search."""
    env = dict(os.environ)
    own_sites = []
    child = os.path.abspath(shutil.which(python) or python) if python else ""
    if child == os.path.abspath(sys.executable):
        own_sites = [entry for entry in sys.path if Path(entry).name in SITE_FOLDERS]
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ENGINE_ROOT), *own_sites, *filter(None, [env.get("PYTHONPATH", "")])]
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONHOME", None)  # Blender sets it for its own Python; another one must not see it
    return env


def train_command(
    python: str, dataset_dir: Path, run_dir: Path, options: Sequence[str] = ()
) -> list[str]:
    """``python -m core train DATASET -o RUN_DIR --events`` plus the engine's own options."""
    return [
        python,
        "-m",
        "core",
        "train",
        str(dataset_dir),
        "-o",
        str(run_dir),
        "--events",
        *options,
    ]


@dataclass
class TrainingStatus:
    """What the events said so far, for the progress bar, status bar and panel."""

    stage: str = "start"
    message: str = "starting the training process"
    fraction: float = 0.0
    epoch: int | None = None
    psnr: float | None = None
    seconds_left: float | None = None
    level_psnr: dict[int, float] = field(default_factory=dict)
    checkpoint_step: int | None = None  # steps the last checkpoint written holds
    steps_per_epoch: int | None = None  # from the checkpoint event (absent from older engines)
    asset: str | None = None  # set by the "done" event
    error: str | None = None  # set by the "error" event

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one engine event into the status; unknown events and fields are ignored, so
        a newer engine with more events still drives an older add-on."""
        kind = event.get("event")
        if kind == "stage":
            self.stage = str(event.get("stage", self.stage))
            self.message = str(event.get("message", ""))
        elif kind == "progress":
            self.fraction = float(event.get("fraction", self.fraction))
            self.seconds_left = _optional_float(event.get("seconds_left"))
            self.epoch = event.get("epoch", self.epoch)
            self.psnr = _optional_float(event.get("psnr", self.psnr))
        elif kind == "level":
            self.level_psnr[int(event["level"])] = float(event["psnr"])
        elif kind == "checkpoint":
            self.checkpoint_step = int(event["step"])
            self.steps_per_epoch = _optional_int(event.get("steps_per_epoch"))
        elif kind == "done":
            self.stage, self.fraction = "done", 1.0
            self.asset = str(event["asset"])
            self.message = "training finished"
        elif kind == "error":
            self.error = str(event.get("message", "unknown error"))


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_event(line: str) -> dict[str, Any] | None:
    """One stdout line as an event, or None for anything else (a stray print, a warning)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


class TrainingProcess:
    """One running ``python -m core train --events``; see the module docstring."""

    def __init__(
        self,
        command: Sequence[str],
        extra_environment: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.status = TrainingStatus()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._error_line: str | None = None
        self._stop_deadline: float | None = None
        try:
            self._process = subprocess.Popen(
                self.command,
                cwd=ENGINE_ROOT,
                env=engine_environment(self.command[0]) | dict(extra_environment or {}),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",
                creationflags=_NEW_GROUP,
            )
        except OSError as error:
            raise VbnfError(f"cannot start training with {self.command[0]} ({error})") from error
        _live.add(self)
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._process.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._process.stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self, stream: IO[str]) -> None:
        for line in stream:
            event = parse_event(line)
            if event is not None:
                self._events.put(event)

    def _read_stderr(self, stream: IO[str]) -> None:
        # Text mode turns the progress bar's carriage returns into line ends.
        for line in stream:
            text = line.strip()
            if text.startswith("error: "):
                self._error_line = text.removeprefix("error: ")
            if text:
                self._stderr_tail.append(text)

    def poll(self) -> list[dict[str, Any]]:
        """The events that arrived since the last call (never blocks), already folded into
        ``status``; also kills a child that outlived its stop grace period."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        for event in events:
            self.status.apply(event)
        deadline = self._stop_deadline
        if deadline is not None and time.monotonic() > deadline and self._process.poll() is None:
            self._process.kill()
        return events

    @property
    def finished(self) -> bool:
        """The child has exited and everything it wrote has been read."""
        if self._process.poll() is None:
            return False
        for reader in self._readers:
            reader.join(timeout=1.0)
        return self._events.empty()

    @property
    def returncode(self) -> int | None:
        return self._process.poll()

    @property
    def stopping(self) -> bool:
        return self._stop_deadline is not None

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask the child to stop (it checkpoints first); ``poll`` kills it after ``grace_s``."""
        if self._process.poll() is not None or self._stop_deadline is not None:
            return
        self._stop_deadline = time.monotonic() + grace_s
        if sys.platform == "win32":
            self._process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
        else:
            self._process.terminate()

    def end(self, grace_s: float) -> None:
        """Stop the child and wait up to ``grace_s`` for it to write its checkpoint and exit,
        then kill what is left, and fold its last events into ``status``: for a bake that
        Blender ends (a file is loaded) and that cannot wait for the next timer tick."""
        self.stop(grace_s)
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()
        for reader in self._readers:
            reader.join(timeout=1.0)
        self.poll()

    def kill(self) -> None:
        """End the child now (Blender is closing, or the add-on is being disabled)."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def failure_message(self) -> str:
        """Why the child failed, in the engine's own words when it gave any."""
        if self._error_line:
            return self._error_line
        if self.status.error:
            return self.status.error
        code = self._process.poll()
        tail = self._stderr_tail[-1] if self._stderr_tail else "no output"
        return f"training process ended with exit code {code}: {tail}"


@atexit.register
def kill_all() -> None:
    """No training child outlives the Blender that started it."""
    for process in list(_live):
        process.kill()
