"""What differs between the Blender versions the extension supports (4.2 LTS, 4.5 LTS, 5.0),
in one place, so that no other module checks versions.

Each difference is detected from Blender's own RNA (the feature, not the version number), as
verified with the bpy 4.2.23, 4.5.15 and 5.0.1 wheels (``make test-lts``):

- Compositor: 5.0 renders through any ``CompositorNodeTree`` group set as
  ``scene.compositing_node_group``; 4.x only through the scene's own tree (``scene.use_nodes``,
  ``scene.node_tree``), where a Render Layers node cannot be added to a free group. There the
  capture adds its nodes to the scene's tree, mutes the user's nodes meanwhile (their File
  Output nodes must not write files during the capture) and removes its nodes afterwards.
- File Output node: 5.0 ``directory``, ``file_name``, ``file_output_items.new(type, name)``,
  ``format.media_type``; 4.x ``base_path`` and ``file_slots[i].path`` (colour sockets; a float
  link converts), no media type; ``save_as_render`` on the node from 4.5, per slot on 4.2; a
  single-channel (``BW``) EXR from 4.5, RGB on 4.2 (the dataset reader takes the first
  channel).
- ``view_settings.use_white_balance``: from 4.3.
- Property option ``PATH_SUPPORTS_BLEND_RELATIVE``: from 4.5.
- The ``openvdb`` Python module, which the Volume preview writes its grids with: from 4.4
  (4.2's wheel ships only the C++ library). Without it a bake still writes the asset and
  ``core`` still reads it; only the preview import is unavailable, said in one line.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import bpy

Override = tuple[Any, str, Any]  # (owner, property name, value), as the capture applies them

HAS_COMPOSITING_NODE_GROUP = "compositing_node_group" in bpy.types.Scene.bl_rna.properties
HAS_FILE_OUTPUT_ITEMS = "file_output_items" in bpy.types.CompositorNodeOutputFile.bl_rna.properties
HAS_NODE_SAVE_AS_RENDER = "save_as_render" in bpy.types.CompositorNodeOutputFile.bl_rna.properties
HAS_BLEND_RELATIVE_OPTION = (
    "is_path_supports_blend_relative" in bpy.types.Property.bl_rna.properties
)
# Colour-management settings the capture sets where they exist and that older Blenders lack.
OPTIONAL_SETTINGS = frozenset({"use_white_balance"})

# ``options=PATH_OPTIONS`` on a path property: relative to the .blend where Blender allows it.
PATH_OPTIONS: set[str] = {"PATH_SUPPORTS_BLEND_RELATIVE"} if HAS_BLEND_RELATIVE_OPTION else set()

NO_OPENVDB_LINE = (
    "this Blender has no OpenVDB Python module (Blender 4.2): the asset is baked and written, "
    "but its Volume preview needs Blender 4.5 or newer"
)


def has_openvdb() -> bool:
    """Whether the preview's OpenVDB bindings can be imported (found without importing)."""
    expose = getattr(bpy.utils, "expose_bundled_modules", None)  # bpy module, 4.4+
    if expose is not None:
        expose()
    return any(importlib.util.find_spec(name) is not None for name in ("openvdb", "pyopenvdb"))


class CaptureCompositor:
    """The compositor tree the capture adds its nodes to, on any supported Blender.

    ``open`` makes the tree render (through ``apply``, the capture's settings patch, which
    restores it); ``new_node`` adds a node the capture owns; ``close`` removes what was added,
    after the patch has been restored.
    """

    def __init__(self, scene: bpy.types.Scene, name: str) -> None:
        self.scene = scene
        self.name = name
        self.tree: Any = None
        self._group: bpy.types.NodeTree | None = None  # 5.0: a temporary group of our own
        self._user_nodes: set[str] = set()  # 4.x: the scene tree's nodes before the capture

    def open(self, apply: Callable[[Sequence[Override]], None]) -> Any:
        if HAS_COMPOSITING_NODE_GROUP:
            self._group = self.tree = bpy.data.node_groups.new(self.name, "CompositorNodeTree")
            apply([(self.scene, "compositing_node_group", self._group)])
            return self.tree
        scene: Any = self.scene
        existing = scene.node_tree
        self._user_nodes = {node.name for node in existing.nodes} if existing else set()
        apply([(scene, "use_nodes", True)])  # creates the scene's tree if it had none
        self.tree = scene.node_tree
        apply([(node, "mute", True) for node in self.tree.nodes if node.name in self._user_nodes])
        return self.tree

    def new_node(self, node_type: str) -> Any:
        return self.tree.nodes.new(node_type)

    def close(self) -> None:
        """Remove the capture's group (5.0) or the nodes it added to the scene's tree (4.x,
        the default nodes ``use_nodes`` created included). Idempotent."""
        if self._group is not None:
            bpy.data.node_groups.remove(self._group)
        elif self.tree is not None:
            for node in list(self.tree.nodes):
                if node.name not in self._user_nodes:
                    self.tree.nodes.remove(node)
        self._group = self.tree = None


def configure_file_output(
    node: Any, folder: Path, name: str, file_format: str, color_depth: str, single_channel: bool
) -> None:
    """One File Output node writing one image (``name``) into ``folder``, with the view
    transform applied as a rendered still would have it; its first input takes the image.
    ``single_channel``: a float channel (depth), written as one channel where Blender can."""
    if HAS_FILE_OUTPUT_ITEMS:
        node.directory = str(folder)
        node.file_name = name
        node.format.media_type = "IMAGE"
    else:
        node.base_path = str(folder)
        node.file_slots[0].path = name
    if HAS_NODE_SAVE_AS_RENDER:
        node.save_as_render = True
    else:
        node.file_slots[0].save_as_render = True
    node.format.file_format = file_format
    node.format.color_depth = color_depth
    node.format.color_mode = _color_mode(node.format, single_channel)
    if HAS_FILE_OUTPUT_ITEMS:
        node.file_output_items.new("FLOAT" if single_channel else "RGBA", name)


def _color_mode(image_format: Any, single_channel: bool) -> str:
    """``BW`` for one channel where the format offers it (the modes offered depend on the file
    format just set), else ``RGB``; ``RGBA`` for colour."""
    if not single_channel:
        return "RGBA"
    try:
        image_format.color_mode = "BW"
    except TypeError:  # not among this Blender's modes for the format
        return "RGB"
    return "BW"


def existing_settings(overrides: Sequence[Override]) -> list[Override]:
    """``overrides`` less the optional settings this Blender does not have."""
    return [
        (owner, name, value)
        for owner, name, value in overrides
        if name not in OPTIONAL_SETTINGS or hasattr(owner, name)
    ]
