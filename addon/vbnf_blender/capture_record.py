"""Which views already in a dataset folder a resumed capture may keep.

A capture renders one view at a time and can be interrupted, so the next capture into the same
folder (``resume=True``) skips the views that are already there. That is only safe when those
views were rendered from the same scene state and the same plan: a dataset that mixes views of
another camera path, another lighting or other materials would train a field that matches
neither, and nothing downstream could tell. This module decides it, apart from the rendering in
``capture.py``, from a record the capture writes beside its views.

The record (``.vbnf_capture_plan``) holds a digest of each part the views' pixels depend on: the
capture settings, the camera poses, the frame, the world, the Blender version and, for every
captured object and light, its placement, data, materials and light settings. A view is kept
only when the stored record matches the new plan's and all of its files are there (each is
renamed into place whole). A plan that differs in any part renders every view again, and
``kept_views_of`` names the parts that changed ("Cube's materials changed"). Edits inside a
datablock (a material's node values, a mesh's vertices that leave its bounds alone) are not
seen: that would mean hashing the whole scene.

Errors reading or writing the folder propagate as ``OSError``; the capture reports them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from .engine import atomic_write_bytes, dataset, interop

# What the folder's images depend on, part by part (see the module docstring).
PLAN_RECORD_NAME = ".vbnf_capture_plan"
# Poses and placements are compared after rounding, so that float noise cannot reject them.
POSE_DECIMALS = 6
# Hex digits kept of each part's SHA-256: enough to tell versions of one scene apart.
DIGEST_CHARS = 16
# How each part of the record is named when it changed.
SCENE_PARTS = {
    "settings": "the capture settings",
    "poses": "the camera positions",
    "frame": "the frame",
    "world": "the world",
    "blender": "the Blender version",
}
OBJECT_PARTS = {
    "placement": "placement",
    "data": "data",
    "materials": "materials",
    "light": "light settings",
}
# Changed parts named in a reason before the rest are only counted.
CHANGES_NAMED = 3


@dataclass(frozen=True)
class KeptViews:
    """What a dataset folder holds of a capture plan: ``count`` complete views of it, or, when
    its views were rendered from another plan, ``change`` says what differs."""

    count: int
    change: str = ""


@dataclass(frozen=True)
class View:
    """One planned view: its split and its frame, which names the view's two files."""

    split: str
    frame: dataset.FrameRecord


def plan_record(
    scene: bpy.types.Scene,
    settings: dict[str, Any],
    views: Sequence[View],
    objects: list[bpy.types.Object],
) -> dict[str, Any]:
    """What the views' pixels depend on, cheaply: each part digested on its own, so that a
    resumed capture can say which part changed. ``settings`` are the capture settings as plain
    values; ``objects`` are the targets and the lights."""
    world = scene.world
    parts = {
        "settings": settings,
        "poses": [np.round(v.frame.camera_to_world, POSE_DECIMALS).tolist() for v in views],
        "frame": scene.frame_current,
        "world": None if world is None else world.name,
        "blender": list(bpy.app.version),
    }
    record: dict[str, Any] = {key: _digest(value) for key, value in parts.items()}
    record["objects"] = {
        obj.name: {key: _digest(value) for key, value in _object_parts(obj).items()}
        for obj in objects
    }
    return record


def views_to_render(
    out_dir: Path, views: Sequence[View], record: dict[str, Any], resume: bool
) -> list[View]:
    """The views still to render. Resuming the same plan keeps every complete view; otherwise
    this plan's file names are cleared first, so that images of another plan can never pass
    for views of this one in a later resume."""
    record_path = out_dir / PLAN_RECORD_NAME
    stored = _read_record(record_path) if resume else None
    # The test kept_views_of applies, so that the views it promised are the views kept.
    if stored is not None and not _record_change(stored, record):
        return [view for view in views if not _view_complete(out_dir, view.frame)]
    for view in views:
        for path in view_files(out_dir, view.frame):
            path.unlink(missing_ok=True)
    atomic_write_bytes(record_path, json.dumps(record, sort_keys=True).encode())
    return list(views)


def kept_views_of(out_dir: Path, views: Sequence[View], record: dict[str, Any]) -> KeptViews:
    """What ``views_to_render`` with ``resume`` would keep of ``out_dir``, decided without
    changing the folder."""
    record_path = out_dir / PLAN_RECORD_NAME
    if not record_path.is_file():
        return KeptViews(0)
    stored = _read_record(record_path)
    if stored is None:
        return KeptViews(0, "the kept views are from another version")
    change = _record_change(stored, record)
    if change:
        return KeptViews(0, change)
    return KeptViews(sum(_view_complete(out_dir, view.frame) for view in views))


def view_files(out_dir: Path, frame: dataset.FrameRecord) -> tuple[Path, Path, Path]:
    """The view's RGBA PNG, depth EXR and 16-bit depth PNG in the dataset folder."""
    return (
        out_dir / f"{frame.file_path}.png",
        out_dir / frame.depth_file_path,
        out_dir / interop.depth_png_path(frame),
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:DIGEST_CHARS]


def _object_parts(obj: bpy.types.Object) -> dict[str, Any]:
    """An object's share of the record: where it is, which datablocks it shows, and for a
    light what it emits."""
    data: Any = obj.data
    instanced = obj.instance_collection if obj.instance_type == "COLLECTION" else None
    names = [None if datablock is None else datablock.name for datablock in (data, instanced)]
    light = None
    if obj.type == "LIGHT":
        light = {
            "type": data.type,
            "energy": round(float(data.energy), POSE_DECIMALS),
            "color": [round(float(c), POSE_DECIMALS) for c in data.color],
        }
    return {
        "placement": np.round(np.array(obj.matrix_world), POSE_DECIMALS).tolist(),
        "data": names,
        "materials": [None if s.material is None else s.material.name for s in obj.material_slots],
        "light": light,
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    """The record a folder's views were rendered with (None: unreadable or of another
    version, such as the single digest earlier versions wrote)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("objects"), dict):
        return None
    if not all(isinstance(parts, dict) for parts in record["objects"].values()):
        return None
    return record


def _record_change(stored: dict[str, Any], record: dict[str, Any]) -> str:
    """``Cube's materials, Sun's placement changed``: what differs between two records ("" when
    nothing does)."""
    changes = [words for key, words in SCENE_PARTS.items() if stored.get(key) != record[key]]
    stored_objects, objects = stored["objects"], record["objects"]
    if stored_objects.keys() != objects.keys():
        changes.append("the captured objects and lights")
    for name in sorted(stored_objects.keys() & objects.keys()):
        parts = [
            words
            for key, words in OBJECT_PARTS.items()
            if stored_objects[name].get(key) != objects[name][key]
        ]
        if parts:
            changes.append(f"{name}'s {' and '.join(parts)}")
    if not changes:
        return ""
    named = changes[:CHANGES_NAMED]
    if len(changes) > CHANGES_NAMED:
        named.append(f"{len(changes) - CHANGES_NAMED} more")
    return ", ".join(named) + " changed"


def _view_complete(out_dir: Path, frame: dataset.FrameRecord) -> bool:
    """All its files are there and not empty (each is renamed into place whole)."""
    return all(path.is_file() and path.stat().st_size > 0 for path in view_files(out_dir, frame))
