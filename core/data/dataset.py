"""RGB-D datasets in the NeRF-synthetic / instant-ngp folder convention.

A dataset is a folder with ``transforms_train.json`` and ``transforms_test.json``. Each holds the
pinhole intrinsics (``camera_angle_x``, ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``, ``h``) and a
list of ``frames``; a frame names an 8-bit sRGB RGBA PNG (``file_path``, relative, without
extension), a 4x4 camera-to-world matrix (Blender/OpenGL camera: looks down -Z, +Y up) and a
single-channel float32 EXR of planar depth along the camera's -Z axis (``depth_file_path``,
relative, with extension; 0, inf or >= 1e9 where no surface was hit).

This module reads that layout and writes each view's files; ``core.data.interop`` writes the index
files (the split files above, and what nerfstudio and instant-ngp need beside them). The Cycles
capture, the built-in synthetic scene and the trainer all go through the two, so the convention
cannot drift between them.

The reader also takes what other writers produce: ``file_path`` with its extension (BlenderNeRF,
nerfstudio), only ``camera_angle_x`` and no ``w``/``h`` (the original NeRF-synthetic scenes: the
size comes from the images), depth as a 16-bit PNG (``integer_depth_scale`` scene units a step,
else nerfstudio's millimetres) or no depth at all (zeros: no surface known), and a split named by
``<split>_filenames`` in nerfstudio's ``transforms.json`` where no split file exists.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import DatasetError
from . import validation

SPLITS = ("train", "test")
NO_SURFACE_DEPTH = 1e9  # depths at or above this (and 0, inf, nan) mean "no surface"
# nerfstudio's depth_unit_scale_factor: a depth PNG counts millimetres unless its file says not
DEFAULT_DEPTH_STEP_M = 1e-3
NERFSTUDIO_FILE = "transforms.json"


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
    with _png(path, "image", expected_hw) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0


def read_depth_png(
    path: Path, step_m: float, expected_hw: tuple[int, int] | None = None
) -> np.ndarray:
    """Read a single-channel (16-bit) depth PNG as planar depth: count * ``step_m``, 0 = none.
    With ``expected_hw`` (height, width) its size is checked before it is decoded."""
    with _png(path, "depth", expected_hw) as image:
        if image.mode not in ("I;16", "I", "L"):
            raise DatasetError(f"depth PNG must be single-channel, found {image.mode}", path)
        counts = np.asarray(image, dtype=np.float64)
    return (counts * step_m).astype(np.float32)


def _png_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image, from its header alone."""
    with _png(path, "image", None) as image:
        return image.height, image.width


@contextmanager
def _png(path: Path, what: str, expected_hw: tuple[int, int] | None) -> Iterator[Any]:
    """The opened (not yet decoded) image at ``path``, its size checked against
    ``expected_hw``; a file that is not one, or one too large to decode, is a DatasetError."""
    from PIL import Image, UnidentifiedImageError

    validation.regular_file(path, f"{what} file")
    try:
        with Image.open(path) as image:
            if expected_hw is not None:
                _check_size(path, what, (image.height, image.width), expected_hw)
            yield image
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{what} is too large to decode ({error})", path) from error
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"cannot read {what} PNG ({error})", path) from error


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
    if not dataset_dir.is_dir():
        raise DatasetError("dataset folder does not exist", dataset_dir)
    json_path, document, frames = _split_frames(dataset_dir, split)
    parsed = [_parse_frame(frame, n, json_path, dataset_dir) for n, frame in enumerate(frames)]
    with_depth = [depth_path is not None for _, depth_path, _ in parsed]
    if any(with_depth) and not all(with_depth):
        number = with_depth.index(False)
        raise DatasetError(f"frame {number} has no depth file while other frames do", json_path)
    first_image = parsed[0][0]
    intrinsics = _parse_intrinsics(document, json_path, _png_size(first_image))
    expected = (intrinsics.height, intrinsics.width)
    rgba = [read_rgba_png(image_path, expected) for image_path, _, _ in parsed]
    depth_step_m = _depth_step_m(document, json_path)
    depth = []
    for depth_path in (depth_path for _, depth_path, _ in parsed):
        depth_map = _read_depth(depth_path, depth_step_m, expected)
        if depth_path is not None:  # the channel's own shape, beyond its header's
            _check_size(depth_path, "depth", depth_map.shape, expected)
        depth.append(depth_map)
    poses = np.stack([pose for _, _, pose in parsed])
    names = [image_path.stem for image_path, _, _ in parsed]
    return Split(intrinsics, np.stack(rgba), np.stack(depth), poses, names)


