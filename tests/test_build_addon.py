"""The self-contained build's manifest: wheels per platform as Blender's extension guidelines
describe, pinned as requirements.txt pins them, bound to the Blenders that run CPython 3.11.

The whole build (downloading torch, packing, Blender's validator, installing the Linux zip into
a throw-away extensions folder and training in a numpy-only Python with the bundled wheels) is
too slow for the suite; docs/blender-extension.md says how it was run and what it measured.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

import build_addon  # noqa: E402


def test_the_training_packages_are_the_pinned_ones() -> None:
    pins = build_addon.pinned_requirements(build_addon.TRAINING_PACKAGES)
    requirements = (REPO_DIR / "requirements.txt").read_text().splitlines()
    assert all(pin in requirements for pin in pins)
    assert [pin.split("==")[0] for pin in pins] == ["torch", "pillow", "OpenEXR"]


def test_the_manifest_names_each_platforms_wheels_and_the_last_blender(tmp_path: Path) -> None:
    linux, windows = tmp_path / "linux-x64", tmp_path / "windows-x64"
    wheels = [
        linux / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        linux / "sympy-1.14.0-py3-none-any.whl",
        windows / "torch-2.13.0+cpu-cp311-cp311-win_amd64.whl",
        windows / "sympy-1.14.0-py3-none-any.whl",  # one copy serves both platforms
    ]
    for wheel in wheels:
        wheel.parent.mkdir(exist_ok=True)
        wheel.write_bytes(b"")  # only the names matter to the manifest
    package_dir = build_addon.stage(tmp_path / "staging", wheels)
    manifest = tomllib.loads((package_dir / build_addon.MANIFEST_NAME).read_text())
    assert manifest["platforms"] == ["linux-x64", "windows-x64"]
    assert manifest["wheels"] == [
        "./wheels/sympy-1.14.0-py3-none-any.whl",
        "./wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
        "./wheels/torch-2.13.0+cpu-cp311-cp311-win_amd64.whl",
    ]
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["blender_version_max"] == "5.1.0"  # 5.1 runs Python 3.13
    assert sorted(path.name for path in (package_dir / "wheels").iterdir()) == sorted(
        {wheel.name for wheel in wheels}
    )
    assert manifest["permissions"]  # the tables after the new keys are intact


def test_the_plain_manifest_bundles_nothing(tmp_path: Path) -> None:
    package_dir = build_addon.stage(tmp_path / "staging")
    manifest = tomllib.loads((package_dir / build_addon.MANIFEST_NAME).read_text())
    assert "wheels" not in manifest and "blender_version_max" not in manifest
    assert not (package_dir / "wheels").exists()


def test_numpy_is_left_to_blender() -> None:
    numpy = Path("numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl")
    typing = Path("typing_extensions-4.16.0-py3-none-any.whl")
    assert build_addon._distribution(numpy) in build_addon.BLENDER_PROVIDES
    assert build_addon._distribution(typing) == "typing-extensions"
