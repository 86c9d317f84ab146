"""The built extension, installed into a throw-away repository of the running bpy, for tests.

The add-on is tested as users get it: ``build_addon.py`` writes the zip, Blender's own
``extensions.package_install_files`` installs it into a temporary local repository (so the
user's extension folders are untouched) and enables it as ``bl_ext.<repo>.vbnf_blender``, the
vendored engine inside. bpy is one module per process and other test files reset preferences
(``read_factory_settings`` disables add-ons and drops runtime repositories), so
``ensure_extension`` checks each piece and redoes only what is missing.
"""

from __future__ import annotations

import atexit
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

import addon_utils  # noqa: E402  # importable once bpy is

import build_addon  # noqa: E402

REPO_MODULE = "vbnf_test"
PACKAGE_ID = "vbnf_blender"
MODULE_NAME = f"bl_ext.{REPO_MODULE}.{PACKAGE_ID}"

_work_dir = Path(tempfile.mkdtemp(prefix="vbnf-extension-test-"))
atexit.register(shutil.rmtree, _work_dir, ignore_errors=True)
_zip_path: Path | None = None


def built_zip() -> Path:
    """The extension zip, built once per process."""
    global _zip_path
    if _zip_path is None:
        _zip_path = build_addon.build(_work_dir / "dist", _work_dir / "staging")
    return _zip_path


def _preferences() -> Any:
    return bpy.context.preferences


def _repository() -> bpy.types.UserExtensionRepo:
    repos = _preferences().extensions.repos
    for repo in repos:
        if repo.module == REPO_MODULE:
            return repo
    directory = _work_dir / "repo"
    directory.mkdir(exist_ok=True)
    return repos.new(
        name=REPO_MODULE, module=REPO_MODULE, custom_directory=str(directory), source="USER"
    )


def ensure_extension() -> ModuleType:
    """Install (once) and enable the built extension; returns its package module."""
    repo = _repository()
    installed = Path(repo.directory) / PACKAGE_ID
    if not installed.is_dir():
        bpy.ops.extensions.package_install_files(
            filepath=str(built_zip()), repo=REPO_MODULE, enable_on_install=False
        )
        if not installed.is_dir():  # the operator reports errors but still says FINISHED
            raise RuntimeError(f"installing {built_zip()} into {repo.directory} failed")
    if MODULE_NAME not in _preferences().addons:
        addon_utils.enable(MODULE_NAME, default_set=True)
    if MODULE_NAME not in _preferences().addons:
        raise RuntimeError(f"enabling {MODULE_NAME} failed (see the log above)")
    return importlib.import_module(MODULE_NAME)


def disable_extension() -> None:
    addon_utils.disable(MODULE_NAME, default_set=True)


def reset_file() -> None:
    """An empty file that keeps preferences (and so the enabled extension), unlike
    ``read_factory_settings``."""
    bpy.ops.wm.read_homefile(use_empty=True)
