"""Writes on a full (and a read-only) disk: one ``OutputError`` naming the file, the previous
file intact, no temporary left behind. The disk is a real 1 MiB tmpfs, mounted where the tests
may mount one (root on Linux) and skipped elsewhere."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from core_cli import run_core_here

from core.atomic import atomic_write_bytes
from core.data.dataset import read_depth_exr, read_rgba_png, write_depth_exr, write_rgba_png
from core.errors import OutputError

DISK_BYTES = 1 << 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0 or not sys.platform.startswith("linux"):
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def fill(disk: Path) -> None:
    """Take every free byte of ``disk`` (a file left there, written until the disk refuses)."""
    with open(disk / "filler", "wb", buffering=0) as stream:
        try:
            while True:
                stream.write(bytes(4096))
        except OSError:
            pass


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


def only_the_old_files(disk: Path, names: set[str]) -> None:
    assert {path.name for path in disk.iterdir()} == names | {"filler"}


def test_a_full_disk_keeps_every_previous_file(small_disk: Path) -> None:
    depth = np.random.default_rng(0).uniform(1, 2, size=(200, 200)).astype(np.float32)
    rgba = np.random.default_rng(1).uniform(size=(200, 200, 4))
    write_depth_exr(small_disk / "depth.exr", depth[:8, :8])
    write_rgba_png(small_disk / "view.png", rgba[:8, :8])
    atomic_write_bytes(small_disk / "metrics.json", b'{"old": true}')
    fill(small_disk)
    writes = [
        ("depth.exr", lambda path: write_depth_exr(path, depth)),
        ("view.png", lambda path: write_rgba_png(path, rgba)),
        ("metrics.json", lambda path: atomic_write_bytes(path, bytes(1 << 19))),
    ]
    for name, write in writes:
        with pytest.raises(OutputError) as caught:
            write(small_disk / name)
        message = str(caught.value)
        assert message.startswith(f"{small_disk / name}: ") and "\n" not in message
        assert "nothing replaced" in message
    assert read_depth_exr(small_disk / "depth.exr").shape == (8, 8)
    assert read_rgba_png(small_disk / "view.png").shape == (8, 8, 4)
    assert (small_disk / "metrics.json").read_bytes() == b'{"old": true}'
    only_the_old_files(small_disk, {"depth.exr", "view.png", "metrics.json"})


def test_a_checkpoint_on_a_full_disk_keeps_the_previous_one(small_disk: Path) -> None:
    torch = pytest.importorskip("torch")
    from core.asset.octree import SparseOctree
    from core.neural.checkpoint import TrainState, load_checkpoint, save_checkpoint
    from core.neural.field import FieldConfig, RadianceField

    points = np.random.default_rng(2).uniform(-0.5, 0.5, size=(50, 3))
    config = FieldConfig(min_level=1, max_level=3, feature_dim=4)
    field = RadianceField(SparseOctree.from_points(points, 3), config, 1.0, np.zeros(3))
    optimizer = torch.optim.Adam(field.parameters())
    path = small_disk / "checkpoint.pt"
    save_checkpoint(path, field, optimizer, TrainState(step=1), {})
    fill(small_disk)
    with torch.no_grad():
        next(field.parameters()).add_(1.0)
    with pytest.raises(OutputError, match=r"checkpoint\.pt: cannot write \(No space left"):
        save_checkpoint(path, field, optimizer, TrainState(step=2), {})
    assert load_checkpoint(path).state.step == 1
    only_the_old_files(small_disk, {"checkpoint.pt"})


def test_the_command_line_says_one_line_on_a_full_or_read_only_disk(small_disk: Path) -> None:
    fill(small_disk)
    for mode in ("rw", "ro"):
        remount(small_disk, mode)
        result = run_core_here("synth", small_disk / "scene", "--resolution", "16")
        assert result.returncode == 1, result.stderr
        line = result.stderr.strip()
        assert line.startswith(f"error: {small_disk / 'scene'}") and "\n" not in line, line
        assert "/." not in line.split(": ")[1], line  # the user's file, not a temporary
        remount(small_disk, "rw")
        only_the_old_files(small_disk, {"scene"} if (small_disk / "scene").exists() else set())
