"""What a bake will cost, said before it starts: "about 9 min (capture 1 min, training 8 min)".

Training dominates and scales exactly with its step count, ``epochs * ceil(views * pixels /
batch_rays)``; what a step costs depends on this machine, the device, the levels, the bitwidth,
the batch size and the threads, so it is measured (``python -m core calibrate`` in the training
interpreter, a few seconds) and remembered per machine and settings in a small JSON file in the
user's cache folder. The capture's cost depends on the scene, so the caller measures it by
rendering two real views of it (``bake_job``); scoring the held-out views afterwards is
counted as forward passes at half a step's cost per batch of rays.

No bpy here: the batch command and the panel's Estimate button share it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .engine import ENGINE_ROOT, VbnfError, atomic_write_bytes
from .training_process import engine_environment

CALIBRATION_TIMEOUT_S = 300.0
CACHE_FILE_NAME = "calibration.json"
EVAL_COST_PER_BATCH = 0.5  # a forward pass, no backward, per batch of rays scored


class EstimateError(VbnfError):
    """The calibration could not run; the bake itself may still."""


@dataclass(frozen=True)
class Estimate:
    capture_s: float
    train_s: float

    @property
    def total_s(self) -> float:
        return self.capture_s + self.train_s

    def line(self) -> str:
        return (
            f"about {format_duration(self.total_s)} (capture {format_duration(self.capture_s)}, "
            f"training {format_duration(self.train_s)})"
        )


def format_duration(seconds: float) -> str:
    """``40 s``, ``9 min``, ``1 h 20 min``: rounded as an estimate deserves."""
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60} min"


def training_steps(epochs: int, train_views: int, resolution_px: int, batch_rays: int) -> int:
    """The trainer's step count: every pixel of every training view is one ray."""
    return epochs * math.ceil(train_views * resolution_px**2 / batch_rays)


def scoring_batches(levels: int, test_views: int, resolution_px: int, batch_rays: int) -> int:
    """Batches of rays the held-out views cost to score, once per level."""
    return levels * math.ceil(test_views * resolution_px**2 / batch_rays)


def cache_path() -> Path:
    """The calibration cache: per user, outside any project (the figures are the machine's)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "vbnf" / CACHE_FILE_NAME


@dataclass(frozen=True)
class StepSettings:
    """What a training step's cost depends on, besides the machine. ``batch_rays=None``: the
    engine's default, which the calibration reports."""

    python: str
    device: str
    min_level: int
    max_level: int
    bitwidth: int
    batch_rays: int | None
    cpu_threads: int | None

    def key(self) -> str:
        return "|".join(
            [
                platform.node(),
                os.path.abspath(self.python),
                self.device,
                f"levels {self.min_level}-{self.max_level}",
                f"b{self.bitwidth}",
                f"{self.batch_rays or 'default'} rays",
                f"{self.cpu_threads or 'all'} threads",
            ]
        )


@dataclass(frozen=True)
class StepCost:
    """A measured training step: its seconds and the rays it traced."""

    seconds: float
    batch_rays: int


def step_cost(settings: StepSettings, fresh: bool = False) -> StepCost:
    """A training step's cost at ``settings``, from the cache or measured now (and cached)."""
    path = cache_path()
    cache = _read_cache(path)
    key = settings.key()
    if not fresh:
        cached = _cost_from(cache.get(key))
        if cached is not None:
            return cached
    measured = _calibrate(settings)
    cache[key] = {"seconds_per_step": measured.seconds, "batch_rays": measured.batch_rays}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(cache, indent=1, sort_keys=True).encode())
    except OSError as error:  # the estimate still stands; the next one measures again
        print(f"VBNF warning: cannot write {path} ({error.strerror})", file=sys.stderr)
    return measured


def cached_step_cost(settings: StepSettings) -> StepCost | None:
    """The cached cost, without measuring (None when this machine has not measured it)."""
    return _cost_from(_read_cache(cache_path()).get(settings.key()))


def _cost_from(entry: object) -> StepCost | None:
    try:
        return StepCost(float(entry["seconds_per_step"]), int(entry["batch_rays"]))  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None


def estimate(
    step: StepCost,
    capture_view_s: float,
    *,
    capture_setup_s: float = 0.0,
    epochs: int,
    train_views: int,
    test_views: int,
    resolution_px: int,
    levels: int,
) -> Estimate:
    """The bake's cost from a step's and a rendered view's (``capture_setup_s``: what the
    first view costs once on top)."""
    steps = training_steps(epochs, train_views, resolution_px, step.batch_rays)
    scoring = scoring_batches(levels, test_views, resolution_px, step.batch_rays)
    return Estimate(
        capture_s=capture_setup_s + capture_view_s * (train_views + test_views),
        train_s=step.seconds * (steps + EVAL_COST_PER_BATCH * scoring),
    )


def _read_cache(path: Path) -> dict[str, object]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or damaged: measure again
        return {}
    return cache if isinstance(cache, dict) else {}


def _calibrate(settings: StepSettings) -> StepCost:
    command = [
        settings.python,
        "-m",
        "core",
        "calibrate",
        f"--device={settings.device}",
        f"--min-level={settings.min_level}",
        f"--max-level={settings.max_level}",
        f"--bitwidth={settings.bitwidth}",
    ]
    if settings.batch_rays is not None:
        command.append(f"--batch-rays={settings.batch_rays}")
    environment = engine_environment(settings.python)
    if settings.cpu_threads is not None:
        environment["OMP_NUM_THREADS"] = str(settings.cpu_threads)
    try:
        result = subprocess.run(
            command,
            cwd=ENGINE_ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=CALIBRATION_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EstimateError(f"the calibration could not run ({error})") from error
    try:
        cost = _cost_from(json.loads(result.stdout.strip().splitlines()[-1]))
    except (IndexError, ValueError):
        cost = None
    if cost is None:
        lines = result.stderr.strip().splitlines()
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise EstimateError(f"the calibration failed ({reason})") from None
    return cost
