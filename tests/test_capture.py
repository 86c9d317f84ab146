"""The Cycles capture: camera math, depth and pose conventions, scene restoration, batch CLI.

Renders are tiny (24-64 px, a few samples, few views) so the file runs in seconds; what they
check (where a pixel's ray goes, what its depth means) does not depend on image size.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
BATCH_SCRIPT = REPO_DIR / "addon" / "vbnf_blender" / "batch.py"
for _path in (REPO_DIR, REPO_DIR / "addon"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import blender_scenes as scenes  # noqa: E402
import bpy  # noqa: E402
from mathutils import Matrix, Vector  # noqa: E402
from mathutils.bvhtree import BVHTree  # noqa: E402
from vbnf_blender import capture, compat  # noqa: E402

from core.data import cameras, dataset, interop  # noqa: E402

pytestmark = pytest.mark.lts  # also run with the bpy 4.2 and 4.5 wheels (make test-lts)

TINY = capture.CaptureSettings(
    train_views=4, test_views=1, resolution_px=32, samples=2, denoise=False
)


@pytest.fixture(autouse=True)
def _fresh_blender() -> None:
    scenes.reset_blender()


def _project(points_m: np.ndarray, pose: np.ndarray, intrinsics: dataset.Intrinsics) -> np.ndarray:
    """World points -> continuous pixel coordinates (column, row); pixel i spans [i, i + 1)."""
    camera = (points_m - pose[:3, 3]) @ pose[:3, :3]  # world -> camera: R^T (p - t)
    forward = -camera[:, 2]
    columns = intrinsics.cx + intrinsics.fx * camera[:, 0] / forward
    rows = intrinsics.cy - intrinsics.fy * camera[:, 1] / forward
    return np.stack([columns, rows], axis=-1)


# --- camera math (no rendering) -------------------------------------------------------------


@pytest.mark.parametrize("hemisphere", [False, True])
def test_fibonacci_directions_cover_the_sphere_evenly(hemisphere: bool) -> None:
    directions = cameras.fibonacci_directions(200, hemisphere=hemisphere)
    assert np.allclose(np.linalg.norm(directions, axis=1), 1.0)
    if hemisphere:
        assert directions[:, 2].min() > 0.0
        assert abs(directions[:, 2].mean() - 0.5) < 0.01  # uniform in z <=> uniform in area
    else:
        assert np.linalg.norm(directions.mean(axis=0)) < 0.01


def test_test_views_fall_between_training_views() -> None:
    train = cameras.fibonacci_directions(30, hemisphere=True)
    test = cameras.interleaved_directions(train, 8, hemisphere=True)
    cosines = np.clip(test @ train.T, -1.0, 1.0)
    closest_deg = np.degrees(np.arccos(cosines.max(axis=1)))
    train_spacing_deg = np.degrees(np.arccos(np.sort(train @ train.T, axis=1)[:, -2])).mean()
    assert closest_deg.min() > 0.25 * train_spacing_deg


def test_look_at_points_minus_z_at_the_target_with_z_up() -> None:
    eye, target = np.array([3.0, -4.0, 2.0]), np.array([0.5, 0.2, -0.1])
    pose = cameras.look_at(eye, target)
    rotation = pose[:3, :3]
    assert np.allclose(rotation.T @ rotation, np.eye(3)) and np.isclose(np.linalg.det(rotation), 1)
    forward = (target - eye) / np.linalg.norm(target - eye)
    assert np.allclose(-rotation[:, 2], forward)
    assert rotation[2, 0] == pytest.approx(0.0)  # no roll: camera +X stays horizontal
    assert rotation[2, 1] > 0.0  # camera +Y points up
    straight_down = cameras.look_at(np.array([0.0, 0.0, 5.0]), np.zeros(3))
    assert np.all(np.isfinite(straight_down))


def test_planned_views_frame_the_bounding_sphere() -> None:
    sphere = cameras.BoundingSphere(np.array([1.0, 2.0, 3.0]), 2.0)
    plan = cameras.plan_views(sphere, train_views=12, test_views=3, hemisphere=False, fov_deg=40)
    for pose in np.concatenate([plan.train_poses, plan.test_poses]):
        distance = np.linalg.norm(pose[:3, 3] - sphere.center_m)
        assert distance == pytest.approx(plan.distance_m)
        half_angle = math.asin(sphere.radius_m / distance)  # silhouette cone of the sphere
        image_fraction = math.tan(half_angle) / math.tan(0.5 * plan.fov_rad)
        assert image_fraction == pytest.approx(cameras.FRAME_FILL)
    assert plan.clip_start_m < plan.distance_m - sphere.radius_m
    assert plan.clip_end_m > plan.distance_m + sphere.radius_m


@pytest.mark.blender
@pytest.mark.parametrize(
    ("sensor_fit", "resolution", "pixel_aspect", "shift"),
    [
        ("AUTO", (96, 64), (1.0, 1.0), (0.0, 0.0)),
        ("AUTO", (64, 96), (1.0, 1.0), (0.1, -0.2)),
        ("HORIZONTAL", (64, 96), (2.0, 1.0), (-0.15, 0.05)),
        ("VERTICAL", (96, 64), (1.0, 1.5), (0.2, 0.1)),
    ],
)
def test_intrinsics_match_blenders_own_projection(
    sensor_fit: str,
    resolution: tuple[int, int],
    pixel_aspect: tuple[float, float],
    shift: tuple[float, float],
) -> None:
    from bpy_extras.object_utils import world_to_camera_view

    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = pixel_aspect
    data = bpy.data.cameras.new("camera")
    data.sensor_fit, data.sensor_width, data.sensor_height = sensor_fit, 36.0, 20.0
    data.lens, data.shift_x, data.shift_y = 42.0, *shift
    camera = bpy.data.objects.new("camera", data)
    scene.collection.objects.link(camera)
    pose = cameras.look_at(np.array([2.0, -6.0, 1.5]), np.array([0.2, 0.3, 0.1]))
    camera.matrix_world = Matrix(pose.tolist())
    intrinsics = capture.camera_intrinsics(scene, data)

    points = np.random.default_rng(0).uniform(-1.0, 1.0, size=(20, 3))
    pixels = _project(points, pose, intrinsics)
    for point, (column, row) in zip(points, pixels, strict=True):
        expected = world_to_camera_view(scene, camera, Vector(point))  # (0, 0) = bottom left
        assert column / resolution[0] == pytest.approx(expected.x, abs=1e-5)
        assert 1.0 - row / resolution[1] == pytest.approx(expected.y, abs=1e-5)


# --- rendered conventions -------------------------------------------------------------------


@pytest.mark.blender
def test_planar_depth_unprojects_onto_the_mesh_surface(tmp_path: Path) -> None:
    suzanne = scenes.add_suzanne(location=(0.3, -0.2, 0.5), subdivisions=2)
    scenes.add_sun()
    settings = capture.CaptureSettings(
        train_views=4, test_views=2, resolution_px=48, samples=4, denoise=False
    )
    capture.capture_dataset(bpy.context.scene, tmp_path, settings)

    depsgraph = bpy.context.evaluated_depsgraph_get()
    surface = BVHTree.FromObject(suzanne.evaluated_get(depsgraph), depsgraph)  # local space
    to_local = np.array(suzanne.matrix_world.inverted())
    radius_m = 0.5 * max(suzanne.dimensions)
    planar_m, radial_m = [], []
    for split in ("train", "test"):
        views = dataset.load_split(tmp_path, split)
        alpha = views.rgba[..., 3]
        assert np.all(views.depth[alpha == 1.0] > 0) and np.all(views.depth[alpha == 0.0] == 0)
        border = np.concatenate([alpha[:, 0], alpha[:, -1], alpha[:, :, 0], alpha[:, :, -1]])
        assert border.max() == 0.0  # the target is framed without cropping
        for pose, depth in zip(views.camera_to_world, views.depth, strict=True):
            origins, directions = dataset.camera_rays(pose, views.intrinsics)
            hit = depth.reshape(-1) > 0
            t = depth.reshape(-1)[hit, None]
            unit = directions[hit] / np.linalg.norm(directions[hit], axis=1, keepdims=True)
            for sink, points in ((planar_m, directions[hit] * t), (radial_m, unit * t)):
                world = origins[hit] + points
                local = world @ to_local[:3, :3].T + to_local[:3, 3]
                sink.extend(surface.find_nearest(Vector(p))[3] for p in local)
    planar = np.array(planar_m) / radius_m
    radial = np.array(radial_m) / radius_m
    assert len(planar) > 1000
    assert np.median(planar) < 2e-4 and np.percentile(planar, 95) < 2e-3
    assert np.median(radial) > 10 * np.median(planar)  # the written depth is planar, not radial


def _silhouette_centroid(corners_px: np.ndarray) -> np.ndarray:
    """Area centroid of the convex hull of projected points: a convex body's exact silhouette."""
    order = corners_px[np.lexsort((corners_px[:, 1], corners_px[:, 0]))]
    hull: list[np.ndarray] = []
    for sweep in (order, order[::-1]):  # Andrew's monotone chain: lower, then upper half
        start = len(hull)
        for point in sweep:
            while len(hull) - start >= 2 and np.cross(hull[-1] - hull[-2], point - hull[-2]) <= 0:
                hull.pop()
            hull.append(point)
        hull.pop()
    polygon = np.array(hull)
    following = np.roll(polygon, -1, axis=0)
    cross = polygon[:, 0] * following[:, 1] - following[:, 0] * polygon[:, 1]
    return ((polygon + following) * cross[:, None]).sum(axis=0) / (3.0 * cross.sum())


