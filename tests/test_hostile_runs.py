"""A training run under hostile conditions: a second run into its folder, and a SIGTERM at any
moment of a run (start-up, octree, export, scoring). Real ``python -m core`` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from core_cli import REPO_ROOT, TINY_TRAIN_ARGS, run_core

from core.asset.vbnf import read_asset
from core.neural.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real training runs, several at once

ONE_EPOCH = [*TINY_TRAIN_ARGS[:-4], "--epochs", "1", "--seed", "0"]


def start_training(data: Path, out_dir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "core", "train", str(data), "-o", str(out_dir), "--events", *extra],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def events_until(process: subprocess.Popen[str], wanted: str) -> list[dict]:
    assert process.stdout is not None
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == wanted:
            break
    return events


def test_a_second_run_into_a_busy_folder_is_refused_naming_the_first(
    synthetic_dataset: Path, tmp_path: Path
) -> None:
    out_dir = tmp_path / "run"
    first = start_training(synthetic_dataset, out_dir, *TINY_TRAIN_ARGS[:-4], "--epochs", "50")
    events_until(first, "progress")
    second = run_core("train", synthetic_dataset, "-o", out_dir, *TINY_TRAIN_ARGS, check=False)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert second.returncode == 1
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {out_dir}: another training run"), line
    assert f"(process {first.pid})" in line
    assert first.returncode == 130
    assert not (out_dir / "train.lock").exists()


def stopped_at(process: subprocess.Popen[str], trigger: str | float) -> list[dict]:
    """SIGTERM once ``trigger`` happens (an event's stage name, or seconds after the start);
    returns every event the run printed."""
    assert process.stdout is not None
    events = []
    if isinstance(trigger, float):
        time.sleep(trigger)
        process.send_signal(signal.SIGTERM)
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1].get("stage") == trigger:
            process.send_signal(signal.SIGTERM)
    return events


def test_sigterm_at_any_moment_cancels_cleanly(synthetic_dataset: Path, tmp_path: Path) -> None:
    """Start-up (the first event, or 1.2 s in: importing torch), octree, export and scoring:
    each stop leaves the old files or whole new ones, no temporary, no lock, and ends with the
    ``cancelled`` event and exit code 130. (A stop before Python reaches ``main`` is the
    interpreter's: no code of ours runs yet.)"""
    triggers: list[str | float] = ["load", 1.2, "octree", "export", "eval"]
    runs = {
        trigger: start_training(synthetic_dataset, tmp_path / f"run{index}", *ONE_EPOCH)
        for index, trigger in enumerate(triggers)
    }
    # every run is watched at once: a run read only after the ones before it would be past its
    # trigger (or done) by then, and the signal would land late or not at all
    with ThreadPoolExecutor(max_workers=len(runs)) as pool:
        events_per_run = list(pool.map(stopped_at, runs.values(), runs.keys()))
    for index, ((trigger, process), events) in enumerate(
        zip(runs.items(), events_per_run, strict=True)
    ):
        _, stderr = process.communicate(timeout=300)
        if trigger == "eval" and events[-1]["event"] == "done":
            # scoring a tiny run can end before the signal lands: then the run is simply done
            assert process.returncode == 0, stderr
            assert not read_asset(tmp_path / f"run{index}" / "asset.vbnf").missing_levels
            continue
        assert process.returncode == 130, (trigger, stderr)
        assert events and events[-1]["event"] == "cancelled", (trigger, events[-3:])
        assert "cancelled: stopped by SIGTERM" in stderr.strip().splitlines()[-1], stderr
        out_dir = tmp_path / f"run{index}"
        files = {path.name for path in out_dir.iterdir()} if out_dir.exists() else set()
        assert files <= {"checkpoint.pt", "asset.vbnf"}, (trigger, files)  # nothing stray
        if "checkpoint.pt" in files:
            load_checkpoint(out_dir)
        if "asset.vbnf" in files:
            assert not read_asset(out_dir / "asset.vbnf").missing_levels
