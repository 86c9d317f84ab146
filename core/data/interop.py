"""The files of a dataset folder that other tools read: nerfstudio and instant-ngp, unedited.

Every writer of a dataset (the Cycles capture, ``core synth``) writes its index through
:func:`write_dataset_index` and each view's 16-bit depth through :func:`write_view_depth`, so what
the tools are given cannot drift between them. A folder ``DATA`` holds:

``transforms_train.json``, ``transforms_val.json``, ``transforms_test.json``
    The NeRF-synthetic split files, read by this engine (``core.data.dataset``), by nerfstudio's
    Blender parser (``blender-data``, which needs all three; val names the same views as test)
    and by instant-ngp when given one of them. ``file_path`` has no extension (the Blender
    parser appends ``.png`` itself; instant-ngp finds it); ``depth_file_path`` names the float
    EXR, the engine's source of truth; ``depth_path`` with ``integer_depth_scale`` is the 16-bit
    depth instant-ngp reads; ``aabb_scale``, ``scale`` and ``offset`` place the capture's bounding
    sphere inside instant-ngp's unit cube.
``transforms.json``
    nerfstudio's own format (``nerfstudio-data``, the default of ``ns-train nerfacto``): every
    view once, ``file_path`` with its extension, ``depth_file_path`` naming the 16-bit PNG, and
    ``train_filenames`` / ``val_filenames`` / ``test_filenames`` so it keeps our split instead of
    its own 90/10 one.

instant-ngp given a *folder* loads every ``*.json`` in it, test views included, so it must be
given ``DATA/transforms_train.json``; the split files have to stay at the top for the Blender
parser, so no layout can make the folder itself safe.

Depth PNGs (``<view>_depth.png``) are single-channel 16-bit: a pixel's count times
``integer_depth_scale`` is its planar depth along the camera's -Z axis, 0 means no surface. The
step is 1 mm (0.001 scene units, nerfstudio's default ``depth_unit_scale_factor``) whenever the
deepest possible pixel (the capture's far clip) fits in 65535 steps, otherwise the smallest
power-of-ten multiple of it that does; every JSON states the step and its range. Both tools
read depth as planar (z) depth, as the EXR stores it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write_bytes
from .cameras import BoundingSphere, ViewPlan
from .dataset import DEFAULT_DEPTH_STEP_M, NERFSTUDIO_FILE, FrameRecord, Intrinsics

SPLIT_FILES = {"train": "train", "val": "test", "test": "test"}  # file split -> views it names
INDEX_FILES = (*(f"transforms_{split}.json" for split in SPLIT_FILES), NERFSTUDIO_FILE)
DEPTH_PNG_SUFFIX = "_depth.png"
DEPTH_LEVELS = 65535  # counts 1..65535 are depths, 0 is "no surface"
# instant-ngp maps a world point p to p * scale + offset and trains inside the cube of side
# aabb_scale (a power of two up to 128) centred on (0.5, 0.5, 0.5).
NGP_DEFAULT_SCALE = 0.33
NGP_MAX_AABB_SCALE = 128


@dataclass(frozen=True)
class DepthPng:
    """How planar depth is stored in a 16-bit PNG: ``count * step_m``, 0 where no surface."""

    step_m: float

    @classmethod
    def for_max_depth(cls, max_depth_m: float) -> DepthPng:
        """Millimetre steps if ``max_depth_m`` fits in 65535 of them, else coarser by tens."""
        step_m = DEFAULT_DEPTH_STEP_M
        while step_m * DEPTH_LEVELS < max_depth_m:
            step_m *= 10.0
        return cls(step_m)

    @property
    def max_depth_m(self) -> float:
        return self.step_m * DEPTH_LEVELS

    def encode(self, depth_m: np.ndarray) -> np.ndarray:
        """Planar depth (0 where no surface) -> uint16 counts; a surface never rounds to 0."""
        depth_m = np.asarray(depth_m, dtype=np.float64)
        counts = np.clip(np.rint(depth_m / self.step_m), 1, DEPTH_LEVELS)
        return np.where(depth_m > 0, counts, 0).astype(np.uint16)

    def to_json(self) -> dict[str, Any]:
        return {
            "integer_depth_scale": self.step_m,
            "integer_depth_range_m": [self.step_m, self.max_depth_m],
        }


@dataclass(frozen=True)
class ToolFields:
    """What the tools are told beyond the views: the depth encoding and the capture's bounds."""

    depth_png: DepthPng
    bounds: BoundingSphere

    @classmethod
    def for_plan(cls, plan: ViewPlan) -> ToolFields:
        """Depth steps that hold every depth the cameras can record: none lies past far clip."""
        return cls(DepthPng.for_max_depth(plan.clip_end_m), plan.target)

    def instant_ngp_placement(self) -> dict[str, Any]:
        """``scale``, ``offset`` and ``aabb_scale`` that put the bounding sphere inside the
        cube instant-ngp trains in: its default scale, centred on the cube, and the smallest
        power-of-two cube that holds the sphere (the scale shrinks only past the largest cube).
        """
        diameter_m = 2.0 * self.bounds.radius_m
        scale = min(NGP_DEFAULT_SCALE, NGP_MAX_AABB_SCALE / diameter_m)
        aabb_scale = 1
        while aabb_scale < diameter_m * scale and aabb_scale < NGP_MAX_AABB_SCALE:
            aabb_scale *= 2
        offset = 0.5 - scale * np.asarray(self.bounds.center_m, dtype=np.float64)
        return {"aabb_scale": aabb_scale, "scale": scale, "offset": offset.tolist()}


