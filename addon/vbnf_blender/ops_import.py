"""File > Import > Neural Field (.vbnf): the asset as a Volume object with an LOD slider."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from . import volume
from .engine import MAX_LEVEL, VbnfError

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


class IMPORT_SCENE_OT_vbnf(bpy.types.Operator, ImportHelper):  # type: ignore[misc]  # noqa: N801
    """Import a neural field as a Volume object with a level-of-detail slider"""

    bl_idname = "import_scene.vbnf"
    bl_label = "Import Neural Field"
    bl_options = {"REGISTER", "UNDO", "PRESET"}  # noqa: RUF012  # Blender reads a set

    filename_ext = ".vbnf"
    filter_glob: StringProperty(default="*.vbnf", options={"HIDDEN"})  # type: ignore[valid-type]
    level: IntProperty(  # type: ignore[valid-type]
        name="Level",
        description="Level of detail shown first; -1: the finest level in the file",
        default=-1,
        min=-1,
        max=MAX_LEVEL,
    )

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        view_layer: Any = context.view_layer
        collection = context.collection or view_layer.layer_collection.collection
        filepath = self.filepath  # type: ignore[attr-defined]  # declared by ImportHelper
        try:
            obj = volume.import_asset(
                Path(filepath), collection, None if self.level < 0 else self.level
            )
        except (VbnfError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        for other in view_layer.objects:
            other.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        settings = obj.vbnf  # type: ignore[attr-defined]
        self.report(
            {"INFO"},
            f"Imported {obj.name}: levels {settings.min_level}..{settings.max_level}, "
            f"showing level {settings.lod} ({settings.voxel_count} voxels)",
        )
        return {"FINISHED"}


def menu_import(self: Any, _context: bpy.types.Context) -> None:
    self.layout.operator(IMPORT_SCENE_OT_vbnf.bl_idname, text="Neural Field (.vbnf)")


def register() -> None:
    bpy.utils.register_class(IMPORT_SCENE_OT_vbnf)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)  # type: ignore[arg-type]  # stub wrong


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)  # type: ignore[arg-type]
    bpy.utils.unregister_class(IMPORT_SCENE_OT_vbnf)
