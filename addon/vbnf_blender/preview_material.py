"""The volume material that renders a neural field's grids in Cycles (and EEVEE).

It reproduces the field's emission-absorption model: Principled Volume with no scattering
(black Color and Absorption Color, so extinction is pure absorption at the grid's density) and
emission ``density * color`` (Emission Strength from the density attribute; the node does not
scale emission by density itself). The colour is evaluated per ray from the spherical-harmonic
grids that ``level_grids.py`` writes, so it changes with the viewing direction as the field's
does. One material is shared by every imported asset; its marker property tells it apart from
a user's material of the same name.
"""

from __future__ import annotations

from typing import Any

import bpy

from . import level_grids
from .engine import SH_POLYNOMIALS
from .level_grids import DENSITY_GRID, color_grid_names

MATERIAL_NAME = "VBNF Radiance Field"
MATERIAL_MARKER = "vbnf_material"  # custom property telling our material from a user's


def radiance_material() -> bpy.types.Material:
    """The shared volume material, created on first use."""
    existing = bpy.data.materials.get(MATERIAL_NAME)
    if existing is not None and existing.get(MATERIAL_MARKER):
        return existing
    material = bpy.data.materials.new(MATERIAL_NAME)
    material[MATERIAL_MARKER] = True
    tree = material.node_tree
    if tree is None:  # Blender < 5.0 creates material node trees only on request
        material.use_nodes = True
        tree = material.node_tree
    assert tree is not None
    tree.nodes.clear()
    nodes: Any = tree.nodes
    output = nodes.new("ShaderNodeOutputMaterial")
    shader = nodes.new("ShaderNodeVolumePrincipled")
    density = nodes.new("ShaderNodeAttribute")
    density.attribute_name = DENSITY_GRID
    shader.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    shader.inputs["Absorption Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    shader.inputs["Density"].default_value = 1.0
    shader.inputs["Density Attribute"].default_value = DENSITY_GRID
    tree.links.new(density.outputs["Fac"], shader.inputs["Emission Strength"])
    tree.links.new(_view_dependent_color(tree), shader.inputs["Emission Color"])
    tree.links.new(shader.outputs["Volume"], output.inputs["Volume"])
    for column, node in enumerate((density, shader, output)):
        node.location = (300.0 * column + 900.0, 0.0)
    return material


def _view_dependent_color(tree: Any) -> Any:
    """Nodes evaluating the colour SH grids for the ray's direction; returns the colour socket.

    The field was fitted over directions *along* the ray (camera to point) in the asset's
    frame: the Geometry node's Incoming points back to the camera, in world space, so it is
    negated and brought into the object's frame (the preview follows the object when moved).
    """
    nodes, links = tree.nodes, tree.links
    geometry = nodes.new("ShaderNodeNewGeometry")
    backwards = _vector_math(tree, "SCALE", geometry.outputs["Incoming"], scale=-1.0)
    to_object = nodes.new("ShaderNodeVectorTransform")
    to_object.vector_type = "VECTOR"
    to_object.convert_from, to_object.convert_to = "WORLD", "OBJECT"
    links.new(backwards, to_object.inputs["Vector"])
    unit = _vector_math(tree, "NORMALIZE", to_object.outputs["Vector"])
    xyz = nodes.new("ShaderNodeSeparateXYZ")
    links.new(unit, xyz.inputs["Vector"])
    component = {axis: xyz.outputs[axis.upper()] for axis in "xyz"}
    total = None
    for row, name in enumerate(color_grid_names(level_grids.QUALITY.sh_degree)):
        attribute = nodes.new("ShaderNodeAttribute")
        attribute.attribute_name = name
        attribute.location = (0.0, -200.0 * row)
        term = attribute.outputs["Vector"]
        polynomial = SH_POLYNOMIALS[row]
        if polynomial != "1":
            term = _vector_math(tree, "SCALE", term, scale=_polynomial(tree, polynomial, component))
        total = term if total is None else _vector_math(tree, "ADD", total, term)
    assert total is not None
    # A fitted colour can undershoot zero where the field changes fast with direction.
    return _vector_math(tree, "MAXIMUM", total, (0.0, 0.0, 0.0))


def _polynomial(tree: Any, polynomial: str, component: dict[str, Any]) -> Any:
    """A socket with one of core.asset.numpy_field's SH_POLYNOMIALS of the direction components."""
    if polynomial in component:
        return component[polynomial]
    if polynomial == "3zz-1":
        return _math(tree, "MULTIPLY_ADD", component["z"], component["z"], -1.0 / 3.0, factor=3.0)
    if polynomial == "xx-yy":
        xx = _math(tree, "MULTIPLY", component["x"], component["x"])
        yy = _math(tree, "MULTIPLY", component["y"], component["y"])
        return _math(tree, "SUBTRACT", xx, yy)
    return _math(tree, "MULTIPLY", component[polynomial[0]], component[polynomial[1]])


def _math(tree: Any, operation: str, *inputs: Any, factor: float = 1.0) -> Any:
    """A Math node on sockets or numbers, its result scaled by ``factor``."""
    node = tree.nodes.new("ShaderNodeMath")
    node.operation = operation
    for socket, value in zip(node.inputs, inputs, strict=False):
        if isinstance(value, float | int):
            socket.default_value = value
        else:
            tree.links.new(value, socket)
    if factor == 1.0:
        return node.outputs["Value"]
    return _math(tree, "MULTIPLY", node.outputs["Value"], factor)


def _vector_math(tree: Any, operation: str, *inputs: Any, scale: Any = None) -> Any:
    """A Vector Math node on sockets or constant vectors; ``scale`` for SCALE."""
    node = tree.nodes.new("ShaderNodeVectorMath")
    node.operation = operation
    vectors = [socket for socket in node.inputs if socket.type == "VECTOR"]
    for socket, value in zip(vectors, inputs, strict=False):
        if isinstance(value, tuple):
            socket.default_value = value
        else:
            tree.links.new(value, socket)
    if scale is not None:
        if isinstance(scale, float):
            node.inputs["Scale"].default_value = scale
        else:
            tree.links.new(scale, node.inputs["Scale"])
    return node.outputs["Vector"]
