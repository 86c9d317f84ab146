"""Procedural scenes built in code: the evaluation suite and the demo, no .blend files needed.

Each suite scene stresses what a compressed radiance field finds hard, as the paper's RTMV
scenes do: ``textures`` (fine procedural patterns, high-frequency colour the features must
hold), ``glossy`` (metal and varnish under a studio HDRI: view-dependent colour the MLP must
produce from the view encoding), ``thin`` (a fence, a wire frame and leaves: structures a few
pixels wide that coarse octree levels cannot place). ``build_demo_scene`` is small and bright
and renders in seconds.

Every builder gets a new, empty scene (so building never touches the user's scenes), adds its
lights, world and objects, and returns the objects a capture should frame. Transparent film and
all render settings are the capture's business. Geometry comes from ``bmesh`` and the data API,
not ``bpy.ops``, so it builds the same under the bpy module, ``blender -b`` and the UI.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy

Colour = tuple[float, float, float]
SceneBuilder = Callable[[bpy.types.Scene], list[bpy.types.Object]]
HDRI_NAME = "studio.exr"  # ships with Blender in datafiles/studiolights/world


@dataclass(frozen=True)
class BuiltScene:
    scene: bpy.types.Scene
    objects: list[bpy.types.Object]  # the capture targets (lights excluded)


# --- geometry, materials, lights -----------------------------------------------------------


def add_mesh(
    scene: bpy.types.Scene,
    name: str,
    build: str,
    location: Sequence[float] = (0.0, 0.0, 0.0),
    rotation: Sequence[float] = (0.0, 0.0, 0.0),
    smooth: bool = False,
    **build_args: Any,
) -> bpy.types.Object:
    """An object from ``bmesh.ops.create_<build>`` linked into ``scene``."""
    import bmesh  # importable only once bpy is

    mesh = bpy.data.meshes.new(name)
    bm = bmesh.new()
    getattr(bmesh.ops, f"create_{build}")(bm, **build_args)
    bm.to_mesh(mesh)
    bm.free()
    if smooth:
        mesh.shade_smooth()
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    obj.rotation_euler = rotation
    scene.collection.objects.link(obj)
    return obj


def add_rod(
    scene: bpy.types.Scene,
    name: str,
    start: Sequence[float],
    end: Sequence[float],
    radius_m: float,
) -> bpy.types.Object:
    """A thin 8-sided cylinder from ``start`` to ``end``."""
    from mathutils import Vector

    axis = Vector(end) - Vector(start)
    rod = add_mesh(
        scene,
        name,
        "cone",
        location=[(a + b) / 2 for a, b in zip(start, end, strict=True)],
        cap_ends=True,
        segments=8,
        radius1=radius_m,
        radius2=radius_m,
        depth=axis.length,
    )
    rod.rotation_euler = axis.to_track_quat("Z", "Y").to_euler()
    return rod


def principled(
    name: str,
    base: Colour = (0.8, 0.8, 0.8),
    inputs: Mapping[str, float | tuple[float, ...]] | None = None,
) -> bpy.types.Material:
    """A Principled BSDF material; ``inputs`` by socket name (``{"Metallic": 1.0}``, colours
    as RGBA)."""
    material = bpy.data.materials.new(name)
    bsdf = _bsdf(material)
    bsdf.inputs["Base Color"].default_value = (*base, 1.0)
    for socket, value in (inputs or {}).items():
        bsdf.inputs[socket].default_value = value
    return material


def textured(
    name: str, texture: str, colour_ramp: list[Colour] | None = None, **inputs: Any
) -> bpy.types.Material:
    """A material whose base colour is a procedural ``ShaderNodeTex<texture>`` in object space
    (so pattern size is in metres, whatever the mesh's UVs), optionally through a colour ramp
    of evenly spaced colours. ``inputs`` set the texture's sockets (``Scale=12.0``)."""
    material = principled(name)
    tree = material.node_tree
    assert tree is not None
    coordinates = tree.nodes.new("ShaderNodeTexCoord")
    node: Any = tree.nodes.new(f"ShaderNodeTex{texture}")
    for socket, value in inputs.items():
        node.inputs[socket].default_value = (*value, 1.0) if isinstance(value, tuple) else value
    tree.links.new(coordinates.outputs["Object"], node.inputs["Vector"])
    colour = node.outputs["Color"]
    if colour_ramp:
        ramp: Any = tree.nodes.new("ShaderNodeValToRGB")
        elements = ramp.color_ramp.elements
        while len(elements) < len(colour_ramp):
            elements.new(0.5)
        for index, (element, rgb) in enumerate(zip(elements, colour_ramp, strict=True)):
            element.position = index / (len(colour_ramp) - 1)
            element.color = (*rgb, 1.0)
        tree.links.new(node.outputs["Factor"], ramp.inputs["Fac"])
        colour = ramp.outputs["Color"]
    tree.links.new(colour, _bsdf(material).inputs["Base Color"])
    return material


def _bsdf(material: bpy.types.Material) -> Any:
    if material.node_tree is None:  # Blender < 5.0 creates node trees only on request
        material.use_nodes = True
    assert material.node_tree is not None
    return material.node_tree.nodes["Principled BSDF"]


def assign(obj: bpy.types.Object, material: bpy.types.Material) -> bpy.types.Object:
    obj.data.materials.append(material)  # type: ignore[union-attr]
    return obj


def add_sun(
    scene: bpy.types.Scene, strength: float = 3.0, rotation: Colour = (0.7, 0.2, 0.9)
) -> None:
    light = bpy.data.lights.new(f"{scene.name} sun", "SUN")
    light.energy = strength  # type: ignore[attr-defined]
    sun = bpy.data.objects.new(light.name, light)
    sun.rotation_euler = rotation
    scene.collection.objects.link(sun)


def set_world(scene: bpy.types.Scene, colour: Colour, strength: float = 1.0) -> None:
    """A uniform world: soft fill light so no side of the object is black."""
    world = bpy.data.worlds.new(f"{scene.name} world")
    background = _world_background(world)
    background.inputs["Color"].default_value = (*colour, 1.0)
    background.inputs["Strength"].default_value = strength
    scene.world = world


def set_hdri_world(scene: bpy.types.Scene, file_name: str = HDRI_NAME) -> None:
    """Light with one of Blender's bundled studio HDRIs: what glossy surfaces reflect."""
    folder = bpy.utils.system_resource(  # type: ignore[attr-defined]
        "DATAFILES", path="studiolights/world"
    )  # returns "" for a path that is not a folder, so the file is joined on afterwards
    path = str(Path(folder) / file_name)
    world = bpy.data.worlds.new(f"{scene.name} world")
    tree = world.node_tree
    assert tree is not None
    environment: Any = tree.nodes.new("ShaderNodeTexEnvironment")
    environment.image = bpy.data.images.load(path, check_existing=True)
    tree.links.new(environment.outputs["Color"], _world_background(world).inputs["Color"])
    scene.world = world


def _world_background(world: bpy.types.World) -> Any:
    if world.node_tree is None:  # Blender < 5.0
        world.use_nodes = True
    assert world.node_tree is not None
    return world.node_tree.nodes["Background"]


# --- the scenes ----------------------------------------------------------------------------


def textures(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Fine checker, brick and Voronoi-cell patterns on a cube, a sphere and a monkey."""
    add_sun(scene)
    set_world(scene, (0.35, 0.35, 0.4))
    checker = textured(
        "checker", "Checker", Scale=14.0, Color1=(0.9, 0.85, 0.2), Color2=(0.1, 0.15, 0.5)
    )
    bricks = textured(
        "bricks",
        "Brick",
        Scale=6.0,
        Color1=(0.7, 0.15, 0.1),
        Color2=(0.9, 0.5, 0.3),
        Mortar=(0.95, 0.95, 0.9),
    )
    cells = textured("cells", "Voronoi", Scale=12.0)  # a random colour per cell
    return [
        assign(add_mesh(scene, "checker cube", "cube", (-0.7, 0.0, 0.0), size=0.9), checker),
        assign(
            add_mesh(
                scene,
                "brick sphere",
                "uvsphere",
                (0.6, 0.2, 0.1),
                smooth=True,
                u_segments=48,
                v_segments=24,
                radius=0.55,
            ),
            bricks,
        ),
        assign(
            add_mesh(scene, "cell monkey", "monkey", (0.0, -0.6, 0.6), (0.3, 0.0, 0.4), True),
            cells,
        ),
    ]


def glossy(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Chrome, gold, varnished red and brushed copper under a studio HDRI."""
    set_hdri_world(scene)
    finishes = [
        ("chrome", (0.95, 0.95, 0.95), {"Metallic": 1.0, "Roughness": 0.05}),
        ("gold", (1.0, 0.77, 0.34), {"Metallic": 1.0, "Roughness": 0.2}),
        ("red varnish", (0.6, 0.03, 0.03), {"Roughness": 0.4, "Coat Weight": 1.0}),
    ]
    objects = [
        assign(
            add_mesh(
                scene,
                name,
                "uvsphere",
                (1.05 * (index - 1), 0.0, 0.0),
                smooth=True,
                u_segments=48,
                v_segments=24,
                radius=0.45,
            ),
            principled(name, colour, inputs),
        )
        for index, (name, colour, inputs) in enumerate(finishes)
    ]
    copper = principled("copper", (0.95, 0.55, 0.4), {"Metallic": 1.0, "Roughness": 0.35})
    monkey = add_mesh(scene, "copper monkey", "monkey", (0.0, 0.2, 0.75), (0.2, 0.0, 0.0), True)
    return [*objects, assign(monkey, copper)]


def thin(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """A picket fence of 2.5 cm rods, a wire-frame cube and a sprig of paper-thin leaves."""
    add_sun(scene, rotation=(0.9, -0.3, 0.4))
    set_world(scene, (0.4, 0.4, 0.45))
    wood = principled("fence wood", (0.75, 0.55, 0.3), {"Roughness": 0.7})
    fence = [
        add_rod(
            scene, f"picket {i}", (-0.9 + 0.2 * i, -0.5, -0.6), (-0.9 + 0.2 * i, -0.5, 0.4), 0.025
        )
        for i in range(10)
    ]
    fence += [
        add_rod(scene, f"rail {z}", (-1.0, -0.5, z), (1.0, -0.5, z), 0.02) for z in (-0.4, 0.2)
    ]
    wire = add_mesh(scene, "wire cube", "cube", (0.4, 0.4, -0.1), (0.3, 0.2, 0.5), size=0.7)
    modifier: Any = wire.modifiers.new("Wireframe", "WIREFRAME")
    modifier.thickness = 0.03
    stem = add_rod(scene, "stem", (-0.5, 0.4, -0.6), (-0.5, 0.4, 0.7), 0.015)
    leaf_material = textured(
        "leaf", "Noise", [(0.1, 0.35, 0.05), (0.5, 0.8, 0.2)], Scale=25.0, Detail=4.0
    )
    rng = random.Random(7)
    leaves = [
        add_mesh(
            scene,
            f"leaf {i}",
            "grid",
            (-0.5 + 0.12 * math.cos(i * 2.4), 0.4 + 0.12 * math.sin(i * 2.4), -0.4 + 0.1 * i),
            (rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), i * 2.4),
            x_segments=1,
            y_segments=1,
            size=0.09,
        )
        for i in range(11)
    ]
    for obj in fence:
        assign(obj, wood)
    assign(wire, principled("wire", (0.2, 0.6, 0.9), {"Metallic": 0.6, "Roughness": 0.3}))
    for obj in (stem, *leaves):
        assign(obj, leaf_material)
    return [*fence, wire, stem, *leaves]


def demo(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """A few bright, low-polygon primitives: quick to capture, train and look at."""
    add_sun(scene, strength=2.5)
    set_world(scene, (0.5, 0.5, 0.55))
    magic = textured("magic", "Magic", Scale=3.0, Distortion=2.0)
    checker = textured(
        "orange checker", "Checker", Scale=5.0, Color1=(1.0, 0.45, 0.05), Color2=(0.05, 0.6, 0.6)
    )
    stripes = textured(
        "stripes", "Wave", [(0.9, 0.1, 0.5), (0.95, 0.9, 0.2), (0.1, 0.3, 0.9)], Scale=3.0
    )
    return [
        assign(
            add_mesh(
                scene,
                "magic sphere",
                "uvsphere",
                (0.0, 0.0, 0.0),
                smooth=True,
                u_segments=32,
                v_segments=16,
                radius=0.6,
            ),
            magic,
        ),
        assign(
            add_mesh(scene, "checker cube", "cube", (1.1, 0.0, -0.2), (0.0, 0.0, 0.5), size=0.7),
            checker,
        ),
        assign(
            add_mesh(
                scene,
                "striped cone",
                "cone",
                (-1.0, 0.1, -0.1),
                cap_ends=True,
                segments=24,
                radius1=0.4,
                radius2=0.0,
                depth=0.9,
            ),
            stripes,
        ),
    ]


SCENES: dict[str, SceneBuilder] = {"textures": textures, "glossy": glossy, "thin": thin}


def build_scene(name: str) -> BuiltScene:
    """Build the registered scene ``name`` into a new, empty Blender scene."""
    if name not in SCENES:
        raise KeyError(f"unknown scene {name!r}; choose from {', '.join(SCENES)}")
    return _build(name, SCENES[name])


def build_demo_scene() -> BuiltScene:
    """The demo's scene (``make demo``): see :func:`demo`."""
    return _build("demo", demo)


def _build(name: str, builder: SceneBuilder) -> BuiltScene:
    scene = bpy.data.scenes.new(f"VBNF {name}")
    objects = builder(scene)
    scene.view_layers[0].update()  # objects linked just now join the view layer here
    return BuiltScene(scene, objects)
