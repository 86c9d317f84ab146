"""The built extension end to end with real bpy: install, bake, import, LOD, bytes, render,
save and reload, export, failures, batch baking, unregister.

One tiny scene is baked once through the Bake operator (12 views of 24 px, one epoch, levels
2..4); the tests then reopen the saved .blend, which is itself the save-and-reload check. All
tests share one worker (xdist group) because the installed extension lives in that process.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
for _path in (TESTS_DIR, REPO_DIR / "addon"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import addon_extension  # noqa: E402
import blender_scenes as scenes  # noqa: E402
import bpy  # noqa: E402
from core_cli import run_core  # noqa: E402
from mathutils import Vector  # noqa: E402

pytestmark = pytest.mark.blender

BATCH_SCRIPT = REPO_DIR / "addon" / "vbnf_blender" / "batch.py"
TINY_BAKE = {
    "views": 12,
    "resolution": 24,
    "samples": 2,
    "bitwidth": 4,
    "min_level": 2,
    "max_level": 4,
    "epochs": 1,
}
LEVELS = (2, 3, 4)


@dataclass(frozen=True)
class Baked:
    blend: Path
    asset: Path
    seconds: float


def _tiny_scene() -> None:
    """Two emissive primitives: colours that do not depend on lighting, geometry that does
    not fill the octree's cube, so levels differ in voxel count."""
    addon_extension.reset_file()
    sphere = scenes.add_uv_sphere("Sphere", radius_m=0.8)
    scenes.set_emission(sphere, (0.8, 0.3, 0.1))
    cube = scenes.add_cube("Cube", location=(1.3, 0.0, 0.0), size_m=0.8)
    scenes.set_emission(cube, (0.1, 0.4, 0.9))


def _set_bake_settings(**overrides: Any) -> None:
    props: Any = bpy.context.scene.vbnf_bake  # type: ignore[union-attr]
    for name, value in {**TINY_BAKE, **overrides}.items():
        setattr(props, name, value)


@pytest.fixture(scope="module")
def extension() -> ModuleType:
    return addon_extension.ensure_extension()


@pytest.fixture(scope="module")
def baked(extension: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Baked:
    folder = tmp_path_factory.mktemp("baked")
    _tiny_scene()
    blend = folder / "tiny.blend"
    scenes.save_blend(blend)
    _set_bake_settings(keep_dataset=True, hemisphere=True, fov_deg=50.0)
    started = time.monotonic()
    assert bpy.ops.vbnf.bake() == {"FINISHED"}
    seconds = time.monotonic() - started
    bpy.ops.wm.save_mainfile()
    return Baked(blend, folder / "tiny.vbnf", seconds)


def _open(blend: Path) -> Any:
    """Open a saved file and return its neural-field object (there is exactly one)."""
    addon_extension.ensure_extension()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    fields = [obj for obj in bpy.data.objects if obj.type == "VOLUME"]
    assert len(fields) == 1, [obj.name for obj in bpy.data.objects]
    return fields[0]


def _vdb_voxels(path: Path) -> int:
    bpy.utils.expose_bundled_modules()
    import openvdb

    return int(openvdb.read(str(path), "density").activeVoxelCount())


def test_the_zip_holds_the_engine_and_passes_blenders_validator() -> None:
    import zipfile

    import build_addon

    archive = addon_extension.built_zip()
    with zipfile.ZipFile(archive) as bundle:
        names = set(bundle.namelist())
        manifest = bundle.read("blender_manifest.toml").decode()
    assert {
        "__init__.py",
        "blender_manifest.toml",
        "core/__main__.py",
        "core/asset/vbnf/reader.py",
    } <= names
    assert not {"scenes.py", "core/commands/report.py", "core/asset/vbnf/example.py"} & names
    assert not any(name.startswith("core/report/") for name in names)
    assert any(name.startswith("cuda/") and name.endswith(".cu") for name in names)
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)
    assert f'version = "{build_addon.project_version()}"' in manifest
    build_addon.run_tool("validate", str(archive))  # raises BuildError when invalid


