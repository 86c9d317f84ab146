"""Render RGB-D training views of a Blender scene with Cycles into a VBNF dataset folder.

The capture borrows the user's scene: it adds a temporary camera and compositor nodes,
overrides the render, Cycles and colour-management settings it depends on and, for a capture of
selected objects, hides the other objects from render. Everything is put back, also when a render
fails or the capture is cancelled, because users run this on scenes they are still working on.

RGBA and depth both come out of the compositor through File Output nodes: in Blender 5.0 that is
the route that writes the Depth pass (a multilayer EXR from ``render(write_still=True)`` drops
it), and it leaves ``render.filepath`` and ``render.image_settings`` untouched. Cycles' Depth pass
is planar depth along the camera's -Z axis, the convention ``core.data.dataset`` stores, so it is
written unchanged (tests/test_capture.py checks this against the mesh surface). Each view also
gets the 16-bit depth PNG nerfstudio and instant-ngp read, and the finished capture their index
files, all from ``core.data.interop``, as ``core synth`` writes them.

``CaptureJob`` renders one view per ``step()`` so a modal operator can keep Blender responsive
and cancel between views; ``capture_dataset`` drives it to the end for headless use.

Views are planned deterministically from the settings and the targets' bounds, and each view's
files are renamed into place whole, so an interrupted capture can be resumed view by view
(``resume=True``). Which rendered views a resume may keep is decided in ``capture_record.py``,
from a record of what the views depend on; ``kept_views`` asks it without rendering. A caller
that asks and then captures at once may make the plan once (``plan_capture``) for both.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from . import capture_record, compat
from .capture_record import View
from .engine import VbnfError, cameras, dataset, interop

GEOMETRY_TYPES = frozenset(
    {"MESH", "CURVE", "SURFACE", "META", "FONT", "CURVES", "POINTCLOUD", "VOLUME", "GREASEPENCIL"}
)
# Kept visible when capturing a selection, so the selected objects stay lit as in the scene.
LIGHTING_TYPES = frozenset({"LIGHT", "LIGHT_PROBE"})
SPLIT_NAMES = ("train", "test")  # the capture's views; interop.SPLIT_FILES names the files
TEMPORARY_NAME = "VBNF Capture"


class CaptureError(VbnfError):
    """The capture cannot run or did not produce its files; the message says what to fix."""


class CaptureCancelled(CaptureError):
    """The capture was stopped before its last view; no transforms files were written."""


@dataclass(frozen=True)
class CaptureSettings:
    """What to render. The defaults cost about 2 s a view on 2 CPU cores for a small scene
    (Suzanne and a cube), half of it denoising: some 4 minutes for the 110 views.

    ``resolution_px`` is the side of the square images; ``fov_deg`` the camera's field of view.
    ``hemisphere`` keeps cameras above the target's centre, for objects standing on a floor.
    """

    train_views: int = 100
    test_views: int = 10
    resolution_px: int = 256
    samples: int = 32
    denoise: bool = True
    seed: int = 0
    hemisphere: bool = False
    fov_deg: float = 40.0

    def validate(self) -> None:
        """Reject values Cycles or the dataset format cannot use, naming the setting."""
        checks = {
            "train_views": self.train_views >= 1,
            "test_views": self.test_views >= 1,
            "resolution_px": 4 <= self.resolution_px <= 8192,
            "samples": self.samples >= 1,
            "seed": 0 <= self.seed < 2**31,
            "fov_deg": 1.0 <= self.fov_deg <= 170.0,
        }
        for name, ok in checks.items():
            if not ok:
                raise CaptureError(f"capture setting {name}={getattr(self, name)} is out of range")


@dataclass(frozen=True)
class CaptureProgress:
    """Reported after each rendered view."""

    views_done: int
    total_views: int
    file_path: str  # the view just written, relative to the dataset folder, without extension

    @property
    def fraction(self) -> float:
        return self.views_done / self.total_views


@dataclass(frozen=True)
class CapturePlan:
    """The views of one capture and the record of what they depend on (``plan_capture``).

    It holds the scene's objects and describes the scene as it was planned: a capture may be
    given it only while nothing could have changed the scene since (no user interaction, no
    timer in between); otherwise it must plan again.
    """

    settings: CaptureSettings
    view_plan: cameras.ViewPlan
    targets: list[bpy.types.Object]
    views: list[View]
    record: dict[str, Any]

    def kept_views(self, out_dir: str | Path) -> capture_record.KeptViews:
        """What a capture of this plan with ``resume=True`` would keep of ``out_dir``, decided
        without changing the folder."""
        out_dir = Path(out_dir).expanduser().resolve()
        return capture_record.kept_views_of(out_dir, self.views, self.record)


class _SettingsPatch:
    """Changes bpy properties and puts the original values back.

    All originals are read before anything is changed, and restored in the order they were
    set: some properties constrain others (a look belongs to a view transform), so setting one
    can silently reset another, and restoring the constraining one first keeps both right.
    """

    def __init__(self) -> None:
        self._originals: list[tuple[Any, str, Any]] = []

    def apply(self, changes: Sequence[tuple[Any, str, Any]]) -> None:
        self._originals.extend((owner, name, getattr(owner, name)) for owner, name, _ in changes)
        for owner, name, value in changes:
            setattr(owner, name, value)

    def restore(self) -> list[str]:
        """Put every original back; returns what could not be restored instead of stopping."""
        failures = []
        for owner, name, value in self._originals:
            try:
                setattr(owner, name, value)
            except (AttributeError, ReferenceError, TypeError, ValueError) as error:
                failures.append(f"{name} ({error})")
        self._originals.clear()
        return failures


class CaptureJob:
    """One capture, rendered a view at a time: ``with CaptureJob(...) as job: job.step()``.

    Entering checks the inputs and the output folder before touching the scene, then sets the
    scene up; leaving restores it whatever happened. The transforms files are written once the
    last view is in place (on entering, when ``resume`` kept every view), so a folder holding
    them is always a complete dataset.

    ``plan`` is one :func:`plan_capture` just made of the same scene, settings and objects (see
    :class:`CapturePlan` for when it may be reused); by default entering makes it.
    """

    def __init__(
        self,
        scene: bpy.types.Scene,
        out_dir: str | Path,
        settings: CaptureSettings | None = None,
        objects: Iterable[bpy.types.Object] | None = None,
        resume: bool = False,
        plan: CapturePlan | None = None,
    ) -> None:
        self.scene = scene
        self.out_dir = Path(out_dir).expanduser().resolve()
        self.settings = settings or CaptureSettings()
        self.settings.validate()
        if plan is not None and plan.settings != self.settings:
            raise ValueError("CaptureJob was given a plan made with other settings")
        self._given_plan = plan
        self._selection = None if objects is None else list(objects)
        self._resume = resume
        self._view_layer = _render_view_layer(scene)
        self._views: list[View] = []
        self._pending: list[View] = []  # still to render, in plan order
        self.views_kept = 0  # views a resumed capture found already rendered
        self._intrinsics: dataset.Intrinsics | None = None
        self._tool_fields: interop.ToolFields | None = None
        self._patch = _SettingsPatch()
        self._camera: bpy.types.Object | None = None
        self._camera_data: bpy.types.Camera | None = None
        self._compositor: compat.CaptureCompositor | None = None
        self._staging: Path | None = None
        self._had_render_result = False

    @property
    def total_views(self) -> int:
        return self.settings.train_views + self.settings.test_views

    @property
    def views_done(self) -> int:
        return len(self._views) - len(self._pending)

    @property
    def finished(self) -> bool:
        return bool(self._views) and not self._pending

    def __enter__(self) -> CaptureJob:
        plan = self._given_plan
        self._given_plan = None  # used once: entering again must see the scene as it is then
        if plan is None:
            plan = _plan(self.scene, self._view_layer, self.settings, self._selection)
        self._staging = _prepare_output(self.out_dir)
        try:
            self._views = plan.views
            self._tool_fields = interop.ToolFields.for_plan(plan.view_plan)
            try:
                self._pending = capture_record.views_to_render(
                    self.out_dir, plan.views, plan.record, self._resume
                )
            except OSError as error:
                raise CaptureError(
                    f"cannot prepare the views ({error.strerror})", self.out_dir
                ) from error
            self.views_kept = len(self._views) - len(self._pending)
            self._set_up_scene(plan.view_plan, plan.targets)
            if self.finished:
                self._write_transforms()
        except BaseException:
            self._tear_down()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        failures = self._tear_down()
        if failures and exc is None:
            raise CaptureError("could not restore scene settings: " + ", ".join(failures))

    def step(self) -> CaptureProgress:
        """Render the next view into the dataset folder; after the last, write the transforms."""
        if self._camera is None or self._staging is None or self._tool_fields is None:
            raise RuntimeError("CaptureJob.step() called outside its 'with' block")
        if self.finished:
            raise RuntimeError("CaptureJob.step() called after the last view")
        view = self._pending[0]
        self._camera.matrix_world = Matrix(view.frame.camera_to_world.tolist())
        try:
            result = bpy.ops.render.render(scene=self.scene.name, layer=self._view_layer.name)
        except RuntimeError as error:  # how operators report errors
            raise CaptureError(f"Cycles failed on {view.frame.file_path}: {error}") from error
        if "FINISHED" not in result:
            raise CaptureError(f"Cycles did not finish rendering {view.frame.file_path}")
        _collect_outputs(self._staging, self.out_dir, view.frame, self._tool_fields.depth_png)
        self._pending.pop(0)
        if self.finished:
            self._write_transforms()
        return CaptureProgress(self.views_done, len(self._views), view.frame.file_path)

    def _set_up_scene(self, plan: cameras.ViewPlan, targets: list[bpy.types.Object]) -> None:
        assert self._staging is not None
        self._had_render_result = any(i.type == "RENDER_RESULT" for i in bpy.data.images)
        # The Render Layers node has a Depth socket only while the pass is on.
        self._patch.apply([(self._view_layer, "use_pass_z", True)])
        self._camera_data = _add_camera_data(plan)
        self._camera = _add_camera(self.scene, self._camera_data)
        self._compositor = compat.CaptureCompositor(self.scene, TEMPORARY_NAME)
        self._compositor.open(self._patch.apply)
        _add_compositor(self._compositor, self._view_layer, self._staging)
        changes = _render_overrides(self.scene, self.settings, self._camera)
        if self._selection is not None:
            changes.extend(_hide_others(self.scene, targets))
        self._patch.apply(changes)
        self._intrinsics = camera_intrinsics(self.scene, self._camera_data)

    def _tear_down(self) -> list[str]:
        """Undo the set-up, returning what failed; every part runs even if another failed.

        Settings go back first, so that nothing refers to the temporary camera and node group
        any more when they are removed.
        """
        failures = self._patch.restore()
        if self._compositor is not None:
            try:
                self._compositor.close()
            except ReferenceError as error:  # deleted by the user meanwhile
                failures.append(f"removing the capture's compositor nodes ({error})")
            self._compositor = None
        temporary: list[tuple[Any, Any]] = [
            (bpy.data.objects, self._camera),
            (bpy.data.cameras, self._camera_data),
        ]
        if not self._had_render_result:
            temporary += [
                (bpy.data.images, i) for i in bpy.data.images if i.type == "RENDER_RESULT"
            ]
        for collection, datablock in temporary:
            if datablock is None:  # set-up failed before creating it
                continue
            try:
                collection.remove(datablock)
            except ReferenceError as error:  # already gone, e.g. deleted by the user meanwhile
                failures.append(f"removing a temporary datablock ({error})")
        self._camera = self._camera_data = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        return failures

    def _write_transforms(self) -> None:
        assert self._intrinsics is not None and self._tool_fields is not None
        frames = {s: [v.frame for v in self._views if v.split == s] for s in SPLIT_NAMES}
        interop.write_dataset_index(self.out_dir, self._intrinsics, frames, self._tool_fields)


def plan_capture(
    scene: bpy.types.Scene,
    settings: CaptureSettings | None = None,
    objects: Iterable[bpy.types.Object] | None = None,
) -> CapturePlan:
    """The plan a capture of ``scene`` would make now, made without changing the scene."""
    selection = None if objects is None else list(objects)
    return _plan(scene, _render_view_layer(scene), settings or CaptureSettings(), selection)


def kept_views(
    scene: bpy.types.Scene,
    out_dir: str | Path,
    settings: CaptureSettings | None = None,
    objects: Iterable[bpy.types.Object] | None = None,
) -> capture_record.KeptViews:
    """What a capture with ``resume=True`` would keep of ``out_dir``, decided without changing
    the folder or the scene, so that a caller can ask before views are rendered again. The plan
    is made here, as the capture would make it; the verdict is the record's."""
    return plan_capture(scene, settings, objects).kept_views(out_dir)


