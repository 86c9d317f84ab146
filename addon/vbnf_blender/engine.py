"""Where the add-on finds the engine (``core``).

In the built extension ``core`` is vendored inside this package (``vbnf_blender/core``); when
the add-on runs from a repository checkout it is the top-level ``core`` package two folders up.
Every bpy module imports engine code through here, so that choice is made once.

``ENGINE_ROOT`` is the folder that holds ``core``: the training subprocess runs
``python -m core`` with it on ``PYTHONPATH``, because ``core`` uses relative imports and must be
a top-level package there.
"""

from __future__ import annotations

import sys
from pathlib import Path

_VENDORED = (Path(__file__).parent / "core").is_dir()
ENGINE_ROOT = Path(__file__).resolve().parent if _VENDORED else Path(__file__).resolve().parents[2]
if not _VENDORED and str(ENGINE_ROOT) not in sys.path:
    sys.path.insert(0, str(ENGINE_ROOT))

if _VENDORED:
    from .core import locks
    from .core.asset.numpy_field import NumpyField
    from .core.asset.vbnf import asset_info, cut_asset, read_asset
    from .core.atomic import atomic_path, atomic_write_bytes
    from .core.cli import EXIT_CANCELLED, EXIT_USER_ERROR
    from .core.data import cameras, dataset, interop
    from .core.errors import AssetError, VbnfError
    from .core.limits import (
        DEFAULT_BITWIDTH,
        DEFAULT_MAX_LEVEL,
        DEFAULT_MIN_LEVEL,
        MAX_LEVEL,
        MAX_TRAIN_BITWIDTH,
    )
    from .core.metrics import SSIM_WINDOW
    from .core.run_layout import CHECKPOINT_NAME, METRICS_NAME
else:
    from core import locks
    from core.asset.numpy_field import NumpyField
    from core.asset.vbnf import asset_info, cut_asset, read_asset
    from core.atomic import atomic_path, atomic_write_bytes
    from core.cli import EXIT_CANCELLED, EXIT_USER_ERROR
    from core.data import cameras, dataset, interop
    from core.errors import AssetError, VbnfError
    from core.limits import (
        DEFAULT_BITWIDTH,
        DEFAULT_MAX_LEVEL,
        DEFAULT_MIN_LEVEL,
        MAX_LEVEL,
        MAX_TRAIN_BITWIDTH,
    )
    from core.metrics import SSIM_WINDOW
    from core.run_layout import CHECKPOINT_NAME, METRICS_NAME

__all__ = [
    "CHECKPOINT_NAME",
    "DEFAULT_BITWIDTH",
    "DEFAULT_MAX_LEVEL",
    "DEFAULT_MIN_LEVEL",
    "ENGINE_ROOT",
    "EXIT_CANCELLED",
    "EXIT_USER_ERROR",
    "MAX_LEVEL",
    "MAX_TRAIN_BITWIDTH",
    "METRICS_NAME",
    "SSIM_WINDOW",
    "AssetError",
    "NumpyField",
    "VbnfError",
    "asset_info",
    "atomic_path",
    "atomic_write_bytes",
    "cameras",
    "cut_asset",
    "dataset",
    "interop",
    "locks",
    "read_asset",
]
