"""Which Python trains, and whether it can: the check behind the preferences' Check button,
which every bake also runs before it renders anything.

Training runs ``python -m core train`` in a child process, so the interpreter must import
everything training imports: torch, numpy, pillow, OpenEXR and the engine itself, and see a
CUDA device when Device is CUDA. ``interpreter_probe.py`` runs in the candidate and reports all
of it at once; here its answer becomes one line a user can act on (what is missing and the pip
line that installs it), or a summary of versions and device for the Check button. A path that
cannot be a Python (a folder, a file that is not executable, a program that prints no answer)
is named as such rather than as a failed import.

No bpy here: the bake checks from a worker thread while Blender stays responsive.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .engine import ENGINE_ROOT, VbnfError
from .training_process import engine_environment

PROBE_SCRIPT = Path(__file__).resolve().with_name("interpreter_probe.py")
PROBE_MARKER = "VBNF-PROBE "
CHECK_TIMEOUT_S = 120.0
INSTALL_COMMAND = "python -m pip install torch numpy pillow OpenEXR"
PREFERENCE_PATH = "Edit > Preferences > Add-ons > VBNF > Python Interpreter"

# (path, file date, device) -> a passed check; importing torch takes seconds.
_checked: dict[tuple[str, float, str], InterpreterCheck] = {}


class InterpreterError(VbnfError):
    """No Python that can train was found; the message says how to provide one."""


@dataclass(frozen=True)
class InterpreterCheck:
    """What a check of one interpreter found. ``problem`` is None when it can train on
    ``device``; ``versions`` and ``device_line`` say with what, for the Check button."""

    python: str
    device: str
    problem: str | None
    versions: str = ""  # "Python 3.11.9, torch 2.13.0+cpu, numpy 1.26.4, ..."
    device_line: str = ""  # "CPU (torch has no CUDA)", "CUDA: NVIDIA H200 (CUDA 12.4)"
    # False when the fix is not another interpreter (Device is CUDA on a machine without one)
    needs_other_python: bool = True

    @property
    def ok(self) -> bool:
        return self.problem is None


def check_interpreter(python: str, device: str = "cpu", fresh: bool = False) -> InterpreterCheck:
    """Check ``python`` for training on ``device``. A pass is remembered per path, file date
    and device (unless ``fresh``); a failure is not, because installing the missing package
    changes nothing the key could see."""
    problem = _path_problem(python)
    if problem is not None:
        return InterpreterCheck(python, device, problem)
    # Not resolved: the pythons of two venvs are links to one file but see other packages.
    path = os.path.abspath(shutil.which(python) or python)
    key = (path, os.stat(path).st_mtime, device)
    if fresh or key not in _checked:
        check = _probe(python, device)
        if not check.ok:
            return check
        _checked[key] = check
    return _checked[key]


def interpreter_problem(python: str, device: str = "cpu") -> str | None:
    """Why ``python`` cannot train on ``device`` (None if it can)."""
    return check_interpreter(python, device).problem


def find_interpreter(preferred: str = "", device: str = "cpu") -> str:
    """The Python that runs training: ``preferred`` (the add-on preference) when set, else the
    one running Blender (``sys.executable``: with the self-contained extension, its bundled
    wheels make it able to train).

    Raises :class:`InterpreterError` naming the problem and how to fix it.
    """
    candidate = preferred.strip() or sys.executable
    check = check_interpreter(candidate, device)
    if check.problem is None:
        return candidate
    if not check.needs_other_python:
        raise InterpreterError(check.problem)
    problem = check.problem
    where = (
        "the Python set in the VBNF add-on preferences"
        if preferred.strip()
        else "Blender's own Python"
    )
    raise InterpreterError(
        f"{where} cannot train: {problem}. Training needs a Python 3.11+ with PyTorch, numpy, "
        f"pillow and OpenEXR ({INSTALL_COMMAND}); set its path in {PREFERENCE_PATH}"
    )


def _path_problem(python: str) -> str | None:
    """What makes ``python`` unable to be an interpreter at all, before running anything."""
    given = Path(python).expanduser()
    if given.is_dir():
        return (
            f"{python} is a folder, not a Python interpreter: choose the python program "
            "inside it (bin/python, or python.exe on Windows)"
        )
    found = shutil.which(python)
    if found is None:
        if not given.exists():
            return f"{python} does not exist"
        return f"{python} is not an executable program"
    return None


def _probe(python: str, device: str) -> InterpreterCheck:
    try:
        result = subprocess.run(
            [python, str(PROBE_SCRIPT), device],
            cwd=ENGINE_ROOT,
            env=engine_environment(python),
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return InterpreterCheck(
            python, device, f"{python} did not answer within {CHECK_TIMEOUT_S:.0f} s"
        )
    except OSError as error:
        return InterpreterCheck(python, device, f"{python} could not be run ({error.strerror})")
    answers = [line for line in result.stdout.splitlines() if line.startswith(PROBE_MARKER)]
    if not answers:
        return InterpreterCheck(python, device, _no_answer(python, result))
    try:
        report = json.loads(answers[-1].removeprefix(PROBE_MARKER))
    except json.JSONDecodeError:
        return InterpreterCheck(python, device, f"{python} gave a garbled check answer")
    return _verdict(python, device, report)


def _no_answer(python: str, result: subprocess.CompletedProcess[str]) -> str:
    """Why a program gave no probe answer: its own last error line, else that it is not a
    Python (``/bin/true`` exits 0 and prints nothing)."""
    lines = result.stderr.strip().splitlines()
    if lines:
        return f"{python}: {lines[-1]}"
    if result.returncode == 0:
        return f"{python} is not a Python interpreter (it ran but did not run the check)"
    return f"{python} is not a Python interpreter (it exited with code {result.returncode})"


def _verdict(python: str, device: str, report: dict[str, Any]) -> InterpreterCheck:
    """The probe's report as the first problem found, or as versions and device."""
    packages = report.get("packages", {})
    versions = ", ".join(
        [f"Python {report.get('python', '?')}", *(f"{n} {v}" for n, v in packages.items())]
    )
    device_line = _device_line(report)
    missing: dict[str, str] = report.get("missing", {})
    problem, needs_other_python = None, True
    if not report.get("python_ok", False):
        problem = f"{python} is Python {report.get('python', '?')}; training needs 3.11 or newer"
    elif missing:
        # A package that is there but fails to import (a broken build) says why.
        broken = "; ".join(
            f"{name}: {reason}"
            for name, reason in missing.items()
            if not reason.startswith("ModuleNotFoundError")
        )
        problem = (
            f"{python} lacks {', '.join(missing)}{f' ({broken})' if broken else ''}; "
            f"install with: {python} -m pip install {' '.join(missing)}"
        )
    elif report.get("engine_error"):
        problem = f"{python} cannot import the VBNF engine ({report['engine_error']})"
    elif device == "cuda" and not report.get("cuda_available", False):
        problem = (
            f"Device is CUDA, but torch {packages.get('torch', '?')} in {python} sees no CUDA "
            "device: set Device to CPU, or install a CUDA build of PyTorch"
        )
        needs_other_python = False
    return InterpreterCheck(python, device, problem, versions, device_line, needs_other_python)


def _device_line(report: dict[str, Any]) -> str:
    if "cuda_available" not in report:
        return ""
    if report["cuda_available"]:
        return f"CUDA: {report.get('cuda_device', '?')} (CUDA {report.get('cuda_version')})"
    if report.get("cuda_version") is None:
        return "CPU (this PyTorch has no CUDA)"
    return "CPU (no CUDA device found)"
