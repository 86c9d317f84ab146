"""Build the installable Blender extension: ``python build_addon.py --out dist``.

Stages ``addon/vbnf_blender`` with the engine (``core/``) and the CUDA kernel sources
(``cuda/``) inside it, so the extension needs nothing from this repository; writes the manifest
(``blender_manifest.toml`` at the repository root) with the project's version from
``pyproject.toml``; then packs and checks the zip with
Blender's own extension tool (``bl_pkg/cli/blender_ext.py build`` and ``validate``), which runs
without Blender from the ``bpy`` wheel. Prints the zip's path.
"""

from __future__ import annotations

import argparse
import importlib.util
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


def stage(staging_dir: Path) -> Path:
    """Copy the add-on and the vendored engine into ``staging_dir/vbnf_blender``."""
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
    (package_dir / MANIFEST_NAME).write_text(text)
    return package_dir


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_DIR / "dist", help="zip folder")
    parser.add_argument(
        "--staging", type=Path, default=REPO_DIR / "build" / "addon", help="staging folder"
    )
    args = parser.parse_args(argv)
    try:
        print(build(args.out.resolve(), args.staging.resolve()))
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
