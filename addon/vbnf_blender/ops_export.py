"""File > Export > Neural Field (.vbnf): the active asset, whole or cut to a level.

The bytes written are those of the version the object shows: its packed copy, or the file
while it still holds that version (an asset changed on disk must be reloaded first).

A cut keeps the coarsest levels and copies their chunks byte for byte (``cut_asset``), so the
exported file is a smaller but complete asset, not a truncated prefix.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from . import volume
from .engine import MAX_LEVEL, VbnfError, atomic_write_bytes, cut_asset

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


def _asset_settings(context: bpy.types.Context) -> Any:
    """``Object.vbnf`` of the active object if it shows a neural field, else None."""
    obj = context.active_object
    if obj is None or not volume.is_preview(obj):
        return None
    return obj.vbnf  # type: ignore[attr-defined]


class EXPORT_SCENE_OT_vbnf(bpy.types.Operator, ExportHelper):  # noqa: N801  # Blender's naming
    """Export the active neural field, whole or cut to a level of detail"""

    bl_idname = "export_scene.vbnf"
    bl_label = "Export Neural Field"
    bl_options = {"REGISTER", "PRESET"}  # noqa: RUF012  # Blender reads a set

    filename_ext = ".vbnf"
    filter_glob: StringProperty(default="*.vbnf", options={"HIDDEN"})  # type: ignore[valid-type]
    use_level: BoolProperty(  # type: ignore[valid-type]
        name="Cut to Level",
        description="Write only the levels up to Level (a smaller, complete asset)",
        default=False,
    )
    level: IntProperty(  # type: ignore[valid-type]
        name="Level", description="Finest level kept when cutting", default=0, min=0, max=MAX_LEVEL
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _asset_settings(context) is None:
            cls.poll_message_set("The active object is not an imported neural field")
            return False
        return True

    def invoke(  # type: ignore[override]  # Operator and ExportHelper disagree in the stubs
        self, context: bpy.types.Context, event: bpy.types.Event
    ) -> set[OperatorReturnItems]:
        """Start from the level the slider shows."""
        settings = _asset_settings(context)
        if settings is not None and not self.properties.is_property_set("level"):
            self.level = settings.lod
        return ExportHelper.invoke(self, context, event)  # type: ignore[return-value]

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = context.active_object
        assert obj is not None and _asset_settings(context) is not None  # poll
        source = volume.asset_file(obj)
        target = Path(self.filepath)  # type: ignore[attr-defined]  # declared by ExportHelper
        try:
            if target.resolve() == source.resolve():
                raise VbnfError("choose another file than the asset itself", target)
            asset = volume.asset_bytes(obj)  # the version shown, packed or on disk
            data = cut_asset(asset, level=self.level) if self.use_level else asset
            atomic_write_bytes(target, data)
        except (VbnfError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        what = f"levels up to {self.level}" if self.use_level else "the whole asset"
        self.report({"INFO"}, f"Wrote {what} to {target} ({len(data)} bytes)")
        return {"FINISHED"}


def menu_export(self: Any, _context: bpy.types.Context) -> None:
    self.layout.operator(EXPORT_SCENE_OT_vbnf.bl_idname, text="Neural Field (.vbnf)")


def register() -> None:
    bpy.utils.register_class(EXPORT_SCENE_OT_vbnf)
    bpy.types.TOPBAR_MT_file_export.append(menu_export)  # type: ignore[arg-type]  # stub wrong


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)  # type: ignore[arg-type]
    bpy.utils.unregister_class(EXPORT_SCENE_OT_vbnf)
