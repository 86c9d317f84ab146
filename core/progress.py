"""Progress for people and for programs.

A terminal gets a one-line progress bar on stderr; with ``--events`` every update is also one
JSON object per line on stdout, which the Blender extension reads to drive its progress bar and
panel. Both are throttled so a fast loop does not spend its time printing.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

BAR_WIDTH = 30


class ProgressReporter:
    def __init__(
        self,
        total_steps: int,
        events: bool = False,
        interval_s: float = 0.5,
        stream: IO[str] | None = None,
        event_stream: IO[str] | None = None,
    ) -> None:
        self.total_steps = max(total_steps, 1)
        self.events = events
        self.interval_s = interval_s
        self.stream = stream or sys.stderr
        self.event_stream = event_stream or sys.stdout
        self.started = time.monotonic()
        self.first_step: int | None = None
        self.last_print = 0.0

    def emit(self, event: str, **payload: Any) -> None:
        """One JSON event line on stdout (only with ``--events``)."""
        if self.events:
            self.event_stream.write(json.dumps({"event": event, **payload}) + "\n")
            self.event_stream.flush()

    def stage(self, stage: str, message: str) -> None:
        self.emit("stage", stage=stage, message=message)
        if not self.events:
            self.stream.write(f"{message}\n")
            self.stream.flush()

    def seconds_left(self, step: int) -> float:
        if self.first_step is None or step <= self.first_step:
            return float("nan")
        rate = (time.monotonic() - self.started) / (step - self.first_step)
        return rate * (self.total_steps - step)

    def update(self, step: int, force: bool = False, **metrics: Any) -> None:
        """Report that ``step`` of ``total_steps`` is done, with metrics such as loss and PSNR."""
        if self.first_step is None:
            self.first_step, self.started = step, time.monotonic()
        now = time.monotonic()
        if not force and now - self.last_print < self.interval_s and step < self.total_steps:
            return
        self.last_print = now
        left = self.seconds_left(step)
        self.emit(
            "progress",
            step=step,
            steps=self.total_steps,
            fraction=step / self.total_steps,
            seconds_left=None if left != left else round(left, 1),
            **metrics,
        )
        self._draw(step, left, metrics)

    def _draw(self, step: int, left: float, metrics: dict[str, Any]) -> None:
        fraction = min(step / self.total_steps, 1.0)
        filled = round(fraction * BAR_WIDTH)
        details = " ".join(
            f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in metrics.items()
        )
        eta = "" if left != left else f" {left:5.0f}s left"
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {step}/{self.total_steps}{eta} {details}")
        if step >= self.total_steps:
            self.stream.write("\n")
        self.stream.flush()
