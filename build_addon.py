"""Build the installable Blender extension: ``python build_addon.py --out dist``.

Stages ``addon/vbnf_blender`` with the engine (``core/``) and the CUDA kernel sources
(``cuda/``) inside it, so the extension needs nothing from this repository; writes the manifest
(``blender_manifest.toml`` at the repository root) with the project's version from
``pyproject.toml``; then packs and checks the zip with
Blender's own extension tool (``bl_pkg/cli/blender_ext.py build`` and ``validate``), which runs
without Blender from the ``bpy`` wheel. Prints the zip's path.

``--self-contained [--platform linux-x64 ...]`` also bundles what training needs (torch and its
dependencies, pillow, OpenEXR, at the versions ``requirements.txt`` pins) as wheels, the way
Blender's extension guidelines describe: ``wheels = [...]`` and ``platforms = [...]`` in the
manifest, one zip per platform (``build --split-platforms``), so that a user installs one zip
and Blender's own Python trains. Blender installs the wheels when it installs the extension.
numpy is left out: Blender ships its own, which the bundled packages then use. The wheels are
CPython 3.11 builds, which bind the zip to the Blender releases running 3.11 (4.2 to 5.0;
Blender 5.1 moves to Python 3.13), so the self-contained manifest sets
``blender_version_max``. Wheels are fetched with ``pip download`` for the target platform
(pip's own cache and ``find-links`` are used first); the plain build needs no network.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent
ADDON_DIR = REPO_DIR / "addon" / "vbnf_blender"
MANIFEST_NAME = "blender_manifest.toml"
VENDORED = ("core", "cuda")  # engine folders copied inside the extension
# What the extension never imports stays out of the zip: the evaluation report and its command
# (matplotlib, baselines), the synthetic test asset, and the demo/suite scene builders.
NOT_SHIPPED = (
    "addon/vbnf_blender/scenes.py",
    "core/report",
    "core/commands/report.py",
    "core/asset/vbnf/example.py",
)
CACHE_FILES = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def _ignored(folder: str, names: list[str]) -> set[str]:
    """``copytree`` filter: caches and the ``NOT_SHIPPED`` paths."""
    here = Path(folder).resolve()
    left_out = {name for name in names if (here / name) in {REPO_DIR / p for p in NOT_SHIPPED}}
    return left_out | CACHE_FILES(folder, names)


# The bundled wheels' Python: Blender 4.2 to 5.0 run CPython 3.11 (5.1 moves to 3.13).
WHEEL_PYTHON = "3.11"
SELF_CONTAINED_BLENDER_MAX = "5.1.0"  # the first release the cp311 wheels cannot load in
TRAINING_PACKAGES = ("torch", "pillow", "OpenEXR")  # pinned in requirements.txt
BLENDER_PROVIDES = frozenset({"numpy"})  # ships with Blender: never bundled
# Blender platform -> (pip --platform tags, the torch build to bundle there).
PLATFORMS: dict[str, tuple[tuple[str, ...], str]] = {
    "linux-x64": (
        ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
        "+cpu",  # the CPU build: PyPI's Linux torch pulls gigabytes of CUDA libraries
    ),
    "windows-x64": (("win_amd64",), "+cpu"),
    "macos-arm64": (("macosx_11_0_arm64", "macosx_12_0_arm64", "macosx_14_0_arm64"), ""),
}
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
WHEELS_DIR = "wheels"


class BuildError(Exception):
    """The extension could not be built or did not validate; the message says why."""


def extension_tool() -> Path:
    """``blender_ext.py`` from the installed ``bpy`` wheel (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the bpy module is not installed (pip install -r requirements.txt)")
    bpy_dir = Path(next(iter(spec.submodule_search_locations)))
    tools = sorted(bpy_dir.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not tools:
        raise BuildError(f"no bl_pkg/cli/blender_ext.py under {bpy_dir}")
    return tools[-1]


def project_version() -> str:
    with open(REPO_DIR / "pyproject.toml", "rb") as stream:
        return str(tomllib.load(stream)["project"]["version"])


def pinned_requirements(names: tuple[str, ...]) -> list[str]:
    """``name==version`` for each of ``names`` as ``requirements.txt`` pins it."""
    pins = {}
    for line in (REPO_DIR / "requirements.txt").read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if "==" in requirement:
            pins[requirement.split("==", 1)[0].strip().lower()] = requirement
    missing = [name for name in names if name.lower() not in pins]
    if missing:
        raise BuildError(f"requirements.txt pins no {', '.join(missing)}")
    return [pins[name.lower()] for name in names]


def download_wheels(platform: str, wheels_dir: Path) -> list[Path]:
    """The training packages and their dependencies as CPython 3.11 wheels for ``platform``,
    less what Blender provides; returns the wheel files."""
    tags, torch_build = PLATFORMS[platform]
    requirements = [
        f"{pin}{torch_build}" if pin.startswith("torch==") else pin
        for pin in pinned_requirements(TRAINING_PACKAGES)
    ]
    target = wheels_dir / platform
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
        "--python-version", WHEEL_PYTHON, "--implementation", "cp", "--abi", "cp311",
        *(f"--platform={tag}" for tag in tags), "--dest", str(target), *requirements,
    ]  # fmt: skip
    if torch_build:
        command += ["--extra-index-url", TORCH_CPU_INDEX]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise BuildError(
            f"cannot fetch the {platform} wheels ({lines[-1] if lines else 'pip failed'})"
        )
    wheels = sorted(target.glob("*.whl"))
    return [wheel for wheel in wheels if _distribution(wheel) not in BLENDER_PROVIDES]


def _distribution(wheel: Path) -> str:
    return wheel.name.split("-", 1)[0].lower().replace("_", "-")


def stage(staging_dir: Path, wheels: list[Path] | None = None) -> Path:
    """Copy the add-on and the vendored engine into ``staging_dir/vbnf_blender``; with
    ``wheels``, copy them into its ``wheels/`` folder and name them in the manifest with the
    platforms they serve."""
    package_dir = staging_dir / ADDON_DIR.name
    shutil.rmtree(package_dir, ignore_errors=True)
    shutil.copytree(ADDON_DIR, package_dir, ignore=_ignored)
    for name in VENDORED:
        shutil.copytree(REPO_DIR / name, package_dir / name, ignore=_ignored)
    text, count = re.subn(
        r'(?m)^version = "[^"]*"$',
        f'version = "{project_version()}"',
        (REPO_DIR / MANIFEST_NAME).read_text(),
    )
    if count != 1:
        raise BuildError(f"{MANIFEST_NAME} needs exactly one top-level 'version = \"...\"' line")
    if wheels is not None:
        text = _self_contained_manifest(text, _stage_wheels(package_dir, wheels))
    (package_dir / MANIFEST_NAME).write_text(text)
    return package_dir


def _stage_wheels(package_dir: Path, wheels: list[Path]) -> dict[str, list[str]]:
    """Copy the wheels in (one copy of a wheel that serves several platforms); returns each
    platform's manifest paths."""
    (package_dir / WHEELS_DIR).mkdir()
    paths: dict[str, list[str]] = {}
    for wheel in wheels:
        platform = wheel.parent.name  # download_wheels' layout: <wheels dir>/<platform>/
        destination = package_dir / WHEELS_DIR / wheel.name
        if not destination.exists():
            shutil.copy2(wheel, destination)
        paths.setdefault(platform, []).append(f"./{WHEELS_DIR}/{wheel.name}")
    return paths


def _self_contained_manifest(text: str, wheels: dict[str, list[str]]) -> str:
    """The manifest with ``platforms``, ``wheels`` and the Blender release the cp311 wheels
    stop at, as top-level keys (before the first table)."""
    names = sorted({path for paths in wheels.values() for path in paths})
    keys = (
        f'blender_version_max = "{SELF_CONTAINED_BLENDER_MAX}"  # cp311 wheels: Blender 4.2-5.0\n'
        f"platforms = [{', '.join(json.dumps(p) for p in sorted(wheels))}]\n"
        "wheels = [\n" + "".join(f"  {json.dumps(name)},\n" for name in names) + "]\n"
    )
    text, count = re.subn(r"(?m)^(blender_version_min = .*\n)", lambda m: m.group(1) + keys, text)
    if count != 1:
        raise BuildError(f"{MANIFEST_NAME} needs one top-level 'blender_version_min' line")
    return text


def run_tool(*arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, str(extension_tool()), *arguments], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise BuildError(f"blender_ext.py {arguments[0]} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def build(out_dir: Path, staging_dir: Path) -> Path:
    """Stage, pack and validate; returns the zip's path."""
    package_dir = stage(staging_dir)
    with open(package_dir / MANIFEST_NAME, "rb") as stream:
        manifest = tomllib.load(stream)
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    zip_path.unlink(missing_ok=True)
    run_tool("build", "--source-dir", str(package_dir), "--output-filepath", str(zip_path))
    run_tool("validate", str(zip_path))
    return zip_path


def build_self_contained(
    out_dir: Path, staging_dir: Path, platforms: list[str], wheels_dir: Path
) -> list[Path]:
    """One validated zip per platform, each with that platform's training wheels inside
    (``<id>-<version>-<platform>.zip``); returns their paths."""
    wheels = [wheel for platform in platforms for wheel in download_wheels(platform, wheels_dir)]
    package_dir = stage(staging_dir, wheels)
    with open(package_dir / MANIFEST_NAME, "rb") as stream:
        manifest = tomllib.load(stream)
    out_dir.mkdir(parents=True, exist_ok=True)
    zip_path = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    zip_paths = [
        zip_path.with_name(f"{zip_path.stem}-{platform.replace('-', '_')}.zip")
        for platform in sorted(platforms)
    ]
    for path in zip_paths:
        path.unlink(missing_ok=True)
    run_tool(
        "build", "--source-dir", str(package_dir), "--output-filepath", str(zip_path),
        "--split-platforms",
    )  # fmt: skip
    for path in zip_paths:
        run_tool("validate", str(path))
    return zip_paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_DIR / "dist", help="zip folder")
    parser.add_argument(
        "--staging", type=Path, default=REPO_DIR / "build" / "addon", help="staging folder"
    )
    parser.add_argument(
        "--self-contained",
        action="store_true",
        help="bundle torch, pillow and OpenEXR as wheels: one zip per platform whose Blender "
        f"(4.2 to 5.0, Python {WHEEL_PYTHON}) trains in its own Python",
    )
    parser.add_argument(
        "--platform",
        action="append",
        choices=sorted(PLATFORMS),
        help="with --self-contained: a platform to build for (repeatable; default: all)",
    )
    parser.add_argument(
        "--wheels", type=Path, default=REPO_DIR / "build" / "wheels", help="wheel download folder"
    )
    args = parser.parse_args(argv)
    try:
        if args.self_contained:
            platforms = args.platform or sorted(PLATFORMS)
            for path in build_self_contained(
                args.out.resolve(), args.staging.resolve(), platforms, args.wheels.resolve()
            ):
                print(path)
        else:
            print(build(args.out.resolve(), args.staging.resolve()))
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
