"""The dataset folder format: reading, the camera convention, and clear errors on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

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
        (lambda d: d.pop("w"), "missing field 'w'"),
        (lambda d: d.update(frames=[]), "non-empty list"),
        (lambda d: d["frames"][0].pop("depth_file_path"), "has no 'depth_file_path'"),
        (lambda d: d["frames"][1].update(transform_matrix=[[1, 0], [0, 1]]), "4x4"),
        (lambda d: d.update(w=33), "transforms say 33x32"),
        (lambda d: d["frames"][2].update(file_path="train/nope"), "image file is missing"),
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
    with pytest.raises(DatasetError, match=r"transforms_test\.json"):
        (dataset_copy / "transforms_test.json").unlink()
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
