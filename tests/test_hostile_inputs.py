"""Hostile datasets and checkpoints: every case is one error naming the file and the field,
before any work, and frame paths never leave the dataset folder."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from core_cli import run_core_here

from core.asset.octree import SparseOctree
from core.data.dataset import load_split
from core.errors import DatasetError, VbnfError
from core.neural.checkpoint import (
    TrainState,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from core.neural.field import FieldConfig, RadianceField
from core.neural.trainer import TrainOptions, make_optimizer


@pytest.fixture
def dataset(synthetic_dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synthetic_dataset, tmp_path / "data"))


def edit(dataset: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    path = dataset / "transforms_train.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))  # allow_nan: NaN is written as the bare token
    return path


def huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` (no pixel data follows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def first_frame(document: dict[str, Any]) -> dict[str, Any]:
    frame: dict[str, Any] = document["frames"][0]
    return frame


INTRINSICS_CASES: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (
        lambda d: (d.pop("fl_x"), d.update(camera_angle_x=0)),
        r"camera_angle_x must lie in \(0, pi\)",
    ),
    (lambda d: (d.pop("fl_x"), d.update(camera_angle_x="wide")), "camera_angle_x must be a finite"),
    (lambda d: d.update(cx=float("nan")), "cx must be a finite number, got nan"),
    (lambda d: d.update(cy=float("inf")), "cy must be a finite number"),
    (lambda d: d.update(w=32.7), "w must be a whole number, got 32.7"),
    (lambda d: d.update(w=True), "w must be a whole number, got True"),
    (lambda d: d.update(h="32"), "h must be a whole number"),
    (lambda d: d.update(fl_y=-3), "focal lengths must be positive"),
    (lambda d: first_frame(d).update(file_path="../outside"), "leads outside the dataset"),
    (lambda d: first_frame(d).update(file_path="/etc/passwd"), "is absolute"),
    (lambda d: first_frame(d).update(depth_file_path=7), "must be a non-empty path string"),
]


@pytest.mark.parametrize(("change", "message"), INTRINSICS_CASES)
def test_bad_transforms_values_are_named(
    dataset: Path, change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    json_path = edit(dataset, change)
    with pytest.raises(DatasetError, match=message) as caught:
        load_split(dataset, "train")
    assert str(caught.value).startswith(f"{json_path}: ")


def test_json_nested_too_deep_is_one_line(dataset: Path) -> None:
    (dataset / "transforms_train.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DatasetError, match="nested too deep"):
        load_split(dataset, "train")


def frame_files(dataset: Path) -> tuple[Path, Path]:
    frame = json.loads((dataset / "transforms_train.json").read_text())["frames"][0]
    return dataset / f"{frame['file_path']}.png", dataset / frame["depth_file_path"]


@pytest.mark.parametrize(
    ("side_px", "message"),
    [
        (30000, "image is too large to decode"),
        (9000, "image is 9000x9000, transforms say 32x32"),
    ],
)
def test_a_huge_png_is_refused_before_it_is_decoded(
    dataset: Path, side_px: int, message: str
) -> None:
    image, _ = frame_files(dataset)
    huge_png(image, side_px, side_px)
    with pytest.raises(DatasetError, match=message) as caught:
        load_split(dataset, "train")
    assert str(caught.value).startswith(f"{image}: ") and "\n" not in str(caught.value)


def test_a_depth_of_another_size_is_refused_from_its_header(dataset: Path) -> None:
    from core.data.dataset import write_depth_exr

    _, depth = frame_files(dataset)
    write_depth_exr(depth, np.ones((5, 7), np.float32))
    with pytest.raises(DatasetError, match="depth is 7x5, transforms say 32x32"):
        load_split(dataset, "train")


def test_a_link_out_of_the_dataset_is_refused(dataset: Path, tmp_path: Path) -> None:
    image, _ = frame_files(dataset)
    outside = tmp_path / "outside.png"
    shutil.copy(image, outside)
    image.unlink()
    image.symlink_to(outside)
    with pytest.raises(DatasetError, match="leads outside the dataset folder"):
        load_split(dataset, "train")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: os.mkfifo(path), "is a named pipe"),
        (lambda path: path.mkdir(), "is a folder"),
        (lambda path: path.symlink_to("/dev/zero"), "leads outside"),
    ],
    ids=["fifo", "folder", "dev-zero"],
)
def test_special_files_as_frames_are_named_for_what_they_are(
    dataset: Path, make: Callable[[Path], Any], message: str
) -> None:
    _, depth = frame_files(dataset)
    depth.unlink()
    make(depth)
    with pytest.raises(DatasetError, match=message) as caught:
        load_split(dataset, "train")
    assert depth.name in str(caught.value)


def test_a_device_inside_the_folder_is_named_as_a_device(dataset: Path) -> None:
    from core.data.validation import regular_file

    with pytest.raises(DatasetError, match="depth file is a device"):
        regular_file(Path("/dev/zero"), "depth file")


def test_the_command_line_reports_a_bad_dataset_in_one_line(dataset: Path, tmp_path: Path) -> None:
    edit(dataset, lambda d: d.update(cx=float("nan")))
    result = run_core_here("train", dataset, "-o", tmp_path / "run")
    assert result.returncode == 1
    assert result.stderr.strip().endswith("cx must be a finite number, got nan")
    assert not (tmp_path / "run").exists()


def tiny_checkpoint(path: Path, config: FieldConfig | None = None) -> RadianceField:
    points = np.random.default_rng(0).uniform(-0.5, 0.5, size=(40, 3))
    config = config or FieldConfig(min_level=1, max_level=3, feature_dim=4)
    field = RadianceField(
        SparseOctree.from_points(points, config.max_level), config, 1.0, np.zeros(3)
    )
    optimizer = make_optimizer(field, TrainOptions())
    for parameter in field.parameters():  # one step, so the optimiser has per-parameter state
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    save_checkpoint(path, field, optimizer, TrainState(step=3), {})
    return field


def rewritten(path: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    payload = torch.load(path, weights_only=True)
    change(payload)
    torch.save(payload, path)
    return path


def first_weight(payload: dict[str, Any]) -> str:
    return next(iter(payload["model"]))


CHECKPOINT_CASES: list[tuple[Callable[[dict[str, Any]], Any], str]] = [
    (lambda p: p.pop("state"), "field 'state' is missing"),
    (lambda p: p.update(scale=float("nan")), "field 'scale' must be finite and positive"),
    (lambda p: p.update(offset=[0.0, 1.0]), "field 'offset' must be 3 finite numbers"),
    (lambda p: p["state"].update(step=-4), "field 'state' must hold counters >= 0"),
    (lambda p: p["state"].update(bogus=1), "field 'state' is not a training state"),
    (
        lambda p: p["model"].update({first_weight(p): torch.zeros(2, 2)}),
        "field 'model' does not fit",
    ),
    (lambda p: p["model"].pop(first_weight(p)), "field 'model' does not fit"),
    (lambda p: p["model"][first_weight(p)].fill_(float("nan")), "non-finite weights"),
    (lambda p: p.update(finest_cells=torch.full((3, 3), 99)), "field 'finest_cells' must be"),
    (
        lambda p: p.update(finest_cells=torch.zeros(3, 2, dtype=torch.int32)),
        "'finest_cells' must be",
    ),
]


@pytest.mark.parametrize(("change", "message"), CHECKPOINT_CASES)
def test_damaged_checkpoints_name_the_field(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    path = tmp_path / "checkpoint.pt"
    tiny_checkpoint(path)
    rewritten(path, change)
    with pytest.raises(VbnfError, match=message) as caught:
        load_checkpoint(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("other", "message"),
    [
        (FieldConfig(min_level=1, max_level=2, feature_dim=4), "does not fit the model"),
        (FieldConfig(min_level=1, max_level=3, feature_dim=8), "for a parameter of shape"),
    ],
    ids=["other-groups", "other-shapes"],
)
def test_a_foreign_optimizer_state_is_refused(
    tmp_path: Path, other: FieldConfig, message: str
) -> None:
    ours = tiny_checkpoint(tmp_path / "ours.pt")
    tiny_checkpoint(tmp_path / "other.pt", other)
    foreign = load_checkpoint(tmp_path / "other.pt").optimizer_state
    with pytest.raises(VbnfError, match=f"field 'optimizer' .*{message}") as caught:
        restore_optimizer(make_optimizer(ours, TrainOptions()), foreign, tmp_path / "ours.pt")
    assert str(caught.value).startswith(f"{tmp_path / 'ours.pt'}: ")