def _split_frames(dataset_dir: Path, split: str) -> tuple[Path, dict[str, Any], list[Any]]:
    """The file describing ``split``, its document and the split's frames: the split file, or
    nerfstudio's ``transforms.json`` where that names the split's images."""
    split_path = dataset_dir / f"transforms_{split}.json"
    combined_path = dataset_dir / NERFSTUDIO_FILE
    if split_path.is_file():
        document = _read_json(split_path)
        return split_path, document, _frame_list(document, split_path)
    if combined_path.is_file():
        document = _read_json(combined_path)
        names = document.get(f"{split}_filenames")
        if isinstance(names, list):
            wanted = {_relative_name(name) for name in names}
            frames = _frame_list(document, combined_path)
            chosen = [f for f in frames if _relative_name(_field(f, "file_path")) in wanted]
            if not chosen:
                raise DatasetError(f"no frame is named in '{split}_filenames'", combined_path)
            return combined_path, document, chosen
    raise DatasetError(f"missing transforms_{split}.json", dataset_dir)


def _depth_step_m(document: dict[str, Any], json_path: Path) -> float:
    """Scene units a count of a depth PNG: ``integer_depth_scale``, else nerfstudio's mm."""
    value = document.get("integer_depth_scale", DEFAULT_DEPTH_STEP_M)
    if not isinstance(value, int | float) or not 0 < value < math.inf:
        message = f"integer_depth_scale must be a positive number, got {value!r}"
        raise DatasetError(message, json_path)
    return float(value)


def _read_json(path: Path) -> dict[str, Any]:
    document = validation.read_json(path)
    if not isinstance(document, dict):
        raise DatasetError("top level must be a JSON object", path)
    return document


def _frame_list(document: dict[str, Any], json_path: Path) -> list[Any]:
    frames = document.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DatasetError("'frames' must be a non-empty list", json_path)
    return frames


def _field(frame: Any, key: str) -> Any:
    return frame.get(key) if isinstance(frame, dict) else None


def _relative_name(name: Any) -> str:
    """``./train/a.png`` and ``train/a.png`` name the same file."""
    return str(PurePosixPath(str(name)))


def _read_depth(depth_path: Path | None, step_m: float, shape: tuple[int, int]) -> np.ndarray:
    if depth_path is None:
        return np.zeros(shape, dtype=np.float32)  # a dataset without depth: no surface known
    suffix = depth_path.suffix.lower()
    if suffix == ".exr":
        return read_depth_exr(depth_path, shape)
    if suffix == ".png":
        return read_depth_png(depth_path, step_m, shape)
    raise DatasetError(f"depth must be an .exr or a 16-bit .png, not '{suffix}'", depth_path)


def _parse_intrinsics(
    document: dict[str, Any], json_path: Path, image_size: tuple[int, int]
) -> Intrinsics:
    """Intrinsics as written, with the NeRF-synthetic fallbacks: the size of the images, the
    focal length from ``camera_angle_x``, square pixels, the principal point at the centre.
    Each value must be of its type and range (``w: 32.7`` is not 32, ``cx: NaN`` no centre)."""
    width = validation.integer(document, "w", json_path) if "w" in document else image_size[1]
    height = validation.integer(document, "h", json_path) if "h" in document else image_size[0]
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
) -> tuple[Path, Path | None, np.ndarray]:
    """The frame's image, its depth file (None: no depth) and its pose. The float EXR
    (``depth_file_path``) wins over instant-ngp's 16-bit ``depth_path`` where both are given."""
    where = f"frame {number}"
    if not isinstance(frame, dict):
        raise DatasetError(f"{where} is not an object", json_path)
    for key in ("file_path", "transform_matrix"):
        if key not in frame:
            raise DatasetError(f"{where} has no '{key}'", json_path)
    try:
        pose = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise DatasetError(f"{where}: transform_matrix is not numeric", json_path) from error
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise DatasetError(f"{where}: transform_matrix must be a finite 4x4 matrix", json_path)
    file_path = frame["file_path"]
    image_path = validation.inside(dataset_dir, file_path, f"{where} file_path", json_path)
    if not image_path.exists():  # NeRF-synthetic names images without their extension
        image_path = validation.inside(
            dataset_dir, f"{file_path}.png", f"{where} file_path", json_path
        )
    depth_field = "depth_file_path" if "depth_file_path" in frame else "depth_path"
    depth_name = frame.get(depth_field)
    depth_path = (
        None
        if depth_name is None
        else validation.inside(dataset_dir, depth_name, f"{where} {depth_field}", json_path)
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
