"""Small Blender scenes built in code, and a dump of scene state, for tests that use real bpy.

Built with bmesh and the data API rather than ``bpy.ops`` primitives, so they need no window,
selection or active object and behave the same under the bpy module and ``blender -b``: with
the extension's own builders (``vbnf_blender.scenes``, imported from the checkout).
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import bpy

ADDON_DIR = Path(__file__).resolve().parents[1] / "addon"
if str(ADDON_DIR) not in sys.path:
    sys.path.insert(0, str(ADDON_DIR))

from vbnf_blender import scenes as extension_scenes  # noqa: E402

# bpy.data collections whose size a capture must not change.
DATA_COLLECTIONS = (
    "cameras",
    "collections",
    "images",
    "lights",
    "materials",
    "meshes",
    "node_groups",
    "objects",
    "scenes",
    "worlds",
)


def reset_blender() -> None:
    """Empty factory state: bpy is one process-wide module, so each test starts from this."""
    bpy.ops.wm.read_factory_settings(use_empty=True)


def add_mesh_object(
    name: str,
    build: str,
    location: tuple[float, float, float] = (0.0, 0.0, 0.0),
    subdivisions: int = 0,
    **build_args: Any,
) -> bpy.types.Object:
    """Object from a bmesh primitive (``build`` names a ``bmesh.ops.create_*`` function) in
    the current scene.

    ``subdivisions`` adds a Subdivision Surface modifier, so tests exercise evaluated geometry.
    """
    obj = extension_scenes.add_mesh(bpy.context.scene, name, build, location, **build_args)
    if subdivisions:
        modifier = obj.modifiers.new("Subdivision", "SUBSURF")
        modifier.levels = modifier.render_levels = subdivisions  # type: ignore[attr-defined]
    return obj


def add_suzanne(
    name: str = "Suzanne",
    location: tuple[float, float, float] = (0.0, 0.0, 0.0),
    subdivisions: int = 2,
) -> bpy.types.Object:
    return add_mesh_object(name, "monkey", location, subdivisions)


def add_cube(
    name: str = "Cube",
    location: tuple[float, float, float] = (0.0, 0.0, 0.0),
    size_m: float = 1.0,
) -> bpy.types.Object:
    return add_mesh_object(name, "cube", location, size=size_m)


def add_uv_sphere(
    name: str = "Sphere",
    location: tuple[float, float, float] = (0.0, 0.0, 0.0),
    radius_m: float = 1.0,
) -> bpy.types.Object:
    return add_mesh_object(
        name, "uvsphere", location, u_segments=64, v_segments=32, radius=radius_m
    )


def add_sun(name: str = "Sun", strength: float = 3.0) -> bpy.types.Object:
    light = bpy.data.lights.new(name, "SUN")
    light.energy = strength  # type: ignore[attr-defined]
    obj = bpy.data.objects.new(name, light)
    obj.rotation_euler = (0.6, 0.2, 0.8)
    bpy.context.scene.collection.objects.link(obj)
    return obj


def set_emission(obj: bpy.types.Object, rgb: tuple[float, float, float]) -> None:
    """Give the object a flat emissive colour (a material named ``<object> emission``): its
    pixels then do not depend on lighting."""
    emission = {"Emission Color": (*rgb, 1.0), "Emission Strength": 1.0}
    material = extension_scenes.principled(f"{obj.name} emission", (0.0, 0.0, 0.0), emission)
    extension_scenes.assign(obj, material)


def ended_process_id() -> int:
    """The id of a process that has ended (a lock it held is stale)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def suzanne_and_cube_scene() -> bpy.types.Scene:
    """Subdivided Suzanne beside a cube, lit by a sun: the standard small capture target."""
    reset_blender()
    add_suzanne(location=(0.0, 0.0, 0.0))
    add_cube(location=(2.0, 0.5, -0.4), size_m=1.2)
    add_sun()
    return bpy.context.scene


def save_blend(path: Path) -> None:
    bpy.ops.wm.save_as_mainfile(filepath=str(path))


def scene_state(scene: bpy.types.Scene) -> dict[str, Any]:
    """Everything a capture might change, as plain values, for before/after comparison.

    Walks every readable property of the scene's render, Cycles, colour-management, view-layer
    and compositing structs generically, so a setting the capture forgets to restore shows up
    even if nobody thought of listing it here.
    """
    structs: dict[str, Any] = {
        "scene": scene,
        "render": scene.render,
        "image_settings": scene.render.image_settings,
        "cycles": scene.cycles,  # type: ignore[attr-defined]
        "view_settings": scene.view_settings,
        "display_settings": scene.display_settings,
    }
    for layer in scene.view_layers:
        structs[f"view_layer {layer.name}"] = layer
        structs[f"view_layer {layer.name} cycles"] = layer.cycles  # type: ignore[attr-defined]
    state = {name: _rna_values(struct) for name, struct in structs.items()}
    state["objects"] = {
        obj.name: (obj.hide_render, obj.hide_viewport, _plain(obj.matrix_basis))
        for obj in scene.objects
    }
    state["data"] = {
        name: sorted(i.name for i in getattr(bpy.data, name)) for name in DATA_COLLECTIONS
    }
    return state


def _rna_values(struct: Any) -> dict[str, Any]:
    values = {}
    for prop in struct.bl_rna.properties:
        if prop.identifier == "rna_type" or prop.type == "COLLECTION":
            continue
        with warnings.catch_warnings():  # deprecated properties still count while they exist
            warnings.simplefilter("ignore", DeprecationWarning)
            value = getattr(struct, prop.identifier)
        if prop.type == "POINTER":
            value = getattr(value, "name", None) if isinstance(value, bpy.types.ID) else None
        values[prop.identifier] = _plain(value)
    return values


def _plain(value: Any) -> Any:
    """Arrays, vectors and matrices as nested tuples, so dumps compare with ``==``."""
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, set | frozenset):  # enum flags
        return tuple(sorted(value))
    return tuple(_plain(item) for item in value)  # bpy arrays, mathutils vectors and matrices
