"""RGB-D datasets in the NeRF-synthetic / instant-ngp folder convention.

A dataset is a folder with ``transforms_train.json`` and ``transforms_test.json``. Each holds the
pinhole intrinsics (``camera_angle_x``, ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``) and a
list of ``frames``; a frame names an 8-bit sRGB RGBA PNG (``file_path``, relative, without
extension), a 4x4 camera-to-world matrix (Blender/OpenGL camera: looks down -Z, +Y up) and a
single-channel float32 EXR of planar depth along the camera's -Z axis (``depth_file_path``,
relative, with extension; 0, inf or >= 1e9 where no surface was hit).

This module is the one place that reads and writes that layout: the Cycles capture, the built-in
synthetic scene and the trainer all go through it, so the convention cannot drift between them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path, atomic_write_bytes
from ..errors import DatasetError
from . import validation

SPLITS = ("train", "test")
NO_SURFACE_DEPTH = 1e9  # depths at or above this (and 0, inf, nan) mean "no surface"


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels; (cx, cy) measured from the image's top-left corner."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @property
    def camera_angle_x(self) -> float:
        return 2.0 * math.atan(0.5 * self.width / self.fx)

    def to_json(self) -> dict[str, Any]:
        return {
            "camera_angle_x": self.camera_angle_x,
            "fl_x": self.fx,
            "fl_y": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "w": self.width,
            "h": self.height,
        }


@dataclass(frozen=True)
class FrameRecord:
    """One frame's entry in a transforms file, as written by a capture."""

    file_path: str
    depth_file_path: str
    camera_to_world: np.ndarray  # [4, 4]


@dataclass
class Split:
    """All views of one split, loaded into memory (datasets here are tens of small images)."""

    intrinsics: Intrinsics
    rgba: np.ndarray  # [N, H, W, 4] float32 in [0, 1], sRGB, straight (non-premultiplied) alpha
    depth: np.ndarray  # [N, H, W] float32 planar depth, 0 where no surface
    camera_to_world: np.ndarray  # [N, 4, 4] float64
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)


def write_transforms(path: Path, intrinsics: Intrinsics, frames: Sequence[FrameRecord]) -> None:
    """Write one ``transforms_<split>.json`` atomically (temporary file, then rename)."""
    document = intrinsics.to_json()
    document["frames"] = [
        {
            "file_path": frame.file_path,
            "depth_file_path": frame.depth_file_path,
            "transform_matrix": np.asarray(frame.camera_to_world, dtype=float).tolist(),
        }
        for frame in frames
    ]
    atomic_write_bytes(path, json.dumps(document, indent=2).encode())


def write_depth_exr(path: Path, depth: np.ndarray) -> None:
    """Write planar depth as a single-channel float32 EXR (channel ``V``, as Blender writes it)."""
    import OpenEXR

    pixels = np.ascontiguousarray(depth, dtype=np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}

    def verify(temporary: Path) -> str | None:  # OpenEXR can fail without raising
        try:
            written = OpenEXR.File(str(temporary)).channels()["V"].pixels
        except Exception as error:  # any failure to read back is the answer
            return f"it does not read back: {str(error).replace(str(temporary), path.name)}"
        return None if np.shape(written) == pixels.shape else "it reads back at another size"

    with atomic_path(path, verify) as temporary:
        try:
            OpenEXR.File(header, {"V": pixels}).write(str(temporary))
        except RuntimeError as error:  # OpenEXR's only type, e.g. for a full disk
            raise OSError(str(error).replace(str(temporary), path.name)) from error


