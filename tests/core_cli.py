"""Running the engine's command line from tests, as users do: a real ``python -m core``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Tiny but real: levels 2..5 on 24 views of 32x32 px reach ~25 dB in a few hundred steps.
TINY_TRAIN_ARGS = [
    "--min-level",
    "2",
    "--max-level",
    "5",
    "--batch-rays",
    "512",
    "--epochs",
    "4",
    "--seed",
    "0",
]


def run_core(
    *args: str | Path, check: bool = True, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m core ...`` as a real subprocess from the repository root."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "core", *map(str, args)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout_s,
        env=environment,
    )