def test_importing_a_damaged_file_reports_it_and_leaves_nothing_behind(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    damaged = tmp_path / "damaged.vbnf"
    damaged.write_bytes(b"definitely not an asset")
    with pytest.raises(RuntimeError, match=r"damaged\.vbnf"):
        bpy.ops.import_scene.vbnf(filepath=str(damaged))
    assert len(bpy.data.objects) == 0 and len(bpy.data.volumes) == 0


def test_the_bake_button_writes_the_asset_next_to_the_blend_and_imports_it(
    baked: Baked,
) -> None:
    assert baked.asset.is_file() and baked.asset.stat().st_size > 0
    obj = _open(baked.blend)
    settings = obj.vbnf
    assert settings.asset_path == "//tiny.vbnf"  # relative to the .blend
    assert (settings.min_level, settings.max_level, settings.lod) == (2, 4, 4)
    assert obj.data.filepath.startswith("//vbnf_cache/")
    obj.data.grids.load()
    assert {(grid.name, grid.data_type) for grid in obj.data.grids} == {
        ("density", "FLOAT"),
        ("color", "VECTOR_FLOAT"),
    }
    material = obj.data.materials[0]
    nodes = {node.bl_idname for node in material.node_tree.nodes}
    assert "ShaderNodeVolumePrincipled" in nodes
    assert not (baked.blend.parent / "tiny.vbnf.bake").exists()  # the asset is the product
    print(f"\nbake through the operator took {baked.seconds:.1f} s")


def test_the_bake_keeps_its_report_and_dataset_beside_the_asset(baked: Baked) -> None:
    """The panel's hemisphere, field of view and keep-dataset reach the capture through the
    one mapping to BakeSettings; the report keeps the trainer's metrics with settings and
    times after the work folder is gone."""
    report = json.loads((baked.blend.parent / "tiny.vbnf.report.json").read_text())
    assert report["asset"] == "tiny.vbnf"
    capture = report["settings"]["capture"]
    assert capture["hemisphere"] is True and capture["fov_deg"] == 50.0
    assert report["settings"]["keep_dataset"] is True
    assert capture["train_views"] == TINY_BAKE["views"]
    assert set(report["seconds"]) == {"capture", "train"}
    assert all(seconds > 0 for seconds in report["seconds"].values())
    levels = [level["level"] for level in report["metrics"]["levels"]]
    assert levels == list(LEVELS)
    assert report["metrics"]["asset"]["total_bytes"] == baked.asset.stat().st_size
    dataset = baked.blend.parent / "tiny.dataset"
    transforms = json.loads((dataset / "transforms_train.json").read_text())
    assert len(transforms["frames"]) == TINY_BAKE["views"]
    heights = [frame["transform_matrix"][2][3] for frame in transforms["frames"]]
    assert min(heights) > 0.0  # the upper hemisphere: every camera above the target
    assert transforms["camera_angle_x"] == pytest.approx(math.radians(50.0), abs=1e-4)


def test_the_lod_slider_swaps_grids_and_voxel_counts(baked: Baked) -> None:
    obj = _open(baked.blend)
    settings, counts, files = obj.vbnf, [], []
    for level in LEVELS:
        settings.lod = level
        assert settings.lod_error == ""
        path = Path(bpy.path.abspath(obj.data.filepath))
        assert path.name == f"level_{level}.vdb" and path.is_file()
        obj.data.grids.load()
        assert obj.data.grids.is_loaded and {g.name for g in obj.data.grids} == {"density", "color"}
        assert settings.voxel_count == _vdb_voxels(path) > 0
        counts.append(settings.voxel_count)
        files.append(path)
    assert counts == sorted(counts) and len(set(counts)) == len(counts)  # finer: more voxels
    written_at = [path.stat().st_mtime_ns for path in files]
    settings.lod = 2  # cached now: swapped, not decoded again
    assert files[0].stat().st_mtime_ns == written_at[0]
    settings.lod = 99  # clamped to the finest level in the file
    assert settings.lod == 4 and Path(bpy.path.abspath(obj.data.filepath)) == files[-1]


def test_the_byte_readout_matches_core_info(baked: Baked) -> None:
    obj = _open(baked.blend)
    info = json.loads(run_core("info", baked.asset, "--json").stdout)
    settings = obj.vbnf
    assert settings.total_bytes == info["total_bytes"] == baked.asset.stat().st_size
    assert settings.header_bytes == info["header_bytes"]
    readout = [(lv.level, lv.bytes, lv.cumulative_bytes) for lv in settings.levels]
    expected = [(lv["level"], lv["bytes"], lv["cumulative_bytes"]) for lv in info["levels"]]
    assert readout == expected
    assert readout[-1][2] == info["total_bytes"]  # streaming the finest level = the whole file


def test_cycles_renders_the_imported_volume(baked: Baked, tmp_path: Path) -> None:
    obj = _open(baked.blend)
    scene = bpy.context.scene
    assert scene is not None
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.6, -5.0, 1.5)
    camera.rotation_euler = (
        (Vector((0.6, 0.0, 0.0)) - camera.location).to_track_quat("-Z", "Y").to_euler()
    )
    scene.camera = camera
    render: Any = scene.render
    render.engine = "CYCLES"
    render.resolution_x = render.resolution_y = 48
    render.film_transparent = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    cycles: Any = scene.cycles  # type: ignore[attr-defined]
    cycles.samples, cycles.volume_biased, cycles.device = 4, True, "CPU"
    images = {}
    for level in (2, 4):
        obj.vbnf.lod = level
        render.filepath = str(tmp_path / f"level_{level}.png")
        bpy.ops.render.render(write_still=True)
        images[level] = _read_png(Path(render.filepath))
    for image in images.values():
        coverage = float((image[..., 3] > 0.2).mean())
        assert 0.05 < coverage < 0.95, coverage  # something drawn, not the whole frame
        assert image[..., :3][image[..., 3] > 0.5].std() > 0.01  # not one flat colour
    assert np.abs(images[2] - images[4]).mean() > 0.002  # the levels look different


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0


