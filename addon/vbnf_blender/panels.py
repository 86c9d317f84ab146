"""The VBNF tab in the 3D viewport's sidebar (N panel): bake settings and progress, what an
interrupted bake kept for the next one, and for an imported neural field its level-of-detail
slider and what each level costs to stream."""

from __future__ import annotations

from typing import Any

import bpy

from . import volume
from .bake_job import format_seconds
from .ops_bake import (
    VBNF_OT_bake,
    VBNF_OT_bake_cancel,
    VBNF_OT_bake_discard,
    VBNF_OT_bake_estimate,
    estimate_fingerprint,
    kept_work_dir,
)
from .work_folder import resume_line

CATEGORY = "VBNF"


def format_bytes(count: int) -> str:
    """Exact byte counts, grouped, so the readout can be checked against ``core info``."""
    return f"{count:,} B"


class VIEW3D_PT_vbnf_bake(bpy.types.Panel):  # noqa: N801  # Blender's naming
    bl_label = "Bake Neural Field"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY

    def draw(self, context: bpy.types.Context) -> None:
        layout: Any = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.vbnf_bake  # type: ignore[union-attr]
        status = context.window_manager.vbnf_bake_status  # type: ignore[union-attr]
        settings = layout.column()
        settings.enabled = not status.running
        settings.prop(props, "target")
        capture = settings.column(heading="Capture", align=True)
        capture.prop(props, "views")
        capture.prop(props, "resolution")
        capture.prop(props, "samples")
        capture.prop(props, "fov_deg")
        capture.prop(props, "hemisphere")
        training = settings.column(heading="Training", align=True)
        training.prop(props, "bitwidth")
        training.prop(props, "min_level")
        training.prop(props, "max_level")
        training.prop(props, "epochs")
        training.prop(props, "device")
        settings.prop(props, "output_dir")
        settings.prop(props, "keep_dataset")
        if status.running:
            self._draw_progress(layout, status)
        else:
            self._draw_estimate(layout, context, status)
            layout.operator(VBNF_OT_bake.bl_idname, icon="RENDER_STILL")
            self._draw_kept(layout, context.scene)

    @staticmethod
    def _draw_estimate(layout: Any, context: bpy.types.Context, status: Any) -> None:
        """The estimate made for exactly these settings, or the button that makes one."""
        row = layout.row(align=True)
        if status.estimate_line and status.estimate_for == estimate_fingerprint(context):
            row.label(text=status.estimate_line, icon="TIME")
            row.operator(VBNF_OT_bake_estimate.bl_idname, text="", icon="FILE_REFRESH").fresh = True
        else:
            row.operator(VBNF_OT_bake_estimate.bl_idname, text="Estimate Time", icon="TIME")

    @staticmethod
    def _draw_kept(layout: bpy.types.UILayout, scene: Any) -> None:
        """What an interrupted bake of this asset kept, with a button to throw it away."""
        work_dir = kept_work_dir(scene)  # None without an asset path: nothing can be kept
        line = None if work_dir is None else resume_line(work_dir)
        if line is None:
            return
        row = layout.row(align=True)
        row.label(text=line, icon="RECOVER_LAST")
        row.operator(VBNF_OT_bake_discard.bl_idname, text="Discard", icon="TRASH")

    @staticmethod
    def _draw_progress(layout: bpy.types.UILayout, status: Any) -> None:
        column = layout.column(align=True)
        column.progress(factor=status.fraction, text=status.message or status.stage)
        details = []
        if status.epoch:
            details.append(f"Epoch {status.epoch}")
        if status.psnr:
            details.append(f"{status.psnr:.1f} dB")
        if status.seconds_left >= 0.0:
            details.append(f"{format_seconds(status.seconds_left)} left")
        if details:
            column.label(text="  ".join(details))
        column.operator(VBNF_OT_bake_cancel.bl_idname, text="Cancel", icon="CANCEL")


class VIEW3D_PT_vbnf_asset(bpy.types.Panel):  # noqa: N801
    bl_label = "Neural Field"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return obj is not None and volume.is_preview(obj)

    def draw(self, context: bpy.types.Context) -> None:
        layout: Any = self.layout
        settings = context.active_object.vbnf  # type: ignore[union-attr]
        layout.prop(settings, "asset_path", text="")
        layout.prop(settings, "lod", slider=True)
        if settings.lod_error:
            layout.label(text=settings.lod_error, icon="ERROR")
        layout.label(text=f"{settings.voxel_count} voxels at level {settings.lod}")
        layout.label(
            text=f"{settings.store}, b={settings.bitwidth}, k={settings.feature_dim}, "
            f"header {format_bytes(settings.header_bytes)}"
        )
        table = layout.column(align=True)
        header = table.row(align=True)
        for title in ("Level", "Bytes", "Streamed"):
            header.label(text=title)
        for level in settings.levels:
            row = table.row(align=True)
            row.active = level.present
            marker = "> " if level.level == settings.lod else ""
            row.label(text=f"{marker}{level.level}")
            row.label(text=format_bytes(level.bytes))
            row.label(text=format_bytes(level.cumulative_bytes))
        layout.label(text=f"Total {format_bytes(settings.total_bytes)}")


CLASSES = (VIEW3D_PT_vbnf_bake, VIEW3D_PT_vbnf_asset)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
