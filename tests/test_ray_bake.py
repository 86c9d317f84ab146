"""``batch.py bake --ray`` on a real Ray cluster: a head node started here on this machine
(``ray start --head``, 2 CPUs, no dashboard, its logs in a temporary folder) and three tiny
scenes, one of them empty. One scenario, run as the command line runs it: Ctrl-C keeps the
work, a rerun resumes it while a worker process is killed mid-task (the task is sent again),
and a third run skips the finished assets without starting anything. Also: the one-line
failure of a node that cannot train. What travels between the machines is tested without Ray
in ``test_remote_bake.py``.

Skipped without Ray (an optional dependency: ``pip install ray``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray")

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
for _path in (TESTS_DIR, REPO_DIR / "addon"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import blender_scenes as scenes  # noqa: E402
from vbnf_blender.work_folder import views_line  # noqa: E402

pytestmark = pytest.mark.blender

BATCH_SCRIPT = REPO_DIR / "addon" / "vbnf_blender" / "batch.py"
RAY = Path(sys.executable).with_name("ray")
# 8 + 1 views of 16 px, one epoch at levels 2..3, one CPU a bake: seconds each.
TINY_BAKE = [
    "--views", "8", "--resolution", "16", "--samples", "1",
    "--min-level", "2", "--max-level", "3", "--epochs", "1", "--threads", "1",
]  # fmt: skip
GOOD, BROKEN = ("alpha.blend", "beta.blend"), "broken.blend"
HEAD_STOP_S = 3.0
RUN_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Cluster:
    address: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A one-node cluster for this module; its processes share one process group, which the
    teardown ends (the workers end with their raylet)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="vbnf-ray-", dir="/tmp"))  # short: socket paths
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env |= {
        "RAY_TMPDIR": str(temp_dir),
        "RAY_AUTH_MODE": "disabled",  # a local test cluster: no token in the home folder
        "RAY_USAGE_STATS_ENABLED": "0",
        "OMP_NUM_THREADS": "1",
    }
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    head = subprocess.Popen(
        [str(RAY), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
         "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={temp_dir}",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, errors = head.communicate(timeout=120)
        assert head.returncode == 0, errors
        yield Cluster(f"127.0.0.1:{port}", env)
    finally:
        _end_group(head.pid)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _end_group(group: int) -> None:
    """SIGTERM the head's processes, then SIGKILL what is left after a short grace (its GCS
    takes its time to shut down, and nothing of it is kept)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + HEAD_STOP_S
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def blends(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two emissive scenes and one with nothing to capture."""
    folder = tmp_path_factory.mktemp("ray_scenes")
    for name, rgb in zip(GOOD, ((0.8, 0.3, 0.1), (0.1, 0.4, 0.9)), strict=True):
        scenes.reset_blender()
        sphere = scenes.add_uv_sphere("Sphere", radius_m=0.8)
        scenes.set_emission(sphere, rgb)
        cube = scenes.add_cube("Cube", location=(1.3, 0.0, 0.0), size_m=0.8)
        scenes.set_emission(cube, rgb[::-1])
        scenes.save_blend(folder / name)
    scenes.reset_blender()
    scenes.save_blend(folder / BROKEN)
    return folder


@contextmanager
def _ctrl_c_delivered() -> Iterator[None]:
    """A child started inside gets SIGINT as a terminal's Ctrl-C does. A child inherits an
    ignored SIGINT, and its Python then never raises KeyboardInterrupt: in the full suite the
    batch below ran to its end after the Ctrl-C (twice, never with this file alone), so
    something earlier in the same pytest worker left SIGINT ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Batch:
    """``batch.py bake`` in a child process, its stderr (the progress line) read as it
    comes."""

    def __init__(
        self, cluster: Cluster, folder: Path, files: tuple[str, ...] = (*GOOD, BROKEN)
    ) -> None:
        command = [sys.executable, str(BATCH_SCRIPT), "bake", *files, "-o", "out",
                   *TINY_BAKE, f"--ray={cluster.address}"]  # fmt: skip
        with _ctrl_c_delivered():
            self.process = subprocess.Popen(
                command, cwd=folder, env=cluster.env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        while chunk := self.process.stderr.read(1):
            self.stderr += chunk

    def percent(self) -> int:
        found = re.findall(r"ray bake\s+(\d+)%:", self.stderr)
        return int(found[-1]) if found else 0

    def finish(self) -> tuple[int, str, str]:
        assert self.process.stdout is not None
        stdout = self.process.stdout.read()  # the table comes at the end: no pipe fills up
        self.process.wait(timeout=RUN_TIMEOUT_S)
        self._reader.join(timeout=5)
        lines = [line for line in self.stderr.replace("\r", "\n").splitlines() if line.strip()]
        return self.process.returncode, stdout, "\n".join(lines)


def _wait_for(condition: object, what: str, timeout_s: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _bake_workers() -> list[int]:
    """Ray worker processes running a bake task (their title is ``ray::bake <file>``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if title.startswith(b"ray::bake "):
            found.append(int(entry.name))
    return found


def _rows(stdout: str) -> dict[str, list[str]]:
    """The summary table, by file."""
    return {line.split()[0]: line.split() for line in stdout.splitlines() if ".blend" in line}


@pytest.mark.slow
def test_a_stopped_batch_resumes_survives_a_killed_worker_and_skips_what_is_finished(
    cluster: Cluster, blends: Path
) -> None:
    out = blends / "out"
    # Ctrl-C once the bakes are under way: each running bake stops as Cancel does and its
    # work comes back into OUT_DIR; the broken file never started.
    first = _Batch(cluster, blends)
    _wait_for(lambda: first.percent() >= 5, "the bakes to render some views")
    first.process.send_signal(signal.SIGINT)
    code, stdout, stderr = first.finish()
    assert code == 1, stderr
    assert stderr.splitlines()[-1] == (
        "error: stopped: run the same command again to resume the unfinished files"
    ), stderr
    assert _rows(stdout)[BROKEN][1:3] == ["not", "started"], stdout
    kept = {}
    for name in GOOD:
        work_dir = out / f"{Path(name).stem}.vbnf.bake"
        assert not (out / f"{Path(name).stem}.vbnf").exists()
        if work_dir.is_dir():
            assert not (work_dir / "bake.lock").exists()  # freed
            kept[name] = json.loads((work_dir / "bake.json").read_text())["views_done"]
    assert kept and all(views >= 1 for views in kept.values()), (kept, stdout, stderr)

    # The same command again, with a worker killed mid-task: the task is sent again, from the
    # work this machine holds, and the views kept are not rendered again.
    second = _Batch(cluster, blends)
    _wait_for(lambda: _bake_workers(), "a bake task to start")
    time.sleep(1.0)  # into the bake, not the worker's start-up
    victims = _bake_workers()
    os.kill(victims[0], signal.SIGKILL)
    code, stdout, stderr = second.finish()
    assert code == 1, stderr
    assert f"error: {BROKEN}: scene 'Scene' has no rendered objects with geometry" in stderr
    assert stderr.splitlines()[-1] == f"error: 1 of 3 files failed: {BROKEN}", stderr
    rows = _rows(stdout)
    assert [rows[name][1] for name in GOOD] == ["done", "done"], stdout
    assert sorted(rows[name][2] for name in GOOD) == ["1", "2"], stdout  # one was retried
    assert rows[BROKEN][1:3] == ["failed", "1"], stdout
    for name in GOOD:
        stem = Path(name).stem
        report = json.loads((out / f"{stem}.vbnf.report.json").read_text())
        assert report["outcome"] == "done" and set(report["level_psnr"]) == {"2", "3"}
        assert rows[name][-2:] == [f"{report['level_psnr'][level]:.2f}" for level in ("2", "3")]
        assert (out / f"{stem}.vbnf").stat().st_size == report["metrics"]["asset"]["total_bytes"]
        assert not (out / f"{stem}.vbnf.bake").exists()
        if name in kept:
            resumed = f"resumed from {views_line(kept[name], 8, 1)}"  # 8 views + 1 held out
            # the stop may have come after the first checkpoint, which the retry then continues
            assert re.fullmatch(rf"{re.escape(resumed)}(, epoch \d+/\d+)?", report["resume_note"])
    assert not (out / "broken.vbnf").exists()

    # Once more, without the broken file: nothing to bake, so Ray is not even asked.
    stamps = {name: (out / f"{Path(name).stem}.vbnf").stat().st_mtime_ns for name in GOOD}
    code, stdout, stderr = _Batch(cluster, blends, files=GOOD).finish()
    rows = _rows(stdout)
    assert code == 0 and [rows[name][1] for name in GOOD] == ["skipped", "skipped"], stderr
    assert "ray bake" not in stderr
    assert {name: (out / f"{Path(name).stem}.vbnf").stat().st_mtime_ns for name in GOOD} == stamps


@pytest.mark.slow
def test_a_node_that_cannot_train_ends_the_batch_in_one_line(
    cluster: Cluster, blends: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(BATCH_SCRIPT), "bake", str(blends / GOOD[0]), "-o", str(tmp_path),
         *TINY_BAKE, "--python", "/no/such/python", f"--ray={cluster.address}", "--restart"],
        env=cluster.env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert re.fullmatch(
        r"error: node \S+ cannot bake: /no/such/python does not exist", errors[-1]
    ), result.stderr
    assert not list(tmp_path.iterdir())


def test_the_summary_table_and_the_ray_argument() -> None:
    from vbnf_blender import batch
    from vbnf_blender.ray_bake import BatchReport, FileRow

    report = BatchReport(levels=[2, 3])
    report.rows = [
        FileRow(
            "a.blend", "done", 2, 12.4, "node-1", {2: 20.123, 3: 21.5}, "resumed from 3/8 views"
        ),
        FileRow("b.blend", "skipped", level_psnr={2: 19.0, 3: 19.5}, message="finished"),
        FileRow("c.blend", "failed", 1, 0.4, "node-2", message="nothing to capture"),
    ]
    assert report.table().splitlines() == [
        "file     outcome  tries  time  node    L2 dB  L3 dB",
        "a.blend  done     2      12 s  node-1  20.12  21.50",
        "b.blend  skipped  -      -     -       19.00  19.50",
        "c.blend  failed   1      0 s   node-2  -      -",
    ]
    assert report.notes() == ["a.blend: resumed from 3/8 views"]
    assert report.problems() == ["error: c.blend: nothing to capture"]
    assert report.verdict() == "1 of 3 files failed: c.blend"
    parser = batch.build_parser()
    assert parser.parse_args(["bake", "a.blend", "-o", "out", "--ray"]).ray == ""
    assert parser.parse_args(["bake", "a.blend", "-o", "out"]).ray is None
    assert parser.parse_args(["bake", "-o", "out", "--ray=head:6379"]).ray == "head:6379"
    with pytest.raises(batch.UsageError, match="put --ray after the files"):
        parser.parse_args(["bake", "--ray", "a.blend", "-o", "out"])