@pytest.mark.blender
def test_a_known_point_lands_on_the_predicted_pixel(tmp_path: Path) -> None:
    """Two emissive cubes (red, green) appear exactly where the transforms say they are.

    The silhouette of a cube is the hull of its projected corners, so its anti-aliased pixel
    centroid must match that hull's centroid to a small fraction of a pixel; a flipped axis, a
    half-pixel offset or a wrong focal length would all move it by more.
    """
    half_size_m = 0.15
    centers = {0: np.array([0.9, 0.4, 0.3]), 1: np.array([-0.7, -0.5, -0.2])}  # by channel
    for channel, center in centers.items():
        cube = scenes.add_cube(f"cube {channel}", location=tuple(center), size_m=2 * half_size_m)
        scenes.set_emission(cube, (1.0, 0.0, 0.0) if channel == 0 else (0.0, 1.0, 0.0))
    settings = capture.CaptureSettings(
        train_views=5, test_views=1, resolution_px=64, samples=16, denoise=False
    )
    capture.capture_dataset(bpy.context.scene, tmp_path, settings)

    views = dataset.load_split(tmp_path, "train")
    columns, rows = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    offsets = half_size_m * np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
    checked = 0
    for rgba, pose in zip(views.rgba, views.camera_to_world, strict=True):
        corners = {
            c: _project(center + offsets, pose, views.intrinsics) for c, center in centers.items()
        }
        if np.linalg.norm(corners[0].mean(axis=0) - corners[1].mean(axis=0)) < 16:
            continue  # one cube may hide the other
        for channel, corners_px in corners.items():
            weight = rgba[..., 3] * (rgba[..., channel] > rgba[..., 1 - channel])
            centroid = np.array([(weight * columns).sum(), (weight * rows).sum()]) / weight.sum()
            expected = _silhouette_centroid(corners_px)
            assert np.linalg.norm(centroid - expected) < 0.1, (channel, centroid, expected)
        checked += 1
    assert checked >= 3


