"""What nerfstudio and instant-ngp read of a dataset folder (core.data.interop), checked without
them.

nerfstudio's parsers themselves run in tests/test_nerfstudio.py (optional venv); instant-ngp
needs a CUDA build, so its loader's convention (src/nerf_loader.cu: ``file_path`` resolved by
trying image extensions, ``depth_path`` as 16-bit single-channel images of the image's size,
``integer_depth_scale`` scene units a count, then times ``scale``; a world point p lands at
``cycle(p * scale + offset)``; depth is compared with ``|d| * depth`` along an unnormalised
camera ray ``d`` of unit camera-z extent, i.e. it is planar depth) is mirrored here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from core.data import dataset, interop
from core.data.cameras import BoundingSphere

# instant-ngp's supported_image_formats, in the order its resolve_path tries them
NGP_IMAGE_FORMATS = ("png", "jpg", "jpeg", "bmp", "gif", "tga", "pic", "pnm", "psd", "exr")


def _document(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("max_depth_m", "step_m"), [(8.0, 1e-3), (65.5, 1e-3), (65.6, 1e-2), (1000.0, 1e-1)]
)
def test_depth_step_is_a_millimetre_unless_the_range_needs_coarser(
    max_depth_m: float, step_m: float
) -> None:
    encoding = interop.DepthPng.for_max_depth(max_depth_m)
    assert encoding.step_m == pytest.approx(step_m)
    assert max_depth_m <= encoding.max_depth_m
    assert step_m == 1e-3 or max_depth_m > encoding.max_depth_m / 10  # no finer step would do


def test_depth_png_is_16_bit_single_channel_and_reads_back(tmp_path: Path) -> None:
    depth_m = np.array([[0.0, 1e-5, 1.2345], [7.0, 65.535, 0.0]], dtype=np.float32)
    frame = dataset.FrameRecord("train/r_000", "train/r_000_depth.exr", np.eye(4))
    encoding = interop.DepthPng(1e-3)
    interop.write_view_depth(tmp_path, frame, depth_m, encoding)
    path = tmp_path / "train" / "r_000_depth.png"
    with Image.open(path) as image:
        assert image.mode == "I;16" and image.size == (3, 2)
    read_m = dataset.read_depth_png(path, encoding.step_m)
    assert np.all((read_m == 0) == (depth_m == 0))  # a surface never reads as "no surface"
    surface = depth_m > 1e-3
    assert np.abs(read_m - depth_m)[surface].max() <= 0.5e-3 + 1e-6


def test_every_index_file_describes_the_same_views(synthetic_dataset: Path, tmp_path: Path) -> None:
    assert all((synthetic_dataset / name).is_file() for name in interop.INDEX_FILES)
    only_nerfstudio = Path(shutil.copytree(synthetic_dataset, tmp_path / "data"))
    for split in interop.SPLIT_FILES:
        (only_nerfstudio / f"transforms_{split}.json").unlink()
    step_m = _document(synthetic_dataset / "transforms.json")["integer_depth_scale"]
    for split, views in interop.SPLIT_FILES.items():
        ours = dataset.load_split(synthetic_dataset, split)
        same_views = dataset.load_split(synthetic_dataset, views)
        from_nerfstudio = dataset.load_split(only_nerfstudio, split)  # depth from the 16-bit PNG
        for other in (same_views, from_nerfstudio):
            assert other.names == ours.names and other.intrinsics == ours.intrinsics
            np.testing.assert_array_equal(other.camera_to_world, ours.camera_to_world)
            np.testing.assert_array_equal(other.rgba, ours.rgba)
        np.testing.assert_array_equal(from_nerfstudio.depth > 0, ours.depth > 0)
        assert np.abs(from_nerfstudio.depth - ours.depth).max() <= 0.5 * step_m + 1e-6


def test_nerfstudio_file_names_extensions_depth_and_our_split(synthetic_dataset: Path) -> None:
    document = _document(synthetic_dataset / "transforms.json")
    images = [frame["file_path"] for frame in document["frames"]]
    assert all(name.endswith(".png") and (synthetic_dataset / name).is_file() for name in images)
    for frame in document["frames"]:
        with Image.open(synthetic_dataset / frame["depth_file_path"]) as depth:
            assert depth.mode == "I;16"
    train, val, test = (document[f"{s}_filenames"] for s in ("train", "val", "test"))
    assert val == test and not set(train) & set(test) and sorted(train + test) == sorted(images)
    assert document["integer_depth_range_m"] == [
        document["integer_depth_scale"],
        pytest.approx(65535 * document["integer_depth_scale"]),
    ]


def _ngp_position(points_m: np.ndarray, scale: float, offset: np.ndarray) -> np.ndarray:
    """nerf_matrix_to_ngp on a position: scale and offset in world axes, then xyz <- yzx."""
    return (points_m * scale + offset)[..., [1, 2, 0]]


def test_instant_ngp_reads_images_depth_and_bounds_as_its_loader_does(
    synthetic_dataset: Path,
) -> None:
    for split in interop.SPLIT_FILES:
        json_path = synthetic_dataset / f"transforms_{split}.json"
        document = _document(json_path)
        scale, offset = document["scale"], np.asarray(document["offset"])
        step_m, aabb_scale = document["integer_depth_scale"], document["aabb_scale"]
        assert aabb_scale in [2**k for k in range(8)] and step_m > 0
        intrinsics = dataset.load_split(synthetic_dataset, split).intrinsics
        for frame in document["frames"]:
            base = synthetic_dataset / frame["file_path"]
            found = [f for f in NGP_IMAGE_FORMATS if base.with_suffix(f".{f}").exists()]
            assert found[:1] == ["png"]  # no extension: instant-ngp tries .png first
            with Image.open(synthetic_dataset / frame["depth_path"]) as depth_png:
                assert depth_png.mode == "I;16"  # load_stbi_16 with one channel
                assert depth_png.size == (intrinsics.width, intrinsics.height)
                counts = np.asarray(depth_png, dtype=np.float64).reshape(-1)
            planar_m = dataset.read_depth_exr(synthetic_dataset / frame["depth_file_path"])
            pose = np.asarray(frame["transform_matrix"])
            origins, directions = dataset.camera_rays(pose, intrinsics)  # = ngp's unnormalised d
            hit = counts > 0
            # instant-ngp's target distance, in its units: |d| * count * integer_depth_scale * scale
            length = np.linalg.norm(directions[hit], axis=1, keepdims=True)
            target = length * counts[hit, None] * step_m * scale
            unit_ngp = (directions[hit] / length)[:, [1, 2, 0]]
            ngp_hits = _ngp_position(origins[hit], scale, offset) + unit_ngp * target
            surface_m = origins[hit] + directions[hit] * planar_m.reshape(-1)[hit, None]
            error = np.linalg.norm(ngp_hits - _ngp_position(surface_m, scale, offset), axis=1)
            assert error.max() <= scale * step_m  # |d| * half a step; |d| < 2 at these lenses
            assert np.all(np.abs(ngp_hits - 0.5) <= aabb_scale / 2)  # inside the trained cube


@pytest.mark.parametrize(
    ("center", "radius_m", "aabb_scale"),
    [((0.0, 0.0, 0.0), 1.2, 1), ((100.0, -50.0, 3.0), 5.0, 4), ((0.0, 0.0, 0.0), 1000.0, 128)],
)
def test_instant_ngp_cube_is_the_smallest_that_holds_the_capture_sphere(
    center: tuple[float, float, float], radius_m: float, aabb_scale: int
) -> None:
    fields = interop.ToolFields(interop.DepthPng(1e-3), BoundingSphere(np.array(center), radius_m))
    placement = fields.instant_ngp_placement()
    assert placement["aabb_scale"] == aabb_scale
    scale, offset = placement["scale"], np.asarray(placement["offset"])
    sphere_center = _ngp_position(np.asarray(center), scale, offset)
    np.testing.assert_allclose(sphere_center, 0.5)
    assert 2 * radius_m * scale <= aabb_scale  # the whole sphere is inside the cube...
    assert aabb_scale == 1 or 2 * radius_m * scale > aabb_scale / 2  # ...and half would not do