def test_a_moved_project_reopens_and_rebuilds_its_grid_cache(baked: Baked, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(baked.blend, moved / "tiny.blend")
    shutil.copy(baked.asset, moved / "tiny.vbnf")  # the cache folder is left behind
    obj = _open(moved / "tiny.blend")
    settings = obj.vbnf
    assert Path(bpy.path.abspath(settings.asset_path)) == moved / "tiny.vbnf"
    cached = Path(bpy.path.abspath(obj.data.filepath))
    assert cached.is_file() and cached.is_relative_to(moved / "vbnf_cache")
    assert obj.data.grids.load() and settings.lod_error == ""
    # Save As into a subfolder: the stored asset path follows, relative to the new file.
    (moved / "sub").mkdir()
    bpy.ops.wm.save_as_mainfile(filepath=str(moved / "sub" / "copy.blend"))
    assert settings.asset_path == "//../tiny.vbnf"
    obj = _open(moved / "sub" / "copy.blend")
    assert obj.vbnf.asset_path == "//../tiny.vbnf"
    obj.vbnf.lod = 3
    assert obj.vbnf.lod_error == ""


def test_export_writes_the_whole_asset_or_a_cut(baked: Baked, tmp_path: Path) -> None:
    obj = _open(baked.blend)
    view_layer: Any = bpy.context.view_layer
    view_layer.objects.active = obj
    whole, cut = tmp_path / "whole.vbnf", tmp_path / "cut.vbnf"
    assert bpy.ops.export_scene.vbnf(filepath=str(whole)) == {"FINISHED"}
    assert whole.read_bytes() == baked.asset.read_bytes()
    assert bpy.ops.export_scene.vbnf(filepath=str(cut), use_level=True, level=3) == {"FINISHED"}
    info = json.loads(run_core("info", cut, "--json").stdout)
    assert (info["min_level"], info["max_level"], info["missing_levels"]) == (2, 3, [])
    assert info["total_bytes"] < baked.asset.stat().st_size
    # ... and the cut imports like any asset
    assert bpy.ops.import_scene.vbnf(filepath=str(cut)) == {"FINISHED"}
    imported = bpy.context.active_object
    assert imported is not None and imported.vbnf.max_level == 3  # type: ignore[attr-defined]


def test_device_cuda_without_a_gpu_fails_before_anything_renders(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "fails.blend")
    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA device")
    _set_bake_settings(views=4, device="cuda")
    objects_before = sorted(obj.name for obj in bpy.data.objects)
    # The complete interpreter check runs before the capture: no view is rendered for a bake
    # that cannot train, and the message is the check's one line.
    with pytest.raises(RuntimeError, match=r"Bake failed: Device is CUDA, but torch \S+ in "):
        bpy.ops.vbnf.bake()
    assert sorted(obj.name for obj in bpy.data.objects) == objects_before  # scene restored
    assert not (tmp_path / "fails.vbnf").exists()
    assert not list(tmp_path.glob("fails.vbnf.bake/dataset/*/r_*"))  # nothing rendered


class _ModalHarness:
    """Drives ``VBNF_OT_bake.modal`` as Blender's event loop would, which never runs under the
    bpy module: the operator's methods are called on a stand-in ``self`` holding the job that
    ``invoke`` would have started, with stand-in TIMER and ESC events."""

    def __init__(self, extension: ModuleType, job: Any) -> None:
        operator = extension.ops_bake.VBNF_OT_bake
        self.reports: list[tuple[set[str], str]] = []
        self.me = SimpleNamespace(_job=job, _timer=None)
        self.me.report = lambda kind, text: self.reports.append((kind, text))
        self.me._finish = partial(operator._finish, self.me)
        self.me._report_outcome = partial(operator._report_outcome, self.me)
        self.me._end_progress = partial(operator._end_progress, self.me)
        self._modal = partial(operator.modal, self.me, bpy.context)
        self.status: Any = bpy.context.window_manager.vbnf_bake_status  # type: ignore[union-attr]
        # Check the interpreter now (it is remembered), so that each tick renders one view
        # instead of waiting for the check the first ticks would otherwise run.
        extension.interpreter.find_interpreter("", job.settings.device)
        job.start()
        self.status.running = True  # as invoke leaves it

    def send(self, event_type: str) -> set[str]:
        return self._modal(SimpleNamespace(type=event_type, value="PRESS"))  # type: ignore[no-any-return]

    def tick_until(self, done: Callable[[], bool], timeout_s: float = 120.0) -> set[str]:
        deadline = time.monotonic() + timeout_s
        result = {"PASS_THROUGH"}
        while not done():
            assert time.monotonic() < deadline, "the bake did not get there in time"
            result = self.send("TIMER")
            time.sleep(0.02)
        return result


class _ConfirmingContext:
    """``bpy.context``, but its window manager records the confirmation popup an operator asks
    for instead of showing it: the popup needs Blender's event loop (under the bpy module
    ``invoke_confirm`` crashes). Each question's keywords are checked against the real
    function's parameters and icons, so a misspelt keyword fails here as it would in Blender."""

    def __init__(self) -> None:
        self.questions: list[dict[str, str]] = []
        self.window_manager = SimpleNamespace(invoke_confirm=self._ask)

    def __getattr__(self, name: str) -> Any:
        return getattr(bpy.context, name)

    def _ask(self, operator: Any, event: Any, **keywords: str) -> set[str]:
        function = bpy.types.WindowManager.bl_rna.functions["invoke_confirm"]
        parameters = {parameter.identifier for parameter in function.parameters}
        assert set(keywords) <= parameters - {"operator", "event", "result"}, keywords
        icons = {item.identifier for item in function.parameters["icon"].enum_items}
        assert keywords.get("icon", "NONE") in icons
        self.questions.append(keywords)
        return {"RUNNING_MODAL"}  # what Blender returns while the popup is open


def _invoke(operator: type, context: _ConfirmingContext) -> tuple[set[str], Any]:
    """Call ``operator.invoke`` as Blender would on a button press, with a stand-in ``self``
    and event; returns the result and the stand-in, which holds what ``invoke`` stored."""
    me = SimpleNamespace(reports=[], _job=None, _plan=None)
    me.report = lambda kind, text: me.reports.append((kind, text))
    return operator.invoke(me, context, SimpleNamespace(type="LEFTMOUSE", value="PRESS")), me


def _view_files(work_dir: Path, dataset: str = "dataset") -> dict[Path, int]:
    """The rendered views' files and their modification times (a view rendered again would be
    a new file with a new time)."""
    return {path: path.stat().st_mtime_ns for path in (work_dir / dataset).glob("*/r_*")}


def _work_state(work_dir: Path) -> dict[str, Any]:
    return json.loads((work_dir / "bake.json").read_text())  # type: ignore[no-any-return]


def _cancel_during_capture(extension: ModuleType, views: int) -> list[tuple[set[str], str]]:
    """Start a bake of the open file, press Esc after ``views`` views; the operator's reports."""
    harness = _ModalHarness(extension, extension.ops_bake.make_job(bpy.context))
    for _ in range(views):
        assert harness.send("TIMER") == {"PASS_THROUGH"}
    assert harness.send("ESC") == {"RUNNING_MODAL"}
    assert harness.send("TIMER") == {"CANCELLED"}
    assert not harness.status.running
    return harness.reports


def test_esc_keeps_the_rendered_views_and_the_next_bake_resumes_them(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "esc.blend")
    _set_bake_settings(views=4, resolution=16)  # and 1 test view
    objects_before = sorted(obj.name for obj in bpy.data.objects)
    harness = _ModalHarness(extension, extension.ops_bake.make_job(bpy.context))
    assert harness.send("TIMER") == {"PASS_THROUGH"}  # one view rendered
    assert harness.status.stage == "capture" and 0.0 < harness.status.fraction < 0.3
    assert harness.send("MOUSEMOVE") == {"PASS_THROUGH"}  # the rest of Blender keeps working
    assert harness.send("TIMER") == {"PASS_THROUGH"}  # a second view
    assert harness.send("ESC") == {"RUNNING_MODAL"}
    assert harness.send("TIMER") == {"CANCELLED"}
    assert harness.reports == [
        (
            {"WARNING"},
            "Bake cancelled during the capture. Kept 2/4 views: press Bake again to resume",
        )
    ]
    assert not harness.status.running
    assert sorted(obj.name for obj in bpy.data.objects) == objects_before
    assert not (tmp_path / "esc.vbnf").exists()
    work_dir = tmp_path / "esc.vbnf.bake"
    kept = _view_files(work_dir)
    assert len(kept) == 6 and _work_state(work_dir)["views_done"] == 2  # RGBA, depth EXR, PNG each
    assert extension.work_folder.resume_line(work_dir) == "Resumable: 2/4 views"

    resumed = _ModalHarness(extension, extension.ops_bake.make_job(bpy.context))
    resumed.tick_until(lambda: resumed.status.stage == "train")
    views = _view_files(work_dir)
    assert len(views) == 15 and all(views[path] == time for path, time in kept.items())
    assert resumed.tick_until(lambda: not resumed.status.running) == {"FINISHED"}
    [(kind, text)] = resumed.reports
    # 4 views of 16 px: a poor result, said so (the "4-view 16 px bake at 4 dB").
    assert kind == {"WARNING"} and ", resumed from 2/4 views). Warning: poor result: " in text
    assert text.endswith("bake with more views, a higher resolution or more epochs"), text
    assert (tmp_path / "esc.vbnf").is_file() and not work_dir.exists()


def test_a_resumed_capture_keeps_only_views_of_the_same_plan(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    sun = scenes.add_sun()
    scene = bpy.context.scene
    capture, record = extension.capture, extension.capture_record
    settings = capture.CaptureSettings(
        train_views=2, test_views=1, resolution_px=16, samples=1, denoise=False
    )
    with capture.CaptureJob(scene, tmp_path, settings, resume=True) as job:
        job.step()  # and abandoned, as a cancelled bake leaves it
    first = _view_files(tmp_path, dataset="")
    with capture.CaptureJob(scene, tmp_path, settings, resume=True) as job:
        assert (job.views_kept, job.views_done) == (1, 1)
        job.step()
        job.step()
        assert job.finished
    assert all(_view_files(tmp_path, dataset="")[path] == time for path, time in first.items())
    (tmp_path / "transforms_train.json").unlink()
    with capture.CaptureJob(scene, tmp_path, settings, resume=True) as job:
        assert job.views_kept == 3 and job.finished  # nothing to render: a complete dataset
    assert extension.engine.dataset.load_split(tmp_path, "train").rgba.shape[0] == 2

    # Edits that leave the cameras where they were still show in the pixels.
    def kept() -> Any:
        return capture.kept_views(scene, tmp_path, settings)

    assert kept() == record.KeptViews(3)
    sun.location.z += 1.0
    assert kept() == record.KeptViews(0, "Sun's placement changed")
    sun.location.z -= 1.0
    sun.data.energy *= 2.0
    assert kept() == record.KeptViews(0, "Sun's light settings changed")
    sun.data.energy /= 2.0
    cube = bpy.data.objects["Cube"]
    cube.data.materials[0] = bpy.data.materials["Sphere emission"]
    assert kept() == record.KeptViews(0, "Cube's materials changed")
    cube.data.materials[0] = bpy.data.materials["Cube emission"]
    assert kept() == record.KeptViews(3)  # the record is of the scene, not of its history
    cube.location.x += 1.0  # other bounds, other cameras
    assert kept() == record.KeptViews(0, "the camera positions, Cube's placement changed")
    with capture.CaptureJob(scene, tmp_path, settings, resume=True) as job:
        assert job.views_kept == 0 and _view_files(tmp_path, dataset="") == {}


def test_a_changed_material_asks_before_the_bake_drops_the_kept_views(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "material.blend")
    _set_bake_settings(views=4, resolution=16)
    _cancel_during_capture(extension, views=1)
    work_dir = tmp_path / "material.vbnf.bake"
    kept = _view_files(work_dir)
    state = _work_state(work_dir)
    cube = bpy.data.objects["Cube"]
    cube.data.materials[0] = bpy.data.materials["Sphere emission"]

    context = _ConfirmingContext()
    result, me = _invoke(extension.ops_bake.VBNF_OT_bake, context)
    assert result == {"RUNNING_MODAL"} and me.reports == []
    assert context.questions == [
        {
            "title": "Kept Bake Cannot Resume",
            "message": "Baking now drops the kept 1/4 views: Cube's materials changed.",
            "confirm_text": "Bake Anew",
            "icon": "WARNING",
        }
    ]
    assert _view_files(work_dir) == kept and _work_state(work_dir) == state  # nothing dropped yet
    assert me._plan == me._job.plan()  # deciding changes nothing, so it decides the same again

    job = me._job  # "Bake Anew": execute() starts the job invoke planned
    job.start(me._plan)
    assert job.resume_note == "started over, dropping the kept 1/4 views: Cube's materials changed"
    assert job.progress.message == job.resume_note
    assert _view_files(work_dir) == {} and _work_state(work_dir)["views_done"] == 0
    job.advance()  # renders the first view again, of the scene as it is now
    assert len(_view_files(work_dir)) == 3  # one view: RGBA, depth EXR, depth PNG
    job.cancel()
    job.advance()
    job.close()
    assert job.kept == "1/4 views" and _work_state(work_dir)["views_done"] == 1


def test_a_resumed_bake_plans_its_capture_once_unless_the_scene_may_have_changed(
    extension: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "once.blend")
    _set_bake_settings(views=4, resolution=16)
    _cancel_during_capture(extension, views=1)
    work_dir = tmp_path / "once.vbnf.bake"
    kept = _view_files(work_dir)
    capture = extension.capture
    plans: list[Any] = []
    plan = capture._plan

    def counted_plan(*args: Any) -> Any:
        plans.append(args)
        return plan(*args)

    monkeypatch.setattr(capture, "_plan", counted_plan)

    def capture_plans(start: Callable[[Any], None]) -> int:
        """How often a bake started by ``start`` planned the capture, which kept the view."""
        plans.clear()
        job = extension.ops_bake.make_job(bpy.context)
        start(job)
        assert job.stage == "capture" and job.resume_note == "resumed from 1/4 views"
        job.cancel()
        job.advance()
        job.close()
        assert job.kept == "1/4 views" and _view_files(work_dir) == kept
        return len(plans)

    assert capture_plans(lambda job: job.start()) == 1  # planned in start: the plan is reused
    assert capture_plans(lambda job: job.start(job.plan(), just_planned=True)) == 1
    assert capture_plans(lambda job: job.start(job.plan())) == 2  # after a confirmation


def test_an_unexpected_error_in_the_modal_loop_releases_the_bake(
    extension: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blender does not call cancel() after modal() raises: the lock must not outlive it."""
    _tiny_scene()
    scenes.save_blend(tmp_path / "crash.blend")
    _set_bake_settings(views=4, resolution=16)
    work_dir = tmp_path / "crash.vbnf.bake"
    harness = _ModalHarness(extension, extension.ops_bake.make_job(bpy.context))
    assert (work_dir / "bake.lock").is_file()

    def broken_advance() -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(harness.me._job, "advance", broken_advance)
    with pytest.raises(RuntimeError, match="a bug"):
        harness.send("TIMER")
    assert not (work_dir / "bake.lock").exists() and not harness.status.running
    assert bpy.ops.vbnf.bake_discard.poll() or not work_dir.exists()


def test_a_second_bake_of_the_same_asset_is_refused_while_the_first_runs(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "twice.blend")
    _set_bake_settings(views=4, resolution=16)
    work_dir = tmp_path / "twice.vbnf.bake"
    first = extension.ops_bake.make_job(bpy.context)
    first.start()
    assert first.stage == "capture"
    second = extension.ops_bake.make_job(bpy.context)
    second.start()
    assert second.stage == "failed"
    assert f"another bake of this asset is running (process {os.getpid()})" in second.error
    second.close()  # not its folder: left as it is
    assert (work_dir / "bake.lock").is_file() and (work_dir / "bake.json").is_file()
    assert not bpy.ops.vbnf.bake_discard.poll()  # Discard waits for the bake too
    first.cancel()
    first.advance()
    first.close()
    assert not work_dir.exists()  # nothing rendered, nothing kept

    # A bake that died without closing leaves its lock; its process is gone, so it is taken.
    work_dir.mkdir()
    (work_dir / "bake.lock").write_text(
        json.dumps({"pid": scenes.ended_process_id(), "host": socket.gethostname()})
    )
    third = extension.ops_bake.make_job(bpy.context)
    third.start()
    assert third.stage == "capture", third.error
    third.cancel()
    third.advance()
    third.close()
    assert not work_dir.exists()


def _small_batch_job(extension: ModuleType, asset_path: Path | None = None) -> Any:
    """The Bake button's job, but with 64-ray batches: 16 training steps an epoch on the tiny
    capture, so a cancel lands inside training, not after it."""
    scene: Any = bpy.context.scene
    return extension.bake_job.BakeJob(
        scene,
        extension.bake_job.bake_settings(scene.vbnf_bake, batch_rays=64),
        asset_path or extension.ops_bake.scene_asset_path(scene),
        import_into=scene.collection,
    )


def test_the_cancel_button_keeps_the_checkpoint_and_the_next_bake_resumes_training(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "stop.blend")
    _set_bake_settings(views=4, resolution=16, epochs=20)
    harness = _ModalHarness(extension, _small_batch_job(extension))
    harness.tick_until(lambda: harness.status.epoch >= 1)  # a step trained: the trainer listens
    assert bpy.ops.vbnf.bake_cancel() == {"FINISHED"}  # the panel's Cancel button
    result = harness.tick_until(lambda: not harness.status.running, timeout_s=60)
    assert result == {"CANCELLED"}
    assert not (tmp_path / "stop.vbnf").exists()
    assert "VBNF Capture" not in bpy.data.objects  # the capture camera is gone
    work_dir = tmp_path / "stop.vbnf.bake"
    state = _work_state(work_dir)
    step, steps_per_epoch = state["checkpoint_step"], state["steps_per_epoch"]
    assert (work_dir / "run" / "checkpoint.pt").is_file() and step >= 1 and steps_per_epoch == 16
    epoch = f"epoch {math.ceil(step / steps_per_epoch)}/20"
    kept = f"4/4 views, {epoch}"
    assert harness.reports == [
        ({"WARNING"}, f"Bake cancelled during training. Kept {kept}: press Bake again to resume")
    ]
    assert extension.work_folder.resume_line(work_dir) == f"Resumable: {kept}"
    views = _view_files(work_dir)

    # Another bitwidth binds another checkpoint: a copy of the kept bake keeps its views only.
    other = tmp_path / "other.vbnf"
    shutil.copytree(work_dir, extension.work_folder.work_dir_for(other))
    _set_bake_settings(views=4, resolution=16, epochs=20, bitwidth=3)
    retrain = _small_batch_job(extension, other)
    retrain.start()
    assert retrain.resume_note == (
        f"resumed from 4/4 views, dropping the training so far ({epoch}): "
        "the training settings changed"
    )
    assert not (retrain.work_dir / "run").exists()
    assert _work_state(retrain.work_dir)["checkpoint_step"] is None
    retrain.cancel()
    retrain.advance()
    retrain.close()
    assert retrain.kept == "4/4 views"

    # Fewer epochs than asked before, but not fewer than trained: training continues.
    _set_bake_settings(views=4, resolution=16, epochs=step // steps_per_epoch + 1)
    job = _small_batch_job(extension)
    views_when_training: list[dict[Path, int]] = []

    def watch(progress: Any) -> None:
        if progress.stage == "train" and not views_when_training:
            views_when_training.append(_view_files(work_dir))
            assert "--resume" in job._training.command  # told to continue the checkpoint

    assert job.run(on_progress=watch) == tmp_path / "stop.vbnf"
    assert views_when_training == [views]  # no view rendered again
    assert job.resume_note.startswith("resumed from 4/4 views, epoch ")
    info = extension.engine.asset_info(tmp_path / "stop.vbnf")
    assert [level["level"] for level in info["levels"]] == list(LEVELS)
    assert not work_dir.exists()


def test_blender_ending_the_bake_mid_training_keeps_the_newest_checkpoint(
    extension: ModuleType, tmp_path: Path
) -> None:
    """Loading a file or closing the window ends the operator (``cancel``) without a timer
    tick to wait on: the trainer still gets to write its checkpoint, and the state names it."""
    _tiny_scene()
    scenes.save_blend(tmp_path / "ended.blend")
    _set_bake_settings(views=4, resolution=16, epochs=20)
    job = _small_batch_job(extension)
    job.release_grace_s = 120.0  # what is tested is that it waits, not how fast a busy CI is
    harness = _ModalHarness(extension, job)
    harness.tick_until(lambda: harness.status.epoch >= 1)  # a step trained: the trainer listens
    extension.ops_bake.VBNF_OT_bake.cancel(harness.me, bpy.context)
    assert not harness.status.running
    work_dir = tmp_path / "ended.vbnf.bake"
    checkpoint = torch.load(work_dir / "run" / "checkpoint.pt", weights_only=True)
    assert _work_state(work_dir)["checkpoint_step"] == checkpoint["state"]["step"] >= 1


def test_changed_capture_settings_start_over(extension: ModuleType, tmp_path: Path) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "changed.blend")
    _set_bake_settings(views=4, resolution=16)
    _cancel_during_capture(extension, views=1)
    work_dir = tmp_path / "changed.vbnf.bake"
    assert len(_view_files(work_dir)) == 3  # one view: RGBA, depth EXR, depth PNG
    _set_bake_settings(views=4, resolution=20)
    job = extension.ops_bake.make_job(bpy.context)
    job.start()
    assert job.resume_note == (
        "started over, dropping the kept 1/4 views: the capture settings changed"
    )
    assert job.progress.message == job.resume_note
    assert _view_files(work_dir) == {} and _work_state(work_dir)["views_done"] == 0
    job.cancel()
    job.advance()
    job.close()
    assert job.kept is None and not work_dir.exists()  # nothing worth keeping


class _Layout:
    """Records what a panel draws into it (labels and operator buttons)."""

    def __init__(self) -> None:
        self.drawn: list[tuple[str, str]] = []

    def row(self, **_options: Any) -> _Layout:
        return self

    def label(self, text: str = "", **_options: Any) -> None:
        self.drawn.append(("label", text))

    def operator(self, idname: str, **_options: Any) -> None:
        self.drawn.append(("operator", idname))


def test_the_panel_shows_a_kept_bake_and_discard_deletes_it(
    extension: ModuleType, tmp_path: Path
) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "discard.blend")
    _set_bake_settings(views=4, resolution=16)
    panel = extension.panels.VIEW3D_PT_vbnf_bake
    layout = _Layout()
    panel._draw_kept(layout, bpy.context.scene)
    assert layout.drawn == [] and not bpy.ops.vbnf.bake_discard.poll()
    _cancel_during_capture(extension, views=1)
    panel._draw_kept(layout, bpy.context.scene)
    assert layout.drawn == [("label", "Resumable: 1/4 views"), ("operator", "vbnf.bake_discard")]
    context = _ConfirmingContext()
    result, _ = _invoke(extension.ops_bake.VBNF_OT_bake_discard, context)
    assert result == {"RUNNING_MODAL"}
    assert context.questions == [
        {
            "title": "Discard Kept Bake",
            "message": "Delete the kept 1/4 views? The next Bake starts over.",
            "confirm_text": "Discard",
            "icon": "WARNING",
        }
    ]
    assert bpy.ops.vbnf.bake_discard() == {"FINISHED"}
    assert not (tmp_path / "discard.vbnf.bake").exists()
    assert not bpy.ops.vbnf.bake_discard.poll()


def test_the_asset_digest_is_remembered_until_the_file_is_rewritten(
    extension: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = extension.volume
    asset = tmp_path / "digest.vbnf"
    asset.write_bytes(b"first version")
    first = volume.asset_digest(asset)
    reads: list[Path] = []
    read_file = volume._read_file
    monkeypatch.setattr(volume, "_read_file", lambda path: reads.append(path) or read_file(path))
    assert volume.asset_digest(asset) == first and reads == []  # not hashed again
    extension.engine.atomic_write_bytes(asset, b"second version")
    second = volume.asset_digest(asset)
    assert second != first and reads == [asset.resolve()]
    assert volume.asset_digest(asset) == second and len(reads) == 1


def test_importing_a_missing_file_names_it(extension: ModuleType, tmp_path: Path) -> None:
    addon_extension.reset_file()
    missing = tmp_path / "missing.vbnf"
    with pytest.raises(extension.engine.AssetError, match=r"missing\.vbnf: cannot open"):
        extension.volume.import_asset(missing, bpy.context.scene.collection)
    assert len(bpy.data.objects) == 0 and len(bpy.data.volumes) == 0


def test_the_panel_and_the_status_bar_write_times_alike(extension: ModuleType) -> None:
    assert extension.panels.format_seconds is extension.bake_job.format_seconds
    assert extension.bake_job.format_seconds(59.6) == "1:00"


def test_status_line_says_what_the_bake_does(extension: ModuleType) -> None:
    progress = extension.bake_job.BakeProgress(
        "train", 0.5, "training 100 steps", epoch=3, psnr=24.26, seconds_left=75.0
    )
    line = extension.ops_bake.status_line(progress)
    assert line == "VBNF 50%: training 100 steps, epoch 3, 24.3 dB, 1:15 left (Esc to cancel)"


def test_batch_bake_reports_a_failing_file_and_bakes_the_others(
    extension: ModuleType, tmp_path: Path
) -> None:
    """Also: the button and the batch command name the asset alike (a Unicode name with a
    space), so the batch command resumes what the button kept."""
    _tiny_scene()
    good = "My Scene ä.blend"
    scenes.save_blend(tmp_path / good)
    out_dir = tmp_path / "out"
    # A bake of the file with the command's settings, interrupted after one view.
    _set_bake_settings(views=8, resolution=16, samples=1, max_level=3, output_dir=str(out_dir))
    _cancel_during_capture(extension, views=1)
    assert (out_dir / "My Scene ä.vbnf.bake").is_dir()
    addon_extension.reset_file()
    scenes.save_blend(tmp_path / "empty.blend")  # nothing to capture
    result = subprocess.run(  # relative paths: the trainer runs in another folder
        [sys.executable, str(BATCH_SCRIPT), "bake", "empty.blend", good,
         "missing.blend", "-o", "out", "--views", "8", "--resolution", "16", "--samples", "1",
         "--min-level", "2", "--max-level", "3", "--epochs", "1"],
        capture_output=True, text=True, encoding="utf-8", timeout=600, cwd=tmp_path,
        env=os.environ | {"XDG_CACHE_HOME": str(tmp_path / "cache")},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    # Before each bake, its estimate (measured once, then remembered); while it trains, epoch,
    # PSNR and time left; at its end, PSNR per level and the report beside the asset.
    assert "estimate: about " in result.stderr and "(capture " in result.stderr, result.stderr
    assert (tmp_path / "cache" / "vbnf" / "calibration.json").is_file()
    # (one step here: too few to say the time left, which test_status_line_... covers)
    assert re.search(r"train, epoch 1, \d+\.\d dB: ", result.stderr), result.stderr
    assert re.search(r" bytes, \d+ s, PSNR [\d.]+ / [\d.]+ dB at levels 2 / 3, ", result.stdout)
    assert f"report: {Path('out') / 'My Scene ä.vbnf.report.json'}" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert any(line.startswith("error: empty.blend: ") for line in errors), result.stderr
    assert any(line.startswith("error: missing.blend: ") for line in errors), result.stderr
    assert errors[-1] == "error: 2 of 3 files failed: empty.blend, missing.blend"
    assert (out_dir / "My Scene ä.vbnf").is_file() and not (out_dir / "empty.vbnf").exists()
    assert "out/My Scene ä.vbnf (" in result.stdout, result.stdout
    assert "resumed from 1/8 views)" in result.stdout, result.stdout
    assert not list(out_dir.glob("*.bake"))  # removed after success; nothing kept of empty


def test_restart_discards_what_was_kept(extension: ModuleType, tmp_path: Path) -> None:
    _tiny_scene()
    scenes.save_blend(tmp_path / "restart.blend")
    _set_bake_settings(views=4, resolution=16)
    _cancel_during_capture(extension, views=1)
    work_dir = tmp_path / "restart.vbnf.bake"
    assert _work_state(work_dir)["views_done"] == 1
    scene: Any = bpy.context.scene
    job = extension.bake_job.BakeJob(
        scene,
        extension.bake_job.bake_settings(scene.vbnf_bake),
        extension.ops_bake.scene_asset_path(scene),
        resume=False,  # what batch.py bake --restart asks for
    )
    job.start()
    assert job.resume_note == "started over, dropping the kept 1/4 views: a restart was asked for"
    assert _view_files(work_dir) == {}
    job.cancel()
    job.advance()
    job.close()
    assert not work_dir.exists()
    from vbnf_blender import batch  # the checkout's, as run from the command line

    parser = batch.build_parser()
    assert parser.parse_args(["bake", "-o", "out", "--restart"]).restart
    assert not parser.parse_args(["bake", "-o", "out"]).restart  # resuming is the default


def test_unregister_removes_everything_it_added(extension: ModuleType) -> None:
    addon_extension.disable_extension()
    try:
        assert not hasattr(bpy.types.Object, "vbnf")
        assert not hasattr(bpy.types.Scene, "vbnf_bake")
        assert not hasattr(bpy.types.WindowManager, "vbnf_bake_status")
        for idname in ("VBNF_OT_bake", "IMPORT_SCENE_OT_vbnf", "EXPORT_SCENE_OT_vbnf"):
            assert not hasattr(bpy.types, idname)
        assert not hasattr(bpy.types, "VIEW3D_PT_vbnf_bake")
        handler_names = {
            function.__name__
            for handlers in (bpy.app.handlers.save_pre, bpy.app.handlers.load_post)
            for function in handlers
        }
        assert not handler_names & {"relativize_before_save", "restore_missing_grids"}
    finally:
        addon_extension.ensure_extension()
    assert hasattr(bpy.types.Object, "vbnf")