def capture_dataset(
    scene: bpy.types.Scene,
    out_dir: str | Path,
    settings: CaptureSettings | None = None,
    objects: Iterable[bpy.types.Object] | None = None,
    progress: Callable[[CaptureProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> Path:
    """Render a whole dataset in one call (headless use); returns the dataset folder.

    Raises ``CaptureCancelled`` when ``should_cancel`` returns true before a view.
    """
    with CaptureJob(scene, out_dir, settings, objects) as job:
        while not job.finished:
            if should_cancel is not None and should_cancel():
                raise CaptureCancelled(f"capture cancelled after {job.views_done} views")
            report = job.step()
            if progress is not None:
                progress(report)
    return job.out_dir


def _plan(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    settings: CaptureSettings,
    selection: list[bpy.types.Object] | None,
) -> CapturePlan:
    """Frame the targets and place the cameras; reads the scene, changes nothing in it."""
    # Objects linked since the last update are not yet in the view layer or its depsgraph.
    view_layer.update()
    targets = _target_objects(scene, view_layer, selection)
    sphere = _bounding_sphere(view_layer, targets)
    view_plan = cameras.plan_views(
        sphere,
        train_views=settings.train_views,
        test_views=settings.test_views,
        hemisphere=settings.hemisphere,
        fov_deg=settings.fov_deg,
    )
    views = _plan_frames(view_plan)
    lights = [o for o in view_layer.objects if o.type in LIGHTING_TYPES and _renders(o, view_layer)]
    record = capture_record.plan_record(scene, asdict(settings), views, [*targets, *lights])
    return CapturePlan(settings, view_plan, targets, views, record)


def _render_view_layer(scene: bpy.types.Scene) -> bpy.types.ViewLayer:
    """The view layer a render of ``scene`` shows: the window's for the active scene."""
    if bpy.context.scene == scene and bpy.context.view_layer is not None:
        return bpy.context.view_layer
    return scene.view_layers[0]


def _renders(obj: bpy.types.Object, view_layer: bpy.types.ViewLayer) -> bool:
    """Whether a render of the view layer shows the object (collection exclusion included)."""
    in_layer = obj.name in view_layer.objects and view_layer.objects[obj.name] == obj
    return in_layer and not obj.hide_render and any(not c.hide_render for c in obj.users_collection)


def _has_geometry(obj: bpy.types.Object) -> bool:
    instances_collection = obj.instance_type == "COLLECTION" and obj.instance_collection
    return obj.type in GEOMETRY_TYPES or bool(instances_collection)


def _target_objects(
    scene: bpy.types.Scene,
    view_layer: bpy.types.ViewLayer,
    selection: list[bpy.types.Object] | None,
) -> list[bpy.types.Object]:
    """The rendered objects with geometry to frame: the selection's, or the whole scene's."""
    if selection is None:
        targets = [o for o in view_layer.objects if _has_geometry(o) and _renders(o, view_layer)]
        if not targets:
            raise CaptureError(f"scene '{scene.name}' has no rendered objects with geometry")
        return targets
    outside = [o.name for o in selection if scene.objects.get(o.name) != o]
    if outside:
        raise CaptureError(f"not in scene '{scene.name}': {', '.join(outside)}")
    targets = [o for o in selection if _has_geometry(o) and _renders(o, view_layer)]
    if not targets:
        named = ", ".join(o.name for o in selection) or "nothing selected"
        raise CaptureError(f"no selected object has geometry that renders ({named})")
    return targets


def _bounding_sphere(
    view_layer: bpy.types.ViewLayer, targets: list[bpy.types.Object]
) -> cameras.BoundingSphere:
    """Bound the evaluated geometry (modifiers, instances) of the targets in world space."""
    depsgraph: Any = view_layer.depsgraph  # the stubs say Optional; a view layer always has one
    owners = {t.name for t in targets}
    seen: set[str] = set()
    local_points: dict[str, np.ndarray] = {}  # per evaluated object, shared by its instances
    parts: list[cameras.LocalPoints] = []
    for instance in depsgraph.object_instances:
        evaluated: Any = instance.object
        owner: Any = (instance.parent if instance.is_instance else evaluated).original
        if owner.name not in owners or evaluated.type not in GEOMETRY_TYPES:
            continue
        seen.add(owner.name)
        if evaluated.name not in local_points:
            local_points[evaluated.name] = _local_points(evaluated)
        parts.append((local_points[evaluated.name], np.array(instance.matrix_world)))
    # Objects hidden in the viewport are missing from the viewport depsgraph but still render.
    for target in targets:
        if target.name not in seen and target.type in GEOMETRY_TYPES:
            parts.append((_box_corners(target), np.array(target.matrix_world)))
    try:
        return cameras.bounding_sphere(parts)
    except ValueError as error:
        raise CaptureError(f"cannot frame {', '.join(sorted(owners))}: {error}") from error


def _local_points(obj: bpy.types.Object) -> np.ndarray:
    """Mesh vertices (a tight bound) or, for other geometry, the bounding-box corners."""
    if obj.type != "MESH":
        return _box_corners(obj)
    mesh: Any = obj.data
    coordinates = np.empty(3 * len(mesh.vertices), dtype=np.float64)
    mesh.vertices.foreach_get("co", coordinates)
    return coordinates.reshape(-1, 3)


def _box_corners(obj: bpy.types.Object) -> np.ndarray:
    return np.array([tuple(corner) for corner in obj.bound_box], dtype=np.float64)


def _prepare_output(out_dir: Path) -> Path:
    """Make the folder, drop the index files of an earlier capture, return a fresh staging folder.

    Deleting the old index first means an interrupted re-capture into the same folder cannot
    pass for a complete dataset that mixes old and new images, in any tool.
    """
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in interop.INDEX_FILES:
            (out_dir / name).unlink(missing_ok=True)
        for split in SPLIT_NAMES:
            (out_dir / split).mkdir(exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".capture-", dir=out_dir))
    except OSError as error:
        raise CaptureError(f"cannot write the dataset here ({error.strerror})", out_dir) from error


def _add_camera_data(plan: cameras.ViewPlan) -> bpy.types.Camera:
    data = bpy.data.cameras.new(TEMPORARY_NAME)
    data.type = "PERSP"
    data.sensor_fit = "AUTO"
    data.lens_unit = "FOV"
    data.angle = plan.fov_rad
    data.clip_start = plan.clip_start_m
    data.clip_end = plan.clip_end_m
    return data


def _add_camera(scene: bpy.types.Scene, data: bpy.types.Camera) -> bpy.types.Object:
    camera = bpy.data.objects.new(TEMPORARY_NAME, data)
    scene.collection.objects.link(camera)
    return camera


def _add_compositor(
    compositor: compat.CaptureCompositor, view_layer: bpy.types.ViewLayer, staging: Path
) -> None:
    """Render Layers -> one File Output node for RGBA PNG, one for single-channel float EXR."""
    layers = compositor.new_node("CompositorNodeRLayers")
    layers.scene = compositor.scene
    layers.layer = view_layer.name
    outputs = {
        "Image": ("rgba", "PNG", "8", False),
        "Depth": ("depth", "OPEN_EXR", "32", True),
    }
    for socket, (name, file_format, depth, single_channel) in outputs.items():
        node = compositor.new_node("CompositorNodeOutputFile")
        compat.configure_file_output(node, staging / name, name, file_format, depth, single_channel)
        compositor.tree.links.new(layers.outputs[socket], node.inputs[0])


def _render_overrides(
    scene: bpy.types.Scene,
    settings: CaptureSettings,
    camera: bpy.types.Object,
) -> list[tuple[Any, str, Any]]:
    """Every setting the dataset's correctness or speed depends on, with the value it needs
    (the compositor tree is set by :class:`compat.CaptureCompositor`)."""
    render = scene.render
    cycles: Any = scene.cycles  # type: ignore[attr-defined]  # registered by the Cycles add-on
    view = scene.view_settings
    return compat.existing_settings(
        [
            (scene, "camera", camera),
            (render, "engine", "CYCLES"),
            (render, "resolution_x", settings.resolution_px),
            (render, "resolution_y", settings.resolution_px),
            (render, "resolution_percentage", 100),
            (render, "pixel_aspect_x", 1.0),
            (render, "pixel_aspect_y", 1.0),
            (render, "use_border", False),
            (render, "use_multiview", False),
            (render, "use_motion_blur", False),
            (render, "film_transparent", True),
            (render, "use_compositing", True),
            (render, "use_sequencer", False),
            (
                render,
                "use_persistent_data",
                True,
            ),  # keep the BVH between views: only the camera moves
            (cycles, "device", "CPU"),
            (cycles, "samples", settings.samples),
            (cycles, "time_limit", 0.0),
            (cycles, "use_denoising", settings.denoise),
            (cycles, "denoiser", "OPENIMAGEDENOISE"),
            (cycles, "seed", settings.seed),
            (cycles, "use_animated_seed", False),
            (scene.display_settings, "display_device", "sRGB"),
            (view, "view_transform", "Standard"),
            (view, "look", "None"),
            (view, "exposure", 0.0),
            (view, "gamma", 1.0),
            (view, "use_curve_mapping", False),
            (view, "use_white_balance", False),
        ]
    )


def _hide_others(
    scene: bpy.types.Scene, targets: list[bpy.types.Object]
) -> list[tuple[Any, str, Any]]:
    keep = {t.name for t in targets}
    return [
        (obj, "hide_render", True)
        for obj in scene.objects
        if obj.name not in keep and obj.type not in LIGHTING_TYPES and not obj.hide_render
    ]


def camera_intrinsics(scene: bpy.types.Scene, camera: Any) -> dataset.Intrinsics:
    """Intrinsics of a perspective camera (``bpy.types.Camera``) at the scene's output size."""
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return cameras.blender_intrinsics(
        resolution_x_px=round(render.resolution_x * scale),
        resolution_y_px=round(render.resolution_y * scale),
        lens_mm=camera.lens,
        sensor_width_mm=camera.sensor_width,
        sensor_height_mm=camera.sensor_height,
        sensor_fit=camera.sensor_fit,
        shift_x=camera.shift_x,
        shift_y=camera.shift_y,
        pixel_aspect_x=render.pixel_aspect_x,
        pixel_aspect_y=render.pixel_aspect_y,
    )


def _plan_frames(plan: cameras.ViewPlan) -> list[View]:
    """Name each view ``<split>/r_<index>`` with ``<split>/r_<index>_depth.exr`` beside it."""
    views = []
    for split, poses in zip(SPLIT_NAMES, (plan.train_poses, plan.test_poses), strict=True):
        digits = max(3, len(str(len(poses) - 1)))
        for index, pose in enumerate(poses):
            stem = f"{split}/r_{index:0{digits}d}"
            views.append(View(split, dataset.FrameRecord(stem, f"{stem}_depth.exr", pose)))
    return views


def _collect_outputs(
    staging: Path, out_dir: Path, frame: dataset.FrameRecord, depth_png: interop.DepthPng
) -> None:
    """Move the File Output nodes' files to their dataset names, then write the 16-bit depth
    PNG the other tools read from the EXR (last, so a view with all its files is whole).

    The nodes compose their own file names (and append frame numbers in some modes); looking
    for the single file each wrote into its own empty folder does not depend on that scheme.
    """
    rgba, depth, _ = capture_record.view_files(out_dir, frame)
    destinations = {"rgba": rgba, "depth": depth}
    for name, destination in destinations.items():
        written = sorted((staging / name).glob("*"))
        if len(written) != 1:
            raise CaptureError(f"Blender wrote {len(written)} {name} files for {frame.file_path}")
        written[0].replace(destination)
    interop.write_view_depth(out_dir, frame, dataset.read_depth_exr(depth), depth_png)
