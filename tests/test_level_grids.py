"""The preview's grid filling and colour conversion (addon/vbnf_blender/level_grids.py) in the
installed extension, with Blender's real OpenVDB module: the voxels written are exactly the
ones given, through several blocks of dense tiles, and the float32 sRGB conversion matches the
formula. test_addon_preview.py checks what the grids render like; this checks them voxel by
voxel."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
if str(TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(TESTS_DIR))

import addon_extension  # noqa: E402

pytestmark = pytest.mark.blender


@pytest.fixture(scope="module")
def level_grids() -> ModuleType:
    return importlib.import_module(f"{addon_extension.ensure_extension().__name__}.level_grids")


@pytest.mark.parametrize("channels", [0, 3])
def test_a_grid_filled_in_tiles_holds_the_given_voxels_and_no_others(
    level_grids: ModuleType, monkeypatch: pytest.MonkeyPatch, channels: int
) -> None:
    openvdb = level_grids.load_openvdb()
    rng = np.random.default_rng(channels)
    extent = np.array([50, 20, 35])
    low = np.array([-40, 3, 100])  # across tiles on every axis, negative coordinates included
    # 5 tiles per dense block: the 24 tiles take four full blocks and a short last one
    monkeypatch.setattr(level_grids, "BLOCK_VOXELS", 5 * level_grids.TILE_VOXELS**3)
    cells = rng.choice(int(extent.prod()), size=2000, replace=False)
    ijk = np.stack(np.unravel_index(cells, tuple(extent)), axis=-1) + low
    shape = (2000, channels) if channels else (2000,)
    values = rng.uniform(0.1, 2.0, size=shape).astype(np.float32)
    grid = openvdb.Vec3SGrid() if channels else openvdb.FloatGrid()
    tiles = level_grids._tile_layout(ijk)
    assert len(tiles.origins) == 24
    level_grids._fill_grid(grid, tiles, values)
    assert grid.activeVoxelCount() == 2000
    read_back = np.zeros((*(extent + 2), *shape[1:]), dtype=np.float32)  # a voxel of margin
    grid.copyToArray(read_back, ijk=tuple(int(x) for x in low - 1))
    expected = np.zeros_like(read_back)
    expected[tuple((ijk - low + 1).T)] = values
    np.testing.assert_array_equal(read_back, expected)


def test_srgb_to_linear_matches_the_formula_in_float32(level_grids: ModuleType) -> None:
    rgb = np.concatenate(
        [np.linspace(0.0, 1.0, 10001), [0.04045, np.nextafter(0.04045, 1.0)]]
    ).astype(np.float32)
    exact = rgb.astype(np.float64)
    exact = np.where(exact <= 0.04045, exact / 12.92, ((exact + 0.055) / 1.055) ** 2.4)
    linear = level_grids.srgb_to_linear(rgb)
    assert linear.dtype == np.float32
    np.testing.assert_allclose(linear, exact, rtol=2e-6, atol=1e-9)