def read_depth_exr(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a single-channel depth EXR whatever its channel is called; no-surface pixels -> 0.
    With ``expected_hw`` (height, width) its size is checked from the header, before any pixel
    is allocated."""
    import OpenEXR

    validation.regular_file(path, "depth file")
    if expected_hw is not None:
        _check_size(path, "depth", _exr_size(path), expected_hw)
    try:
        channels = OpenEXR.File(str(path)).channels()
    except Exception as error:  # OpenEXR raises bare RuntimeErrors for damaged files
        raise DatasetError(f"cannot read depth EXR ({error})", path) from error
    if len(channels) != 1:
        raise DatasetError(
            f"depth EXR must have exactly one channel, found {sorted(channels)}", path
        )
    depth = np.asarray(next(iter(channels.values())).pixels, dtype=np.float32)
    if depth.ndim != 2:
        raise DatasetError(f"depth EXR channel has shape {depth.shape}, expected (h, w)", path)
    no_surface = ~np.isfinite(depth) | (depth <= 0) | (depth >= NO_SURFACE_DEPTH)
    return np.where(no_surface, 0.0, depth).astype(np.float32)


def _exr_size(path: Path) -> tuple[int, int]:
    """(height, width) of an EXR from its header alone."""
    import OpenEXR

    try:
        low, high = OpenEXR.File(str(path), header_only=True).header()["dataWindow"]
    except Exception as error:  # OpenEXR raises bare RuntimeErrors for damaged files
        raise DatasetError(f"cannot read depth EXR ({error})", path) from error
    return int(high[1] - low[1] + 1), int(high[0] - low[0] + 1)


def write_rgba_png(path: Path, rgba: np.ndarray) -> None:
    """Write an [H, W, 4] float image in [0, 1] as 8-bit RGBA PNG."""
    from PIL import Image

    pixels = np.clip(np.rint(np.asarray(rgba) * 255.0), 0, 255).astype(np.uint8)

    def verify(temporary: Path) -> str | None:
        try:
            with Image.open(temporary) as image:
                image.verify()  # every chunk present, every CRC right
                size = image.size
        except Exception as error:  # any failure to read back is the answer
            return f"it does not read back ({error})"
        return None if size == (pixels.shape[1], pixels.shape[0]) else "it has another size"

    with atomic_path(path, verify) as temporary:
        Image.fromarray(pixels, mode="RGBA" if pixels.shape[-1] == 4 else "RGB").save(temporary)


def read_rgba_png(path: Path, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a PNG as [H, W, 4] float32 in [0, 1]; RGB images get an opaque alpha. With
    ``expected_hw`` (height, width) its size is checked before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    validation.regular_file(path, "image file")
    try:
        with Image.open(path) as image:
            if expected_hw is not None:
                _check_size(path, "image", (image.height, image.width), expected_hw)
            pixels = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except Image.DecompressionBombError as error:
        raise DatasetError(f"image is too large to decode ({error})", path) from error
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"cannot read image ({error})", path) from error
    return pixels


def _check_size(
    path: Path, what: str, found_hw: tuple[int, ...], expected_hw: tuple[int, int]
) -> None:
    if found_hw != expected_hw:
        raise DatasetError(
            f"{what} is {_size(found_hw)}, transforms say {_size(expected_hw)}", path
        )


def _size(height_width: tuple[int, ...]) -> str:
    return f"{height_width[1]}x{height_width[0]}"


def load_split(dataset_dir: Path, split: str) -> Split:
    """Load one split, checking every field so a malformed folder fails with its file named."""
    dataset_dir = Path(dataset_dir)
    json_path = dataset_dir / f"transforms_{split}.json"
    if not dataset_dir.is_dir():
        raise DatasetError("dataset folder does not exist", dataset_dir)
    if not json_path.exists():
        raise DatasetError(f"missing transforms_{split}.json", dataset_dir)
    document = validation.read_json(json_path)
    if not isinstance(document, dict):
        raise DatasetError("top level must be a JSON object", json_path)
    intrinsics = _parse_intrinsics(document, json_path)
    frames = document.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError("'frames' must be a non-empty list", json_path)

    rgba, depth, poses, names = [], [], [], []
    for number, frame in enumerate(frames):
        image_path, depth_path, pose = _parse_frame(frame, number, json_path, dataset_dir)
        expected = (intrinsics.height, intrinsics.width)
        image = read_rgba_png(image_path, expected)
        depth_map = read_depth_exr(depth_path, expected)
        _check_size(depth_path, "depth", depth_map.shape, expected)  # the channel, not the header
        rgba.append(image)
        depth.append(depth_map)
        poses.append(pose)
        names.append(image_path.stem)
    return Split(intrinsics, np.stack(rgba), np.stack(depth), np.stack(poses), names)


def _parse_intrinsics(document: dict[str, Any], json_path: Path) -> Intrinsics:
    width = validation.integer(document, "w", json_path)
    height = validation.integer(document, "h", json_path)
    if width <= 0 or height <= 0 or width * height > 1 << 26:
        raise DatasetError(f"implausible image size {width}x{height}", json_path)
    if document.get("fl_x") is None:
        angle = validation.number(document, "camera_angle_x", json_path, None)
        if not 0.0 < angle < math.pi:
            raise DatasetError(f"camera_angle_x must lie in (0, pi), got {angle}", json_path)
        fx = 0.5 * width / math.tan(0.5 * angle)
    else:
        fx = validation.number(document, "fl_x", json_path, None)
    fy = validation.number(document, "fl_y", json_path, fx)
    cx = validation.number(document, "cx", json_path, 0.5 * width)
    cy = validation.number(document, "cy", json_path, 0.5 * height)
    if not (fx > 0 and fy > 0):
        raise DatasetError(f"focal lengths must be positive, got fl_x={fx}, fl_y={fy}", json_path)
    return Intrinsics(width, height, fx, fy, cx, cy)


def _parse_frame(
    frame: Any, number: int, json_path: Path, dataset_dir: Path
) -> tuple[Path, Path, np.ndarray]:
    where = f"frame {number}"
    if not isinstance(frame, dict):
        raise DatasetError(f"{where} is not an object", json_path)
    for key in ("file_path", "depth_file_path", "transform_matrix"):
        if key not in frame:
            raise DatasetError(f"{where} has no '{key}'", json_path)
    try:
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{where}: transform_matrix is not numeric", json_path) from error
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise DatasetError(f"{where}: transform_matrix must be a finite 4x4 matrix", json_path)
    file_path = frame["file_path"]
    image_path = validation.inside(
        dataset_dir,
        f"{file_path}.png" if isinstance(file_path, str) else file_path,
        f"{where} file_path",
        json_path,
    )
    depth_path = validation.inside(
        dataset_dir, frame["depth_file_path"], f"{where} depth_file_path", json_path
    )
    return image_path, depth_path, pose


def camera_rays(
    camera_to_world: np.ndarray, intrinsics: Intrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel centres of one camera, as [H*W, 3] origins and directions.

    Directions are *not* normalised: they have unit extent along the camera's -Z axis, so
    ``origin + direction * planar_depth`` is the surface point, and ``t`` along a ray equals
    planar depth. Row-major pixel order (top row first), matching the images.
    """
    columns, rows = np.meshgrid(
        np.arange(intrinsics.width, dtype=np.float64) + 0.5,
        np.arange(intrinsics.height, dtype=np.float64) + 0.5,
    )
    camera_dirs = np.stack(
        [
            (columns - intrinsics.cx) / intrinsics.fx,
            -(rows - intrinsics.cy) / intrinsics.fy,
            -np.ones_like(columns),
        ],
        axis=-1,
    ).reshape(-1, 3)
    rotation = camera_to_world[:3, :3]
    directions = camera_dirs @ rotation.T
    origins = np.broadcast_to(camera_to_world[:3, 3], directions.shape).copy()
    return origins, directions


def depth_point_cloud(split: Split) -> np.ndarray:
    """Unproject every pixel with a surface into world space: the RGB-D octree initialisation."""
    points = []
    for index in range(len(split)):
        origins, directions = camera_rays(split.camera_to_world[index], split.intrinsics)
        depth = split.depth[index].reshape(-1).astype(np.float64)
        hit = depth > 0
        points.append(origins[hit] + directions[hit] * depth[hit, None])
    return np.concatenate(points, axis=0)
