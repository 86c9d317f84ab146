"""The procedural suite and demo scenes: they build into fresh scenes and Cycles renders them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR / "addon") not in sys.path:
    sys.path.insert(0, str(REPO_DIR / "addon"))

import blender_scenes  # noqa: E402
import bpy  # noqa: E402
from vbnf_blender import capture, scenes  # noqa: E402

from core.data.dataset import load_split  # noqa: E402

pytestmark = pytest.mark.blender

BUILDERS: dict[str, Callable[[], scenes.BuiltScene]] = {
    name: partial(scenes.build_scene, name) for name in scenes.SCENES
} | {"demo": scenes.build_demo_scene}
ONE_VIEW = capture.CaptureSettings(
    train_views=1, test_views=1, resolution_px=16, samples=2, denoise=False
)


@pytest.fixture(autouse=True)
def _fresh_blender() -> None:
    blender_scenes.reset_blender()


def test_the_suite_has_at_least_three_scenes() -> None:
    assert {"textures", "glossy", "thin"} <= set(scenes.SCENES)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_scene_builds_with_geometry_and_materials_and_renders(name: str, tmp_path: Path) -> None:
    scenes_before = set(bpy.data.scenes)
    built = BUILDERS[name]()
    assert built.scene not in scenes_before  # a new scene: the user's are left alone
    assert built.objects and all(obj.name in built.scene.objects for obj in built.objects)
    for obj in built.objects:
        assert obj.type == "MESH" and len(obj.data.vertices) > 0, obj.name  # type: ignore[union-attr]
        assert obj.data.materials, obj.name  # type: ignore[union-attr]
    capture.capture_dataset(built.scene, tmp_path, ONE_VIEW, objects=built.objects)
    rgba = load_split(tmp_path, "train").rgba[0]
    assert rgba.shape == (16, 16, 4)
    assert rgba[..., 3].max() > 0.5, "the objects cover no pixel"
    assert rgba[..., 3].min() < 0.5, "the objects should not fill the frame"
    assert np.ptp(rgba[..., :3][rgba[..., 3] > 0.5]) > 0.05, "the render is one flat colour"


def test_unknown_scene_names_the_choices() -> None:
    with pytest.raises(KeyError, match="textures"):
        scenes.build_scene("nope")
