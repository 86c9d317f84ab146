"""What travels between the machine that starts a batch and the node that bakes a file
(``remote_bake.py``), without Ray: the packed work folder, what a rerun skips, where results
land. Real files throughout; the bake itself runs in ``test_ray_bake.py``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR / "addon") not in sys.path:
    sys.path.insert(0, str(REPO_DIR / "addon"))

from vbnf_blender.bake_job import BakeSettings  # noqa: E402
from vbnf_blender.engine import VbnfError  # noqa: E402
from vbnf_blender.remote_bake import BatchFile, FileResult, pack_work, unpack_work  # noqa: E402
from vbnf_blender.work_folder import LOCK_NAME, STATE_NAME, WorkFolderBusy  # noqa: E402

pytestmark = pytest.mark.blender


def _work_folder(folder: Path) -> Path:
    (folder / "dataset" / "train").mkdir(parents=True)
    (folder / "dataset" / "train" / "r_0.exr").write_bytes(b"view 0")
    (folder / "run").mkdir()
    (folder / "run" / "checkpoint.pt").write_bytes(b"weights")
    (folder / STATE_NAME).write_text('{"views_done": 1}')
    (folder / LOCK_NAME).write_text('{"pid": 1, "host": "elsewhere"}')
    return folder


def test_a_packed_work_folder_unpacks_whole_without_its_lock_and_its_state_last(
    tmp_path: Path,
) -> None:
    packed = pack_work(_work_folder(tmp_path / "a.vbnf.bake"))
    target = tmp_path / "b.vbnf.bake"
    target.mkdir()
    (target / "dataset").mkdir()
    (target / "dataset" / "stale.exr").write_bytes(b"old")  # replaced, not merged
    (target / LOCK_NAME).write_text("mine")  # the caller's lock stays
    unpack_work(packed, target)
    files = {
        path.relative_to(target).as_posix(): path.read_bytes()
        for path in target.rglob("*")
        if path.is_file()
    }
    assert files == {
        "dataset/train/r_0.exr": b"view 0",
        "run/checkpoint.pt": b"weights",
        STATE_NAME: b'{"views_done": 1}',
        LOCK_NAME: b"mine",
    }
    with tarfile.open(fileobj=io.BytesIO(packed)) as archive:
        names = archive.getnames()
    assert names[-1] == STATE_NAME and LOCK_NAME not in names


def test_damaged_work_that_came_back_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VbnfError, match="the kept work that came back is damaged"):
        unpack_work(b"not a tar archive" * 100, tmp_path / "x.vbnf.bake")


def _done(file: BatchFile, asset: bytes) -> FileResult:
    metrics = {"levels": [{"level": 2, "psnr": 20.5}, {"level": 3, "psnr": 21.25}]}
    return FileResult(file.blend.name, "done", 3.0, "node-a", asset=asset, metrics=metrics)


def test_a_rerun_skips_only_an_asset_of_the_same_blend_and_settings(tmp_path: Path) -> None:
    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"blend v1")
    out = tmp_path / "out"
    settings = BakeSettings(epochs=1)
    file = BatchFile.read(blend, out, settings)
    assert file.asset == out / "scene.vbnf" and file.finished_report() is None
    file.request("", restart=False)  # takes the work folder's lock, as a submitted bake does
    assert (file.work_dir / LOCK_NAME).is_file()
    file.store(_done(file, b"asset bytes"), tries=2)
    assert (out / "scene.vbnf").read_bytes() == b"asset bytes"
    assert not file.work_dir.exists()  # lock freed, empty folder gone
    report = json.loads(file.report_path.read_text())
    assert report["tries"] == 2 and report["level_psnr"] == {"2": 20.5, "3": 21.25}
    assert file.finished_report() == report
    # Other hardware: still finished. Other training or another .blend: bake again.
    faster = dataclasses.replace(settings, device="cuda", cpu_threads=8)
    assert BatchFile.read(blend, out, faster).finished_report() == report
    longer = dataclasses.replace(settings, epochs=2)
    assert BatchFile.read(blend, out, longer).finished_report() is None
    blend.write_bytes(b"blend v2")
    assert BatchFile.read(blend, out, settings).finished_report() is None
    blend.write_bytes(b"blend v1")
    (out / "scene.vbnf").write_bytes(b"another asset")  # replaced by hand since
    assert BatchFile.read(blend, out, settings).finished_report() is None


def test_work_kept_by_the_node_replaces_the_local_copy_and_travels_next_time(
    tmp_path: Path,
) -> None:
    blend = tmp_path / "scene.blend"
    blend.write_bytes(b"blend")
    file = BatchFile.read(blend, tmp_path / "out", BakeSettings())
    request = file.request("", restart=False)
    assert request.kept_work is None  # nothing kept yet
    packed = pack_work(_work_folder(tmp_path / "node.vbnf.bake"))
    cancelled = FileResult(
        "scene.blend", "cancelled", 1.0, "node-a", work="kept", kept_work=packed, kept="1/8 views"
    )
    file.store(cancelled, tries=1)
    assert (file.work_dir / "run" / "checkpoint.pt").read_bytes() == b"weights"
    assert not (file.work_dir / LOCK_NAME).exists() and not file.report_path.exists()
    again = file.request("python3", restart=False)
    assert again.kept_work is not None and again.python == "python3"
    # The lock is held again until the result is stored: a second bake of it is refused.
    with pytest.raises(WorkFolderBusy):
        file.request("", restart=False)
    file.release()
    assert file.request("", restart=True).kept_work is None  # --restart sends nothing
