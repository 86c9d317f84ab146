"""Where the add-on finds the engine (``core``).

In the built extension ``core`` is vendored inside this package (``vbnf_blender/core``); when
the add-on runs from a repository checkout it is the top-level ``core`` package two folders up.
Every bpy module imports engine code through here, so that choice is made once.
"""

from __future__ import annotations

import sys
from pathlib import Path

_VENDORED = (Path(__file__).parent / "core").is_dir()
if not _VENDORED:
    _repo_root = str(Path(__file__).resolve().parents[2])
    if _repo_root not in sys.path:
        sys.path.insert(0, _repo_root)

if _VENDORED:
    from .core import dataset
    from .core.errors import VbnfError
else:
    from core import dataset  # type: ignore[no-redef]
    from core.errors import VbnfError  # type: ignore[no-redef,assignment]

__all__ = ["VbnfError", "dataset"]
