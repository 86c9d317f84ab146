"""Running the engine's command line from tests: a real ``python -m core`` subprocess, or the
same ``main`` in this process where only its output and exit code matter."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
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


def run_core_here(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m core ...`` run by ``core.cli.main`` in this process, without the second or so
    an interpreter and its imports cost: for tests of one-line errors. An exception escaping
    ``main`` (a traceback in a subprocess) fails the calling test."""
    from core.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            code = main([str(arg) for arg in args])
        except SystemExit as exit_:  # argparse's own usage errors
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(
        ["core", *map(str, args)], code, stdout.getvalue(), stderr.getvalue()
    )
