"""File > Export > Neural Field (.vbnf): the active asset's file, whole or cut to a level.

A cut keeps the coarsest levels and copies their chunks byte for byte (``cut_asset``), so the
exported file is a smaller but complete asset, not a truncated prefix.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from .engine import VbnfError, atomic_write_bytes, cut_asset


def _asset_settings(context: bpy.types.Context) -> object | None:
    obj = context.active_object
    if obj is None or obj.type != "VOLUME" or not obj.vbnf.asset_path:  # type: ignore[attr-defined]
        return None
    return obj.vbnf  # type: ignore[attr-defined]


class EXPORT_SCENE_OT_vbnf(bpy.types.Operator, ExportHelper):
    """Export the active neural field, whole or cut to a level of detail"""

    bl_idname = "export_scene.vbnf"
    bl_label = "Export Neural Field"
    bl_options = {"REGISTER", "PRESET"}

    filename_ext = ".vbnf"
    filter_glob: StringProperty(default="*.vbnf", options={"HIDDEN"})  # type: ignore[valid-type]
    use_level: BoolProperty(  # type: ignore[valid-type]
        name="Cut to Level",
        description="Write only the levels up to Level (a smaller, complete asset)",
        default=False,
    )
    level: IntProperty(  # type: ignore[valid-type]
        name="Level", description="Finest level kept when cutting", default=0, min=0, max=12
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _asset_settings(context) is None:
            cls.poll_message_set("The active object is not an imported neural field")
            return False
        return True

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        settings = _asset_settings(context)
        if settings is not None and not self.properties.is_property_set("level"):
            self.level = settings.lod  # type: ignore[attr-defined]
        return ExportHelper.invoke(self, context, event)  # type: ignore[no-any-return]

    def execute(self, context: bpy.types.Context) -> set[str]:
        settings = _asset_settings(context)
        assert settings is not None  # poll
        source = Path(bpy.path.abspath(settings.asset_path))  # type: ignore[attr-defined]
        target = Path(self.filepath)
        try:
            if target.resolve() == source.resolve():
                raise VbnfError("choose another file than the asset itself", target)
            data = (
                cut_asset(source, level=self.level) if self.use_level else source.read_bytes()
            )
            atomic_write_bytes(target, data)
        except (VbnfError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        what = f"levels up to {self.level}" if self.use_level else "the whole asset"
        self.report({"INFO"}, f"Wrote {what} to {target} ({len(data)} bytes)")
        return {"FINISHED"}


def menu_export(self: bpy.types.Menu, _context: bpy.types.Context) -> None:
    self.layout.operator(EXPORT_SCENE_OT_vbnf.bl_idname, text="Neural Field (.vbnf)")


def register() -> None:
    bpy.utils.register_class(EXPORT_SCENE_OT_vbnf)
    bpy.types.TOPBAR_MT_file_export.append(menu_export)


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_export.remove(menu_export)
    bpy.utils.unregister_class(EXPORT_SCENE_OT_vbnf)