# --- the user's scene is left as it was -----------------------------------------------------


def _customised_scene(user_outputs: Path | None = None) -> bpy.types.Scene:
    """A scene whose settings all differ from what the capture needs, with its own camera and
    compositor; with ``user_outputs``, the compositor writes every render there."""
    scene = scenes.suzanne_and_cube_scene()
    scenes.add_cube("Hidden", location=(0.0, 3.0, 0.0)).hide_render = True
    camera = bpy.data.objects.new("User camera", bpy.data.cameras.new("User camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    _user_compositor(scene, user_outputs)
    render, view = scene.render, scene.view_settings
    render.engine = "BLENDER_WORKBENCH"  # (EEVEE is BLENDER_EEVEE_NEXT on 4.2 and 4.5)
    render.resolution_x, render.resolution_y, render.resolution_percentage = 640, 360, 50
    render.pixel_aspect_x = 2.0
    render.film_transparent = False
    render.use_border = True
    render.image_settings.file_format = "OPEN_EXR"
    render.image_settings.color_depth = "32"
    view.view_transform, view.look = "AgX", "AgX - Punchy"
    view.exposure, view.gamma = 0.5, 1.2
    scene.cycles.samples, scene.cycles.seed, scene.cycles.use_denoising = 128, 5, False
    scene.frame_current = 7
    return scene


def _user_compositor(scene: bpy.types.Scene, outputs: Path | None) -> None:
    """The user's own compositor: 5.0's node group, or 4.x's scene tree (the two APIs
    ``compat.CaptureCompositor`` bridges), with a File Output node into ``outputs``."""
    if compat.HAS_COMPOSITING_NODE_GROUP:
        tree: Any = bpy.data.node_groups.new("User comp", "CompositorNodeTree")
        scene.compositing_node_group = tree  # type: ignore[attr-defined]
    else:
        scene.use_nodes = True  # type: ignore[attr-defined]
        tree = scene.node_tree  # type: ignore[attr-defined]
    if outputs is None:
        return
    layers = tree.nodes.new("CompositorNodeRLayers")  # a File Output writes only from these
    layers.scene = scene
    output = tree.nodes.new("CompositorNodeOutputFile")
    output.name = "User output"
    compat.configure_file_output(output, outputs, "user", "PNG", "8", single_channel=False)
    tree.links.new(layers.outputs["Image"], output.inputs[0])


def _compositor_nodes(scene: bpy.types.Scene) -> list[tuple[str, bool]]:
    """The user's compositor nodes, named, and whether each is muted."""
    tree: Any = (
        scene.compositing_node_group  # type: ignore[attr-defined]
        if compat.HAS_COMPOSITING_NODE_GROUP
        else scene.node_tree  # type: ignore[attr-defined]
    )
    return sorted((node.name, node.mute) for node in tree.nodes)


def _fail_on_second_view(monkeypatch: pytest.MonkeyPatch) -> None:
    real = capture._collect_outputs
    calls = []

    def failing(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        real(*args)

    monkeypatch.setattr(capture, "_collect_outputs", failing)


def _run_to_end(scene: bpy.types.Scene, out_dir: Path) -> None:
    capture.capture_dataset(scene, out_dir, TINY, objects=[scene.objects["Suzanne"]])


def _run_with_failure(scene: bpy.types.Scene, out_dir: Path) -> None:
    with pytest.raises(OSError, match="injected"):
        capture.capture_dataset(scene, out_dir, TINY, objects=[scene.objects["Suzanne"]])


def _run_cancelled(scene: bpy.types.Scene, out_dir: Path) -> None:
    cancel_after_one = iter([False, True]).__next__
    with pytest.raises(capture.CaptureCancelled):
        capture.capture_dataset(scene, out_dir, TINY, should_cancel=cancel_after_one)


def _run_abandoned_job(scene: bpy.types.Scene, out_dir: Path) -> None:
    """A modal operator's cancel: leave the ``with`` block between views."""
    with capture.CaptureJob(scene, out_dir, TINY) as job:
        assert job.step().views_done == 1


@pytest.mark.blender
@pytest.mark.parametrize(
    ("run", "completes"),
    [
        (_run_to_end, True),
        (_run_with_failure, False),
        (_run_cancelled, False),
        (_run_abandoned_job, False),
    ],
    ids=["complete", "failure", "cancelled", "abandoned"],
)
def test_scene_is_restored(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run: Callable[[bpy.types.Scene, Path], None],
    completes: bool,
) -> None:
    user_outputs = tmp_path.parent / f"{tmp_path.name}-user"
    scene = _customised_scene(user_outputs)
    if run is _run_with_failure:
        _fail_on_second_view(monkeypatch)
    before = scenes.scene_state(scene)
    nodes_before = _compositor_nodes(scene)
    assert ("User output", False) in nodes_before
    run(scene, tmp_path)
    after = scenes.scene_state(scene)
    # 5.0 counts one more user of the scene for the user's Render Layers node each time its
    # group becomes the compositor again; bpy.data.user_map() shows no new referrer.
    for state in (before, after):
        state["scene"].pop("users")
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed
    # The user's compositor did not run during the capture, and is as it was.
    assert not user_outputs.exists()
    assert _compositor_nodes(scene) == nodes_before
    assert (tmp_path / "transforms_train.json").exists() == completes
    assert (tmp_path / "transforms_test.json").exists() == completes
    assert not list(tmp_path.glob(".capture-*"))


@pytest.mark.blender
def test_unwritable_output_fails_clearly_without_touching_the_scene(tmp_path: Path) -> None:
    scene = _customised_scene()
    before = scenes.scene_state(scene)
    blocker = tmp_path / "a file"
    blocker.write_text("")
    with pytest.raises(capture.CaptureError, match="cannot write the dataset here"):
        capture.capture_dataset(scene, blocker / "dataset", TINY)
    assert scenes.scene_state(scene) == before


@pytest.mark.blender
def test_selection_without_geometry_is_rejected_by_name() -> None:
    scene = _customised_scene()
    with pytest.raises(capture.CaptureError, match=r"no selected object has geometry.*Sun"):
        capture.capture_dataset(scene, "/unused", TINY, objects=[scene.objects["Sun"]])


# --- the batch script -----------------------------------------------------------------------


@pytest.fixture
def saved_scene(tmp_path: Path) -> Path:
    scenes.suzanne_and_cube_scene()
    path = tmp_path / "scene.blend"
    scenes.save_blend(path)
    return path


def _batch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BATCH_SCRIPT), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.blender
@pytest.mark.parametrize("blender_style", [False, True], ids=["python", "after-dashes"])
def test_batch_capture_writes_a_loadable_dataset(
    tmp_path: Path, saved_scene: Path, blender_style: bool
) -> None:
    out_dir = tmp_path / "dataset"
    tiny = ["--views", "3", "--test-views", "1", "--resolution", "24", "--samples", "2"]
    prefix = ["--"] if blender_style else []  # how arguments arrive under blender -b --python
    result = _batch(*prefix, "capture", saved_scene, "-o", out_dir, *tiny, "--selection", "Cube")
    assert result.returncode == 0, result.stderr
    assert "3/4" in result.stderr and "dataset written to" in result.stdout
    assert len(dataset.load_split(out_dir, "train")) == 3
    assert len(dataset.load_split(out_dir, "test")) == 1
    # What nerfstudio and instant-ngp read (tests/test_interop.py checks it in detail).
    assert all((out_dir / name).is_file() for name in interop.INDEX_FILES)
    assert dataset.load_split(out_dir, "val").names == dataset.load_split(out_dir, "test").names
    split_file = json.loads((out_dir / "transforms_train.json").read_text())
    step_m = split_file["integer_depth_scale"]
    for frame in split_file["frames"]:
        exr_m = dataset.read_depth_exr(out_dir / frame["depth_file_path"])
        png_m = dataset.read_depth_png(out_dir / frame["depth_path"], step_m)
        assert (exr_m > 0).any() and np.array_equal(exr_m > 0, png_m > 0)
        assert np.abs(exr_m - png_m).max() <= 0.5 * step_m + 1e-6


@pytest.mark.blender
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.blend"], "no such .blend file"),
        (["{scene}", "--selection"], "--selection needs at least one object name"),
        (["{scene}", "--selection", "Nope"], "no object named Nope"),
        (["{scene}", "--selection", "Sun"], "no selected object has geometry"),
        (["{scene}", "--views", "0"], "train_views=0 is out of range"),
    ],
    ids=["missing-blend", "empty-selection", "unknown-object", "no-geometry", "zero-views"],
)
def test_batch_bad_input_exits_1_with_one_line(
    tmp_path: Path, saved_scene: Path, arguments: list[str], message: str
) -> None:
    filled = [a.format(scene=saved_scene) for a in arguments]
    result = _batch("capture", *filled, "-o", tmp_path / "dataset")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0], errors
    assert not (tmp_path / "dataset" / "transforms_train.json").exists()
