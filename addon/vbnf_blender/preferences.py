"""Add-on preferences: the Python interpreter that runs training, and its Check button.

Training needs PyTorch, which Blender's bundled Python usually lacks, and the extensions
platform forbids installing packages from an add-on, so the user points the add-on at a Python
that has it, or installs the self-contained build whose bundled wheels let Blender's own Python
train. Left empty, Blender's own Python is tried. **Check** runs the same complete check a bake
runs before it renders anything (``interpreter.py``) and shows its answer here.
"""

from __future__ import annotations

import sys
import textwrap
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import StringProperty

from .interpreter import INSTALL_COMMAND, check_interpreter

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

LABEL_CHARS = 90  # a label does not wrap by itself; a long problem is split into lines


def addon_preferences(context: bpy.types.Context) -> VBNFPreferences | None:
    """This add-on's preferences (None while the add-on is not enabled, e.g. in batch mode)."""
    addon = context.preferences.addons.get(__package__)  # type: ignore[union-attr]
    return None if addon is None else addon.preferences


def python_preference(context: bpy.types.Context) -> str:
    preferences = addon_preferences(context)
    return "" if preferences is None else bpy.path.abspath(preferences.python_path)


def scene_device(context: bpy.types.Context) -> str:
    """The Device the scene's bake settings ask for (CPU without a scene)."""
    scene: Any = context.scene
    return "cpu" if scene is None else scene.vbnf_bake.device


class VBNFPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(  # type: ignore[valid-type]
        name="Python Interpreter",
        description=(
            "Python with PyTorch, numpy, pillow and OpenEXR that runs training; "
            "empty: Blender's own Python"
        ),
        subtype="FILE_PATH",
        default="",
    )
    # The last Check's answer (not saved: a new session checks again).
    checked_python: StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]
    check_problem: StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]
    check_versions: StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]
    check_device: StringProperty(options={"SKIP_SAVE"})  # type: ignore[valid-type]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "python_path")
        row.operator(VBNF_OT_check_python.bl_idname, text="Check", icon="CHECKMARK")
        column = layout.column(align=True)
        if self.checked_python:
            if self.check_problem:
                for index, line in enumerate(textwrap.wrap(self.check_problem, LABEL_CHARS)):
                    column.label(text=line, icon="ERROR" if index == 0 else "BLANK1")
            else:
                column.label(text=f"{self.checked_python} can train", icon="CHECKMARK")
                column.label(text=self.check_versions)
                column.label(text=f"Device: {self.check_device}")
            return
        column.label(text="Training runs in a Python that can import torch.")
        column.label(text=f"Install it with: {INSTALL_COMMAND}")


class VBNF_OT_check_python(bpy.types.Operator):  # noqa: N801  # Blender's naming
    """Run, in the chosen interpreter, everything training needs (torch, numpy, pillow, \
OpenEXR, the engine, CUDA when Device is CUDA) and show versions and device"""

    bl_idname = "vbnf.check_python"
    bl_label = "Check Training Python"
    bl_options = {"INTERNAL"}  # noqa: RUF012  # Blender reads a set

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        python = python_preference(context).strip() or sys.executable
        check = check_interpreter(python, scene_device(context), fresh=True)
        preferences = addon_preferences(context)
        if preferences is not None:
            preferences.checked_python = python
            preferences.check_problem = check.problem or ""
            preferences.check_versions = check.versions
            preferences.check_device = check.device_line
        if check.problem is not None:
            self.report({"ERROR"}, check.problem)
            return {"CANCELLED"}
        self.report({"INFO"}, f"{check.versions}; device {check.device_line}")
        return {"FINISHED"}


CLASSES = (VBNFPreferences, VBNF_OT_check_python)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
