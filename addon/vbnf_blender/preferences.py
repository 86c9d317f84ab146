"""Add-on preferences: the Python interpreter that runs training.

Training needs PyTorch, which Blender's bundled Python usually lacks, and the extensions
platform forbids installing packages from an add-on, so the user points the add-on at a Python
that has it. Left empty, Blender's own Python is tried.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty


def addon_preferences(context: bpy.types.Context) -> VBNFPreferences | None:
    """This add-on's preferences (None while the add-on is not enabled, e.g. in batch mode)."""
    addon = context.preferences.addons.get(__package__)  # type: ignore[union-attr]
    return None if addon is None else addon.preferences


def python_preference(context: bpy.types.Context) -> str:
    preferences = addon_preferences(context)
    return "" if preferences is None else bpy.path.abspath(preferences.python_path)


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

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "python_path")
        column = layout.column(align=True)
        column.label(text="Training runs in a separate Python that can import torch.")
        column.label(text="Install it with: python -m pip install torch numpy pillow OpenEXR")


CLASSES = (VBNFPreferences,)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
