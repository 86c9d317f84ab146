"""The dataset folder format: reading, the camera convention, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.dataset import (
    Intrinsics,
    camera_rays,
    depth_point_cloud,
    load_split,
    read_depth_exr,
    write_depth_exr,
)
from core.data.synthetic import SHAPES
from core.errors import DatasetError


@pytest.fixture
def dataset_copy(synthetic_dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic_dataset, tmp_path / "data"))


def test_synthetic_dataset_loads(synthetic_dataset: Path) -> None:
    train = load_split(synthetic_dataset, "train")
    assert train.rgba.shape == (24, 32, 32, 4) and train.depth.shape == (24, 32, 32)
    assert 0.05 < train.rgba[..., 3].mean() < 0.9
    assert np.all((train.depth > 0) <= (train.rgba[..., 3] > 0))


def test_depth_unprojects_onto_the_shapes(synthetic_dataset: Path) -> None:
    """Planar depth along -Z times the unnormalised ray lands on a known surface."""
    points = depth_point_cloud(load_split(synthetic_dataset, "train"))
    distance = np.full(points.shape[0], np.inf)
    for shape in SHAPES:
        offset = np.abs(points - np.asarray(shape.center))
        if shape.kind == "sphere":
            surface = np.abs(np.linalg.norm(offset, axis=1) - shape.size)
        else:
            surface = np.abs(offset.max(axis=1) - shape.size)
        distance = np.minimum(distance, surface)
    assert np.median(distance) < 1e-4 and np.percentile(distance, 99) < 1e-3


def test_camera_convention_projects_a_point_to_the_predicted_pixel() -> None:
    intrinsics = Intrinsics(40, 30, fx=50.0, fy=50.0, cx=20.0, cy=15.0)
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 2.0, 3.0]  # camera at (1, 2, 3) looking down -Z, +Y up
    origins, directions = camera_rays(pose, intrinsics)
    # the ray through pixel (column 30, row 5) at planar depth 2
    point = origins[5 * 40 + 30] + directions[5 * 40 + 30] * 2.0
    expected = [1.0 + (30.5 - 20.0) / 50.0 * 2.0, 2.0 - (5.5 - 15.0) / 50.0 * 2.0, 1.0]
    np.testing.assert_allclose(point, expected)


def test_depth_exr_any_channel_name_and_no_surface_values(tmp_path: Path) -> None:
    import OpenEXR

    depth = np.array([[1.5, 0.0], [np.inf, 2e10]], dtype=np.float32)
    path = tmp_path / "d.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {"Z": depth}).write(str(path))
    np.testing.assert_array_equal(read_depth_exr(path), [[1.5, 0.0], [0.0, 0.0]])
    write_depth_exr(tmp_path / "e.exr", depth)
    np.testing.assert_array_equal(read_depth_exr(tmp_path / "e.exr"), [[1.5, 0.0], [0.0, 0.0]])


def _edit_transforms(dataset: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    path = dataset / "transforms_train.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: [d.pop("fl_x"), d.pop("camera_angle_x")], "missing field 'camera_angle_x'"),
        (lambda d: d.update(frames=[]), "non-empty list"),
        (
            lambda d: [d["frames"][0].pop(key) for key in ("depth_file_path", "depth_path")],
            "frame 0 has no depth file while other frames do",
        ),
        (lambda d: d["frames"][1].update(transform_matrix=[[1, 0], [0, 1]]), "4x4"),
        (lambda d: d.update(w=33), "transforms say 33x32"),
        (lambda d: d["frames"][2].update(file_path="train/nope"), "image file is missing"),
        (lambda d: d.update(integer_depth_scale="mm"), "integer_depth_scale must be a positive"),
    ],
)
def test_malformed_dataset_is_rejected_naming_the_file(
    dataset_copy: Path, edit, message: str
) -> None:  # type: ignore[no-untyped-def]
    _edit_transforms(dataset_copy, edit)
    with pytest.raises(DatasetError, match=message) as caught:
        load_split(dataset_copy, "train")
    assert str(dataset_copy) in str(caught.value)


def test_missing_or_broken_files_are_named(dataset_copy: Path) -> None:
    (dataset_copy / "transforms_test.json").unlink()
    assert len(load_split(dataset_copy, "test")) == 6  # nerfstudio's transforms.json names it
    (dataset_copy / "transforms.json").unlink()
    with pytest.raises(DatasetError, match=r"transforms_test\.json"):
        load_split(dataset_copy, "test")
    (dataset_copy / "transforms_train.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_split(dataset_copy, "train")
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(dataset_copy / "nowhere", "train")


def test_damaged_depth_file_is_named(dataset_copy: Path) -> None:
    depth = sorted((dataset_copy / "train").glob("*_depth.exr"))[0]
    depth.write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read depth EXR") as caught:
        load_split(dataset_copy, "train")
    assert depth.name in str(caught.value)


# --- datasets written by other tools ----------------------------------------------------------


def _pose(z_m: float) -> list[list[float]]:
    pose = np.eye(4)
    pose[2, 3] = z_m
    return pose.tolist()  # type: ignore[no-any-return]


def _write_image(path: Path, width: int = 8, height: int = 6, channels: int = 4) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, channels), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_counts(path: Path, counts: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(counts.astype(np.uint16)).save(path)


def test_reads_a_blendernerf_dataset(tmp_path: Path) -> None:
    """Extensions in ``file_path``, sizes as floats, distortion fields, no depth."""
    for split in ("train", "test"):
        _write_image(tmp_path / f"images_{split}" / "0001.png")
        document = {
            "camera_angle_x": 0.9,
            "camera_angle_y": 0.7,
            "fl_x": 9.5,
            "fl_y": 9.0,
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
            "cx": 4.0,
            "cy": 3.0,
            "w": 8.0,
            "h": 6.0,
            "aabb_scale": 16,
            "frames": [{"file_path": f"images_{split}/0001.png", "transform_matrix": _pose(4.0)}],
        }
        (tmp_path / f"transforms_{split}.json").write_text(json.dumps(document))
    train = load_split(tmp_path, "train")
    assert train.intrinsics == Intrinsics(8, 6, fx=9.5, fy=9.0, cx=4.0, cy=3.0)
    assert train.names == ["0001"] and train.rgba.shape == (1, 6, 8, 4)
    assert not train.depth.any()  # no depth: no surface known, the trainer says so


def test_reads_an_original_nerf_synthetic_dataset(tmp_path: Path) -> None:
    """Only ``camera_angle_x``, no size, ``./`` paths without extension, RGB images."""
    _write_image(tmp_path / "train" / "r_0.png", width=10, height=10, channels=3)
    document = {
        "camera_angle_x": 0.6911112070083618,
        "frames": [{"file_path": "./train/r_0", "rotation": 0.0, "transform_matrix": _pose(4.0)}],
    }
    (tmp_path / "transforms_train.json").write_text(json.dumps(document))
    train = load_split(tmp_path, "train")
    focal_px = 5.0 / np.tan(0.5 * 0.6911112070083618)
    assert train.intrinsics == Intrinsics(10, 10, focal_px, focal_px, 5.0, 5.0)
    assert np.all(train.rgba[..., 3] == 1.0) and not train.depth.any()


def test_reads_a_nerfstudio_dataset_with_millimetre_png_depth(tmp_path: Path) -> None:
    """One ``transforms.json`` with split lists; depth PNGs in nerfstudio's default millimetres."""
    counts = np.array([[0, 1, 1500, 65532]] * 2)
    frames = []
    for index in range(3):
        _write_image(tmp_path / "images" / f"frame_{index:05d}.png", width=4, height=2)
        _write_counts(tmp_path / "depths" / f"frame_{index:05d}.png", counts + index)
        frames.append(
            {
                "file_path": f"images/frame_{index:05d}.png",
                "depth_file_path": f"depths/frame_{index:05d}.png",
                "transform_matrix": _pose(index),
            }
        )
    document = {"fl_x": 3.0, "fl_y": 3.0, "cx": 2.0, "cy": 1.0, "w": 4, "h": 2, "frames": frames}
    document |= {"train_filenames": ["images/frame_00000.png", "./images/frame_00002.png"]}
    document |= {"test_filenames": ["images/frame_00001.png"]}
    (tmp_path / "transforms.json").write_text(json.dumps(document))
    train, test = load_split(tmp_path, "train"), load_split(tmp_path, "test")
    assert train.names == ["frame_00000", "frame_00002"] and test.names == ["frame_00001"]
    np.testing.assert_allclose(test.depth[0], (counts + 1) * 1e-3, rtol=1e-6)
    assert train.camera_to_world[1, 2, 3] == 2.0
    with pytest.raises(DatasetError, match=r"missing transforms_val\.json"):
        load_split(tmp_path, "val")  # no val_filenames either


def test_reads_instant_ngp_depth_path_with_its_integer_depth_scale(tmp_path: Path) -> None:
    _write_image(tmp_path / "train" / "a.png", width=4, height=2)
    _write_counts(tmp_path / "train" / "a_depth.png", np.array([[0, 10, 20, 30]] * 2))
    document = {
        "fl_x": 3.0,
        "w": 4,
        "h": 2,
        "integer_depth_scale": 0.01,
        "frames": [{"file_path": "train/a", "depth_path": "train/a_depth.png"}],
    }
    document["frames"][0]["transform_matrix"] = _pose(1.0)
    (tmp_path / "transforms_train.json").write_text(json.dumps(document))
    np.testing.assert_allclose(load_split(tmp_path, "train").depth[0, 0], [0, 0.1, 0.2, 0.3])
    _write_image(tmp_path / "train" / "a_depth.png", width=4, height=2, channels=3)
    with pytest.raises(DatasetError, match="depth PNG must be single-channel") as caught:
        load_split(tmp_path, "train")
    assert "a_depth.png" in str(caught.value)
