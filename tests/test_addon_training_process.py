"""The training subprocess machinery the modal bake drives: events, stopping, errors, interpreter.

A stand-in engine (a few lines of Python run with ``-c``) plays each behaviour deterministically
and in milliseconds; the real engine is exercised end to end in ``test_addon_bake.py``.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import sys
import textwrap
import time
import venv
from pathlib import Path

import pytest

ADDON_DIR = Path(__file__).resolve().parents[1] / "addon"
if str(ADDON_DIR) not in sys.path:
    sys.path.insert(0, str(ADDON_DIR))

from vbnf_blender import interpreter  # noqa: E402
from vbnf_blender import training_process as tp  # noqa: E402


def _fake_engine(body: str) -> list[str]:
    """A command running ``body`` as a Python script, as ``train_command`` would run the engine."""
    return [sys.executable, "-c", textwrap.dedent(body)]


def _run_to_end(process: tp.TrainingProcess, timeout_s: float = 30.0) -> list[dict]:
    events: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while not process.finished:
        events += process.poll()
        assert time.monotonic() < deadline, "the child did not finish in time"
        time.sleep(0.02)
    return events + process.poll()


def test_parse_event_accepts_engine_lines_and_ignores_the_rest() -> None:
    assert tp.parse_event('{"event": "stage", "stage": "train", "message": "m"}\n') == {
        "event": "stage",
        "stage": "train",
        "message": "m",
    }
    for noise in ("", "warning: something", "{not json", '{"no_event": 1}', "[1, 2]"):
        assert tp.parse_event(noise) is None


def test_status_follows_the_event_sequence_of_a_run() -> None:
    status = tp.TrainingStatus()
    events = [
        {"event": "stage", "stage": "train", "message": "training 10 steps"},
        {"event": "progress", "step": 5, "steps": 10, "fraction": 0.5, "seconds_left": None,
         "epoch": 1, "loss": 0.1, "psnr": 20.5},
        {"event": "progress", "step": 10, "steps": 10, "fraction": 1.0, "seconds_left": 0.0,
         "epoch": 2, "loss": 0.05, "psnr": 24.0, "future_field": "ignored"},
        {"event": "checkpoint", "path": "/x/checkpoint.pt", "step": 10, "steps_per_epoch": 5},
        {"event": "level", "level": 3, "psnr": 21.0, "ssim": 0.8},
        {"event": "level", "level": 4, "psnr": 23.5, "ssim": 0.9},
        {"event": "some_future_event"},
        {"event": "done", "out_dir": "/x", "asset": "/x/asset.vbnf", "metrics": []},
    ]  # fmt: skip
    seen = []
    for event in events:
        status.apply(event)
        seen.append((status.stage, status.fraction, status.epoch))
    assert seen[1] == ("train", 0.5, 1)
    assert status.seconds_left == 0.0 and status.psnr == 24.0
    assert status.level_psnr == {3: 21.0, 4: 23.5}
    assert (status.checkpoint_step, status.steps_per_epoch) == (10, 5)  # what a bake resumes
    assert (status.stage, status.fraction, status.asset) == ("done", 1.0, "/x/asset.vbnf")


def test_events_stream_in_while_the_child_runs() -> None:
    process = tp.TrainingProcess(
        _fake_engine("""
            import json, sys, time
            for step in range(1, 4):
                print(json.dumps({"event": "progress", "step": step, "steps": 3,
                                  "fraction": step / 3, "epoch": 1, "psnr": 10.0 + step}))
                sys.stdout.flush()
                sys.stderr.write(f"\\r[###] {step}/3")  # the engine's progress bar
                time.sleep(0.2)
            print(json.dumps({"event": "done", "asset": "a.vbnf", "out_dir": ".", "metrics": []}))
        """)
    )
    first: list[dict] = []
    deadline = time.monotonic() + 20
    while not first:  # the first event arrives before the child ends: nothing waits for EOF
        first = process.poll()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert process.returncode is None
    rest = _run_to_end(process)
    assert [e["step"] for e in first + rest if e["event"] == "progress"] == [1, 2, 3]
    assert process.returncode == 0 and process.status.asset == "a.vbnf"


def test_a_user_error_surfaces_the_engines_error_line() -> None:
    process = tp.TrainingProcess(
        _fake_engine("""
            import json, sys
            print(json.dumps({"event": "error", "message": "dataset is broken"}))
            sys.stderr.write("[##....] 1/10\\rerror: /data: transforms_train.json is missing\\n")
            sys.exit(1)
        """)
    )
    _run_to_end(process)
    assert process.returncode == tp.EXIT_USER_ERROR
    assert process.failure_message() == "/data: transforms_train.json is missing"


def test_a_crash_surfaces_the_last_stderr_line() -> None:
    process = tp.TrainingProcess(_fake_engine("raise MemoryError('out of memory in step 3')"))
    _run_to_end(process)
    message = process.failure_message()
    assert "exit code 1" in message and "MemoryError: out of memory in step 3" in message


def test_stop_lets_the_child_checkpoint_and_exit_130() -> None:
    process = tp.TrainingProcess(
        _fake_engine("""
            import json, signal, sys, time
            def stop(signum, frame):
                print(json.dumps({"event": "checkpoint", "path": "c.pt", "step": 7}))
                sys.exit(130)
            signal.signal(signal.SIGTERM, stop)
            print(json.dumps({"event": "stage", "stage": "train", "message": "training"}))
            sys.stdout.flush()
            time.sleep(60)
        """)
    )
    while not process.poll():  # wait until the child runs and has its handler installed
        time.sleep(0.02)
    process.stop()
    events = _run_to_end(process, timeout_s=10)
    assert process.stopping and process.returncode == tp.EXIT_CANCELLED
    assert {"event": "checkpoint", "path": "c.pt", "step": 7} in events


def test_a_child_ignoring_stop_is_killed_after_the_grace_period() -> None:
    process = tp.TrainingProcess(
        _fake_engine("""
            import json, signal, sys, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print(json.dumps({"event": "stage", "stage": "train", "message": "stubborn"}))
            sys.stdout.flush()
            time.sleep(60)
        """)
    )
    while not process.poll():
        time.sleep(0.02)
    started = time.monotonic()
    process.stop(grace_s=0.5)
    _run_to_end(process, timeout_s=10)
    assert process.returncode is not None and process.returncode < 0  # killed by a signal
    assert time.monotonic() - started < 5


def test_the_train_command_runs_the_engine_package_with_the_options() -> None:
    command = tp.train_command("py", Path("data"), Path("run"), ["--epochs=2"])
    assert command == ["py", "-m", "core", "train", "data", "-o", "run", "--events", "--epochs=2"]
    environment = tp.engine_environment()
    assert environment["PYTHONPATH"].split(os.pathsep)[0] == str(tp.ENGINE_ROOT)
    assert (tp.ENGINE_ROOT / "core" / "__main__.py").is_file()


def test_this_python_can_train_and_is_the_default() -> None:
    check = interpreter.check_interpreter(sys.executable, fresh=True)
    assert check.problem is None, check.problem
    assert f"torch {torch_version()}" in check.versions and "OpenEXR" in check.versions
    assert check.device_line.startswith(("CPU", "CUDA"))
    assert interpreter.find_interpreter("") == sys.executable


def torch_version() -> str:
    import torch

    return str(torch.__version__)


def test_a_python_without_torch_gets_instructions(tmp_path: Path) -> None:
    no_torch = tmp_path / "python-without-torch"
    no_torch.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\n"
                        "exit 1\n")  # fmt: skip
    no_torch.chmod(0o755)
    with pytest.raises(interpreter.InterpreterError) as raised:
        interpreter.find_interpreter(str(no_torch))
    message = str(raised.value)
    assert "No module named 'torch'" in message
    assert "pip install torch" in message and "Python Interpreter" in message
    with pytest.raises(interpreter.InterpreterError, match="does not exist"):
        interpreter.find_interpreter(str(tmp_path / "missing-python"))


def test_a_bare_python_is_told_every_package_it_lacks_in_one_line(tmp_path: Path) -> None:
    """A real interpreter with nothing installed (a fresh venv) gets one line naming all four
    packages and the pip command, not only the first failed import."""
    venv.create(tmp_path / "bare", with_pip=False)
    python = str(tmp_path / "bare" / "bin" / "python")
    problem = interpreter.interpreter_problem(python)
    assert problem is not None and "\n" not in problem
    assert "lacks numpy, torch, pillow, OpenEXR" in problem
    assert f"{python} -m pip install numpy torch pillow OpenEXR" in problem


def test_what_cannot_be_a_python_is_named_as_such(tmp_path: Path) -> None:
    folder = interpreter.interpreter_problem(str(tmp_path))
    assert folder == (
        f"{tmp_path} is a folder, not a Python interpreter: choose the python program inside it "
        "(bin/python, or python.exe on Windows)"
    )
    silent = interpreter.interpreter_problem(shutil.which("true") or "/bin/true")
    assert silent is not None and "is not a Python interpreter" in silent
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a program")
    assert interpreter.interpreter_problem(str(text_file)) == (
        f"{text_file} is not an executable program"
    )


def test_device_cuda_is_checked_before_anything_renders() -> None:
    import torch

    check = interpreter.check_interpreter(sys.executable, "cuda", fresh=True)
    if torch.cuda.is_available():
        assert check.ok and check.device_line.startswith("CUDA: ")
    else:
        assert check.problem is not None
        assert check.problem.startswith("Device is CUDA, but torch ")
        assert "sees no CUDA device" in check.problem


def test_events_are_json_lines_as_the_engine_prints_them() -> None:
    from core.progress import ProgressReporter

    events_out, bar_out = io.StringIO(), io.StringIO()
    reporter = ProgressReporter(4, events=True, event_stream=events_out, stream=bar_out)
    reporter.stage("train", "training 4 steps")
    reporter.update(4, epoch=1, loss=0.5, psnr=12.0)
    status = tp.TrainingStatus()
    for line in events_out.getvalue().splitlines():
        event = tp.parse_event(line)
        assert event is not None
        status.apply(event)
    assert status.stage == "train" and status.fraction == 1.0 and status.psnr == 12.0


def test_the_estimate_counts_the_steps_the_trainer_takes(synthetic_dataset: Path) -> None:
    """Steps per epoch as the trainer counts them (every pixel of every training view is one
    ray), and a bake's estimate made of a measured step and a measured view."""
    from vbnf_blender import estimate

    from core.data.dataset import load_split

    train = load_split(synthetic_dataset, "train")
    views, resolution_px = len(train.camera_to_world), train.intrinsics.width
    assert estimate.training_steps(3, views, resolution_px, 1000) == 3 * math.ceil(
        train.rgba.shape[0] * train.rgba.shape[1] * train.rgba.shape[2] / 1000
    )
    cost = estimate.estimate(
        estimate.StepCost(seconds=0.5, batch_rays=4096),
        2.0,
        capture_setup_s=1.0,
        epochs=10,
        train_views=100,
        test_views=10,
        resolution_px=128,
        levels=4,
    )
    assert cost.capture_s == 1.0 + 2.0 * 110
    assert cost.train_s == 0.5 * (10 * 400 + 0.5 * 4 * 40)
    assert cost.line() == "about 38 min (capture 4 min, training 34 min)"
    assert estimate.format_duration(42) == "42 s" and estimate.format_duration(4800) == "1 h 20 min"
