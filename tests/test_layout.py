"""The package layout keeps its promises: the numpy-only side never needs torch, and the limits
that the CUDA sources repeat agree with the one Python source."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from core import limits

REPO_ROOT = Path(__file__).resolve().parents[1]
NUMPY_ONLY = ("core/asset", "core/data")


def _modules(folder: str) -> list[str]:
    return sorted(
        ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (REPO_ROOT / folder).rglob("*.py")
    )


def test_the_numpy_only_packages_import_with_torch_missing() -> None:
    """``sys.modules['torch'] = None`` makes any ``import torch`` fail, as in Blender's Python."""
    modules = [name for folder in NUMPY_ONLY for name in _modules(folder)]
    script = "import sys\nsys.modules['torch'] = None\n" + "".join(
        f"import {name}\n" for name in modules
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert len(modules) > 10


def test_the_limits_module_imports_nothing_but_the_future() -> None:
    source = (REPO_ROOT / "core" / "limits.py").read_text()
    imports = re.findall(r"^(?:from|import) (\S+)", source, flags=re.MULTILINE)
    assert imports == ["__future__"]


def test_the_trace_kernel_is_sized_for_the_shared_level_limit() -> None:
    source = (REPO_ROOT / "cuda" / "octree_trace.cu").read_text()
    match = re.search(r"^#define MAX_LEVEL (\d+)$", source, flags=re.MULTILINE)
    assert match is not None and int(match.group(1)) == limits.MAX_LEVEL
