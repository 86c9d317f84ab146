"""File > Import > Neural Field (.vbnf), drag and drop, and the asset's Reload / Pack buttons.

The importer takes one file or several (the file browser's multiple selection, or files
dropped on the 3D viewport or the outliner through :class:`IO_FH_vbnf`, Blender 4.1+'s
FileHandler). Each file becomes a Volume object with an LOD slider; a file that cannot be
imported is reported (an error when no file could be, else a warning) and the others still
are; a file with damaged or missing levels imports
the complete levels before them with a warning that names what is missing and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, IntProperty, StringProperty
from bpy_extras.io_utils import ImportHelper, poll_file_object_drop

from . import volume
from .engine import MAX_LEVEL, VbnfError

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


class IMPORT_SCENE_OT_vbnf(bpy.types.Operator, ImportHelper):  # noqa: N801
    """Import neural fields as Volume objects with a level-of-detail slider"""

    bl_idname = "import_scene.vbnf"
    bl_label = "Import Neural Field"
    bl_options = {"REGISTER", "UNDO", "PRESET"}  # noqa: RUF012  # Blender reads a set

    filename_ext = ".vbnf"
    filter_glob: StringProperty(default="*.vbnf", options={"HIDDEN"})  # type: ignore[valid-type]
    files: CollectionProperty(  # type: ignore[valid-type]
        type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"}
    )
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})  # type: ignore[valid-type]
    level: IntProperty(  # type: ignore[valid-type]
        name="Level",
        description="Level of detail shown first; -1: the finest level in the file",
        default=-1,
        min=-1,
        max=MAX_LEVEL,
    )
    pack: BoolProperty(  # type: ignore[valid-type]
        name="Pack into .blend",
        description="Keep the asset's bytes (every level) inside the .blend, so the file "
        "opens anywhere with a working slider",
        default=False,
    )

    def invoke(  # type: ignore[override]  # Operator and ImportHelper disagree in the stubs
        self, context: bpy.types.Context, event: bpy.types.Event
    ) -> set[OperatorReturnItems]:
        """Files dropped on the viewport arrive with their paths set: ask only for options."""
        return ImportHelper.invoke_popup(self, context)  # type: ignore[return-value]

    def paths(self) -> list[Path]:
        """The chosen files: the file browser's selection, else ``filepath``."""
        names = [item.name for item in self.files if item.name]
        if names:
            return [Path(self.directory) / name for name in names]
        return [Path(self.filepath)]  # type: ignore[attr-defined]  # declared by ImportHelper

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        view_layer: Any = context.view_layer
        collection = context.collection or view_layer.layer_collection.collection
        imported, failures = [], []
        for path in self.paths():
            try:
                obj = volume.import_asset(path, collection, None if self.level < 0 else self.level)
                if self.pack:
                    volume.pack_asset(obj)
            except (VbnfError, OSError) as error:
                failures.append(str(error))
                continue
            imported.append(obj)
            settings = obj.vbnf  # type: ignore[attr-defined]
            line = (
                f"Imported {obj.name}: levels {settings.min_level}..{settings.max_level}, "
                f"showing level {settings.lod} ({settings.voxel_count} voxels)"
            )
            if settings.import_warning:
                self.report({"WARNING"}, f"{line}; {path.name}: {settings.import_warning}")
            else:
                self.report({"INFO"}, line)
        # Files that failed beside others that imported are warnings: the import did happen.
        for failure in failures:
            self.report({"WARNING"} if imported else {"ERROR"}, failure)
        if not imported:
            return {"CANCELLED"}
        for other in view_layer.objects:
            other.select_set(False)
        for obj in imported:
            obj.select_set(True)
        view_layer.objects.active = imported[-1]
        return {"FINISHED"}


class IO_FH_vbnf(bpy.types.FileHandler):  # noqa: N801  # Blender's naming
    bl_idname = "IO_FH_vbnf"
    bl_label = "Neural Field"
    bl_import_operator = IMPORT_SCENE_OT_vbnf.bl_idname
    bl_file_extensions = ".vbnf"

    @classmethod
    def poll_drop(cls, context: bpy.types.Context | None) -> bool:
        return context is not None and bool(poll_file_object_drop(context))


def _active_asset(context: bpy.types.Context) -> bpy.types.Object | None:
    obj = context.active_object
    return obj if obj is not None and volume.is_preview(obj) else None


class _AssetOperator(bpy.types.Operator):
    """Shared poll: the active object shows a neural field."""

    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _active_asset(context) is None:
            cls.poll_message_set("The active object is not an imported neural field")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = _active_asset(context)
        assert obj is not None  # poll
        try:
            message = self.apply(obj)
        except (VbnfError, OSError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, message)
        return {"FINISHED"}

    def apply(self, obj: bpy.types.Object) -> str:
        raise NotImplementedError


class VBNF_OT_reload_asset(_AssetOperator):  # noqa: N801
    """Show the asset file as it is on disk now (after a re-bake or a replaced file)"""

    bl_idname = "vbnf.reload_asset"
    bl_label = "Reload Asset"

    def apply(self, obj: bpy.types.Object) -> str:
        volume.reload_asset(obj)
        settings = obj.vbnf  # type: ignore[attr-defined]
        return f"Reloaded {obj.name}: levels {settings.min_level}..{settings.max_level}"


class VBNF_OT_pack_asset(_AssetOperator):  # noqa: N801
    """Keep the asset's bytes (every level) inside the .blend, so it opens anywhere"""

    bl_idname = "vbnf.pack_asset"
    bl_label = "Pack Asset"

    def apply(self, obj: bpy.types.Object) -> str:
        volume.pack_asset(obj)
        return f"Packed {obj.vbnf.total_bytes} bytes into {obj.data.name}"  # type: ignore[attr-defined,union-attr]


class VBNF_OT_unpack_asset(_AssetOperator):  # noqa: N801
    """Stop carrying the asset inside the .blend (written to its path first if missing)"""

    bl_idname = "vbnf.unpack_asset"
    bl_label = "Unpack Asset"

    def apply(self, obj: bpy.types.Object) -> str:
        return f"The asset is read from {volume.unpack_asset(obj)}"


def menu_import(self: Any, _context: bpy.types.Context) -> None:
    self.layout.operator(IMPORT_SCENE_OT_vbnf.bl_idname, text="Neural Field (.vbnf)")


CLASSES = (
    IMPORT_SCENE_OT_vbnf,
    IO_FH_vbnf,
    VBNF_OT_reload_asset,
    VBNF_OT_pack_asset,
    VBNF_OT_unpack_asset,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.TOPBAR_MT_file_import.append(menu_import)  # type: ignore[arg-type]  # stub wrong


def unregister() -> None:
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)  # type: ignore[arg-type]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
