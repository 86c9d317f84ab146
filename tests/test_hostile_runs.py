"""A training run under hostile conditions: a second run into its folder, and a SIGTERM at any
moment of a run (start-up, training, export, metrics). Real ``python -m core`` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from core_cli import REPO_ROOT, TINY_TRAIN_ARGS, run_core


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
