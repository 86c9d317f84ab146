"""Keeping imported assets working across Save As and reopening.

Blender rewrites its own relative paths (a Volume's ``filepath``) when a file is saved
elsewhere, but not a string property such as ``Object.vbnf.asset_path``. So just before a save
each asset path is made relative to the file being written, and just after it is made relative
to the file now open again (they differ for "Save Copy"). After a file is opened, a level whose
cached grids are gone (cache folder deleted, file moved without it) is decoded again.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.app.handlers import persistent

from . import volume
from .engine import VbnfError

_absolute_before_save: dict[int, str] = {}  # Object.as_pointer() -> absolute asset path


def _asset_objects() -> list[bpy.types.Object]:
    return [
        obj
        for obj in bpy.data.objects
        if obj.library is None and obj.type == "VOLUME" and obj.vbnf.asset_path  # type: ignore[attr-defined]
    ]


@persistent
def relativize_before_save(filepath: str, *_args: object) -> None:
    start = os.path.dirname(filepath)
    for obj in _asset_objects():
        settings = obj.vbnf  # type: ignore[attr-defined]
        absolute = bpy.path.abspath(settings.asset_path)
        _absolute_before_save[obj.as_pointer()] = absolute
        settings.asset_path = volume.stored_path(absolute, start=start)


@persistent
def relativize_after_save(*_args: object) -> None:
    for obj in _asset_objects():
        absolute = _absolute_before_save.get(obj.as_pointer())
        if absolute is not None:
            obj.vbnf.asset_path = volume.stored_path(Path(absolute))  # type: ignore[attr-defined]
    _absolute_before_save.clear()


@persistent
def restore_missing_grids(*_args: object) -> None:
    for obj in _asset_objects():
        settings = obj.vbnf  # type: ignore[attr-defined]
        if not Path(bpy.path.abspath(obj.data.filepath)).is_file():  # type: ignore[union-attr]
            try:
                volume.show_level(obj, settings.lod)
            except (VbnfError, OSError) as error:
                settings.lod_error = str(error)


_HANDLERS = (
    (bpy.app.handlers.save_pre, relativize_before_save),
    (bpy.app.handlers.save_post, relativize_after_save),
    (bpy.app.handlers.load_post, restore_missing_grids),
)


def register() -> None:
    for handlers, function in _HANDLERS:
        handlers.append(function)


def unregister() -> None:
    for handlers, function in _HANDLERS:
        if function in handlers:
            handlers.remove(function)
