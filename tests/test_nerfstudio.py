"""nerfstudio's own parsers open our datasets unedited: views per split, intrinsics, depth.

Needs ``.venv-nerfstudio`` (``make test-nerfstudio`` builds it with nerfstudio 1.1.5 and runs
this file); without it the tests are skipped. ``nerfstudio_probe.py`` runs in that venv as a
subprocess, loads a dataset with ``blender-data`` and ``nerfstudio-data`` and the depth dataset
``depth-nerfacto`` trains on, and this side compares the answer with ``core.data.dataset``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
NERFSTUDIO_PYTHON = REPO_DIR / ".venv-nerfstudio" / "bin" / "python"
PROBE = Path(__file__).with_name("nerfstudio_probe.py")
for _path in (REPO_DIR, REPO_DIR / "addon"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import blender_scenes as scenes  # noqa: E402
import bpy  # noqa: E402
from vbnf_blender import capture  # noqa: E402

from core import dataset  # noqa: E402

pytestmark = pytest.mark.skipif(
    not NERFSTUDIO_PYTHON.is_file(), reason="no .venv-nerfstudio (make test-nerfstudio)"
)
SPLIT_VIEWS = {"train": "train", "val": "test", "test": "test"}  # nerfstudio split -> ours


@pytest.fixture(scope="module")
def captured_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenes.reset_blender()
    scenes.suzanne_and_cube_scene()
    settings = capture.CaptureSettings(
        train_views=5, test_views=2, resolution_px=24, samples=2, denoise=False
    )
    return capture.capture_dataset(bpy.context.scene, tmp_path_factory.mktemp("capture"), settings)


def _probe(data_dir: Path, tmp_path: Path) -> dict[str, Any]:
    report = tmp_path / "nerfstudio.json"
    command = [str(NERFSTUDIO_PYTHON), str(PROBE), str(data_dir), str(report)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(report.read_text())  # type: ignore[no-any-return]


@pytest.mark.blender
@pytest.mark.parametrize("source", ["capture", "synth"])
def test_nerfstudio_parsers_read_our_views_intrinsics_and_depth(
    source: str,
    captured_dataset: Path,
    synthetic_dataset: Path,
    tmp_path: Path,
) -> None:
    data_dir = captured_dataset if source == "capture" else synthetic_dataset
    report = _probe(data_dir, tmp_path)
    step_m = json.loads((data_dir / "transforms.json").read_text())["integer_depth_scale"]
    for split, ours_split in SPLIT_VIEWS.items():
        ours = dataset.load_split(data_dir, ours_split)
        files = sorted(str(data_dir / ours_split / f"{name}.png") for name in ours.names)
        for parser in ("blender-data", "nerfstudio-data"):
            seen = report[parser][split]
            assert sorted(seen["images"]) == files, (parser, split)
            intrinsics = ours.intrinsics
            expected = {
                "fx": intrinsics.fx,
                "fy": intrinsics.fy,
                "cx": intrinsics.cx,
                "cy": intrinsics.cy,
                "width": intrinsics.width,
                "height": intrinsics.height,
            }
            for key, value in expected.items():
                np.testing.assert_allclose(seen[key], value, rtol=1e-6, err_msg=f"{parser} {key}")
        # The Blender parser keeps our poses as they are; nerfstudio-data re-centres them.
        blender = report["blender-data"][split]
        order = np.argsort(blender["images"])
        np.testing.assert_allclose(
            np.asarray(blender["camera_to_world"])[order], ours.camera_to_world[:, :3], atol=1e-5
        )
        # Depth arrives, in scene units once the parser's pose scale is divided out.
        depth = report["nerfstudio-data"][split]
        order = np.argsort(depth["images"])
        theirs = np.asarray(depth["depth"])[order]
        surface = ours.depth > 0
        assert surface.mean() > 0.05
        assert np.all(theirs[~surface] == 0)
        assert np.abs(theirs[surface] - ours.depth[surface]).max() <= 0.5 * step_m + 1e-5
