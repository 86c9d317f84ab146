"""Keeping imported assets working across Save As and reopening.

Blender rewrites its own relative paths (a Volume's ``filepath``) when a file is saved
elsewhere, but not a string property such as ``Object.vbnf.asset_path``. So just before a save
each asset path is made relative to the file being written, and just after it is made relative
to the file now open again (they differ for "Save Copy"). After a file is opened, a level whose
cached grids are gone (cache folder deleted, file moved without it) is decoded again, from the
copy packed into the .blend when there is one.

File > External Data > Pack Resources packs a Volume's current grid file only, which shows one
level; so a save finding an asset's Volume packed that way packs the asset's bytes too (every
level), and the slider keeps working wherever the .blend is opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
        _pack_with_resources(obj)
        absolute = bpy.path.abspath(settings.asset_path)
        _absolute_before_save[obj.as_pointer()] = absolute
        settings.asset_path = volume.stored_path(absolute, start=start)


def _pack_with_resources(obj: bpy.types.Object) -> None:
    """Pack the asset of a Volume that Pack Resources packed, if it can still be read."""
    if obj.data.packed_file is None or volume.packed_bytes(obj) is not None:  # type: ignore[union-attr]
        return
    try:
        volume.pack_asset(obj)
    except (VbnfError, OSError) as error:
        print(f"VBNF: {obj.name}: the asset could not be packed with the grids ({error})")


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
        volume_data: Any = obj.data
        if (
            volume_data.packed_file is None
            and not Path(bpy.path.abspath(volume_data.filepath)).is_file()
        ):
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