def depth_png_path(frame: FrameRecord) -> str:
    """The view's 16-bit depth PNG, relative to the dataset folder."""
    return f"{frame.file_path}{DEPTH_PNG_SUFFIX}"


def write_view_depth(
    out_dir: Path, frame: FrameRecord, depth_m: np.ndarray, encoding: DepthPng
) -> None:
    """Write a view's planar depth as its single-channel 16-bit PNG, atomically."""
    from PIL import Image

    counts = encoding.encode(depth_m)
    with atomic_path(out_dir / depth_png_path(frame)) as temporary:
        Image.fromarray(counts).save(temporary, format="PNG")


def write_dataset_index(
    out_dir: Path,
    intrinsics: Intrinsics,
    frames_by_split: Mapping[str, Sequence[FrameRecord]],
    fields: ToolFields,
) -> None:
    """Write the split files and nerfstudio's ``transforms.json`` (``frames_by_split`` holds
    "train" and "test"), each atomically; ``transforms.json`` last, so a folder that has it
    has all of them."""
    depth_fields = fields.depth_png.to_json()
    split_header = intrinsics.to_json() | fields.instant_ngp_placement() | depth_fields
    for file_split, views_split in SPLIT_FILES.items():
        document = split_header | {
            "frames": [_split_frame(frame) for frame in frames_by_split[views_split]]
        }
        _write_json(out_dir / f"transforms_{file_split}.json", document)
    nerfstudio = intrinsics.to_json() | depth_fields
    nerfstudio.pop("camera_angle_x")  # nerfstudio reads fl_x and fl_y
    for file_split, views_split in SPLIT_FILES.items():
        nerfstudio[f"{file_split}_filenames"] = [
            _image_path(frame) for frame in frames_by_split[views_split]
        ]
    nerfstudio["frames"] = [
        {
            "file_path": _image_path(frame),
            "depth_file_path": depth_png_path(frame),
            "transform_matrix": _matrix(frame),
        }
        for views_split in dict.fromkeys(SPLIT_FILES.values())
        for frame in frames_by_split[views_split]
    ]
    _write_json(out_dir / NERFSTUDIO_FILE, nerfstudio)


def _split_frame(frame: FrameRecord) -> dict[str, Any]:
    return {
        "file_path": frame.file_path,
        "depth_file_path": frame.depth_file_path,
        "depth_path": depth_png_path(frame),
        "transform_matrix": _matrix(frame),
    }


def _image_path(frame: FrameRecord) -> str:
    return f"{frame.file_path}.png"


def _matrix(frame: FrameRecord) -> list[list[float]]:
    return np.asarray(frame.camera_to_world, dtype=float).tolist()


def _write_json(path: Path, document: dict[str, Any]) -> None:
    atomic_write_bytes(path, json.dumps(document, indent=2, allow_nan=False).encode())
