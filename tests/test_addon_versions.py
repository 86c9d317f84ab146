"""The built extension on each Blender it admits: 4.2 LTS, 4.5 LTS and 5.0.

``make test-lts`` runs the tests marked ``lts`` (this file and the capture's) with the real
bpy 4.2 and 4.5 wheels, ``make test`` with 5.0's. Training runs in a separate Python, as for a
studio whose Blender has no torch (the LTS wheels' venvs have none): ``VBNF_TRAINING_PYTHON``,
by default this one. A Blender without the ``openvdb`` Python module (4.2) still bakes and
writes the asset; it says in one line that the preview needs a newer Blender.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import addon_extension  # noqa: E402
import blender_scenes as scenes  # noqa: E402
import bpy  # noqa: E402

pytestmark = [pytest.mark.blender, pytest.mark.lts]

TRAINING_PYTHON = os.environ.get("VBNF_TRAINING_PYTHON", sys.executable)
TINY = {
    "views": 8,
    "resolution": 16,
    "samples": 1,
    "min_level": 2,
    "max_level": 3,
    "epochs": 1,
    "hemisphere": True,
    "fov_deg": 45.0,
}


@pytest.fixture(scope="module")
def extension() -> ModuleType:
    return addon_extension.ensure_extension()


@pytest.fixture
def preferences(extension: ModuleType) -> Iterator[Any]:
    """The add-on's preferences, pointed at the training Python for the test."""
    prefs = bpy.context.preferences.addons[addon_extension.MODULE_NAME].preferences
    prefs.python_path = TRAINING_PYTHON
    yield prefs
    prefs.python_path = ""


def test_the_check_button_shows_versions_and_device(preferences: Any) -> None:
    assert bpy.ops.vbnf.check_python() == {"FINISHED"}
    assert preferences.checked_python == TRAINING_PYTHON and preferences.check_problem == ""
    assert "torch " in preferences.check_versions and "OpenEXR " in preferences.check_versions
    assert preferences.check_device.startswith(("CPU", "CUDA: "))


def test_the_check_button_names_what_cannot_train(preferences: Any, tmp_path: Path) -> None:
    preferences.python_path = str(tmp_path)
    with pytest.raises(RuntimeError, match="is a folder, not a Python interpreter"):
        bpy.ops.vbnf.check_python()
    assert preferences.check_problem.startswith(f"{tmp_path} is a folder")


def test_a_bake_writes_the_asset_and_previews_it_where_blender_can(
    extension: ModuleType, preferences: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    addon_extension.reset_file()
    sphere = scenes.add_uv_sphere("Sphere", radius_m=0.8)
    scenes.set_emission(sphere, (0.8, 0.3, 0.1))
    scenes.save_blend(tmp_path / "versions.blend")
    props: Any = bpy.context.scene.vbnf_bake  # type: ignore[union-attr]
    for name, value in TINY.items():
        setattr(props, name, value)
    capfd.readouterr()
    assert bpy.ops.vbnf.bake() == {"FINISHED"}
    report_line = capfd.readouterr().out
    asset = tmp_path / "versions.vbnf"
    info = extension.engine.asset_info(asset.read_bytes())
    assert [level["level"] for level in info["levels"]] == [2, 3]
    report = json.loads((tmp_path / "versions.vbnf.report.json").read_text())
    assert report["settings"]["capture"]["hemisphere"] is True
    volumes = [obj for obj in bpy.data.objects if obj.type == "VOLUME"]
    if not extension.compat.has_openvdb():
        assert volumes == []
        assert extension.compat.NO_OPENVDB_LINE in report_line
        with pytest.raises(RuntimeError, match="no OpenVDB Python module"):
            bpy.ops.import_scene.vbnf(filepath=str(asset))
        return
    [preview] = volumes
    assert (preview.vbnf.min_level, preview.vbnf.max_level, preview.vbnf.lod) == (2, 3, 3)
    preview.vbnf.lod = 2
    assert preview.vbnf.lod_error == ""
    # every level's grids cover the coarsest level's cells, so the count need not shrink
    assert preview.vbnf.shown_level == 2 and preview.vbnf.voxel_count > 0


def test_the_estimate_button_says_what_these_settings_cost(
    extension: ModuleType, preferences: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A calibrated training step and two rendered views of the scene, before the bake; the
    panel shows the estimate only while the settings are the ones it was made for."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    addon_extension.reset_file()
    scenes.set_emission(scenes.add_uv_sphere("Sphere", radius_m=0.8), (0.2, 0.6, 0.3))
    scenes.save_blend(tmp_path / "estimate.blend")
    props: Any = bpy.context.scene.vbnf_bake  # type: ignore[union-attr]
    for name, value in TINY.items():
        setattr(props, name, value)
    assert bpy.ops.vbnf.bake_estimate() == {"FINISHED"}
    status: Any = bpy.context.window_manager.vbnf_bake_status  # type: ignore[union-attr]
    assert status.estimate_line.startswith("Bake takes about ")
    assert "(capture " in status.estimate_line and ", training " in status.estimate_line
    assert status.estimate_for == extension.ops_bake.estimate_fingerprint(bpy.context)
    assert (tmp_path / "cache" / "vbnf" / "calibration.json").is_file()
    assert not list(tmp_path.glob("estimate.vbnf*"))  # nothing baked, nothing kept
    props.epochs = 5
    assert status.estimate_for != extension.ops_bake.estimate_fingerprint(bpy.context)
