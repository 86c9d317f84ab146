"""One level of detail of a neural field decoded into OpenVDB grids that Cycles renders.

Blender has no Python API to fill a volume in memory, so a level is decoded with the numpy
decoder into a ``.vdb`` file that a Volume datablock loads (``volume.py`` caches the files and
swaps them under the LOD slider). What the grids hold, and why, measured on
``bench/preview.py``'s scene (the Cycles render of the grids against the engine's own render of
the same asset; the figures are in docs/blender-extension.md):

- **Where**: every voxel inside the occupied cells of the asset's *coarsest* level. The engine
  traces rays through the coarsest level's cells and evaluates the field wherever they go;
  finer levels only add features where they are allocated. Keeping only the voxels inside
  level ``L``'s own cells dropped what the field draws elsewhere (thin parts that the finer
  octree missed turned ghostly): the largest gap, 1.5 dB at level 6. Voxels whose optical
  depth is negligible are left inactive, so the grids stay sparse.
- **How fine**: ``voxels_per_cell`` per cell of level ``L`` (``2 * 2**L`` across the octree's
  cube), but at least ``voxels_per_coarsest_cell`` per coarsest cell: the engine takes 16
  samples per coarsest cell along a ray whatever the level, so it draws coarse levels as sharp
  as the field is; a coarse grid blurred them (0.4 dB at level 3). Finer than that buys
  nothing measurable (0.02 dB at level 5 for 8x the voxels).
- **Density**: the view-averaged density per scene unit (optionally box-filtered over
  ``supersample^3`` points per voxel; it measured no better).
- **Colour**: linear RGB (the field was trained on sRGB pixels; Cycles works in linear light)
  as real spherical harmonics of the viewing direction up to degree 2, fitted per voxel over
  ``fit_directions`` directions, so metal keeps highlights that move with the eye instead of a
  pale view average (degree 0 -> 1 -> 2: 1.6 -> 1.0 -> 0.5 dB below the engine at level 6).
  Grid ``color`` holds the degree-0 term (the view-averaged colour), grids ``color_x``,
  ``color_y``, ``color_z``, ``color_xy`` ... the direction terms with the SH constants folded
  in; ``preview_material.py`` evaluates them per ray.

What is left: Cycles composites in linear light, the engine in sRGB (as it was trained), so
semi-transparent mixes differ; rendering with the Raw view transform and sRGB colours closes
another 0.4 dB, but that would change the user's whole scene.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import numpy as np

from .engine import (
    AVERAGING_DIRECTION_COUNT,
    SH_CONSTANTS,
    SH_POLYNOMIALS,
    NumpyField,
    VbnfError,
    atomic_path,
    cameras,
    project_views,
    sh_coefficient_count,
)

DENSITY_GRID = "density"
COLOR_GRID = "color"
# Voxels whose optical depth is below this are left inactive: they change a pixel by less
# than 0.01 %, and leaving them out keeps the grids sparse.
MIN_OPTICAL_DEPTH = 1e-4
# Dense blocks handed to openvdb are at most this many voxels, bounding memory at fine levels.
BLOCK_VOXELS = 1 << 22
# ... in tiles this many voxels across: the coarsest level's cells are multiples of it
TILE_VOXELS = 16
# Field samples (points x directions) decoded at once: about 100 bytes each of temporaries.
BLOCK_FIELD_SAMPLES = 1 << 21


@dataclass(frozen=True)
class PreviewQuality:
    """How a level is turned into grids (see the module docstring for what each buys)."""

    voxels_per_cell: int = 2  # voxels per octree cell of the level, along each axis
    # ... and at least this many per cell of the coarsest level: the engine's 16 samples per
    # coarsest cell along a ray (core/raymarch.py), so coarse levels are as sharp as it draws
    voxels_per_coarsest_cell: int = 16
    supersample: int = 1  # field samples per voxel along each axis, box-filtered
    sh_degree: int = 2  # of the colour's spherical harmonics; 0: view-averaged colour
    fit_directions: int = AVERAGING_DIRECTION_COUNT  # the colour is fitted over

    @property
    def tag(self) -> str:
        """Part of a cached grid's file name: grids made with other settings do not match."""
        return (
            f"v{self.voxels_per_cell}c{self.voxels_per_coarsest_cell}s{self.supersample}"
            f"h{self.sh_degree}d{self.fit_directions}"
        )


QUALITY = PreviewQuality()


@dataclass(frozen=True)
class LevelGrids:
    """One level on its voxel grid: the voxels that matter and their values."""

    ijk: np.ndarray  # [N, 3] integer voxel coordinates
    density: np.ndarray  # [N] per scene unit, view-averaged
    color: np.ndarray  # [B, N, 3] linear colour SH coefficients, constants folded in
    across: int  # voxels across the octree's cube
    voxel_size_m: float


def load_openvdb() -> ModuleType:
    """Blender's bundled OpenVDB bindings: ``openvdb`` since 4.4, ``pyopenvdb`` before.

    Under the bpy module they sit outside ``sys.path`` until ``expose_bundled_modules``.
    """
    expose = getattr(bpy.utils, "expose_bundled_modules", None)
    if expose is not None:
        expose()
    try:
        import openvdb

        return openvdb
    except ImportError:
        pass
    try:
        import pyopenvdb

        return pyopenvdb
    except ImportError as error:
        raise VbnfError("this Blender has no OpenVDB Python module (openvdb)") from error


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """The sRGB transfer function undone, in float32 (what the grids hold) and in place on one
    new array: a float64 ``np.where`` of both branches took a sixth of a level's decoding."""
    rgb = np.asarray(rgb, dtype=np.float32)
    linear = rgb + np.float32(0.055)
    linear *= np.float32(1.0 / 1.055)
    np.power(linear, np.float32(2.4), out=linear)
    np.multiply(rgb, np.float32(1.0 / 12.92), out=linear, where=rgb <= np.float32(0.04045))
    return linear


def level_voxels(
    decoder: NumpyField, level: int, quality: PreviewQuality | None = None
) -> LevelGrids:
    """Decode level ``level`` on its voxel grid over the coarsest level's occupied cells,
    keeping the voxels whose optical depth matters; ``quality`` defaults to :data:`QUALITY`."""
    quality = QUALITY if quality is None else quality
    field = decoder.field
    per_coarse_cell = max(
        quality.voxels_per_cell << (level - field.min_level), quality.voxels_per_coarsest_cell
    )
    across = per_coarse_cell << field.min_level
    voxel_size_m = 2.0 / (across * field.scale)
    coarse_cells = field.octree.cells[field.min_level]
    directions = cameras.fibonacci_directions(quality.fit_directions, hemisphere=False)
    block_cells = max(
        1,
        BLOCK_FIELD_SAMPLES // (per_coarse_cell**3 * quality.supersample**3 * directions.shape[0]),
    )
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, coarse_cells.shape[0], block_cells):
        cells = coarse_cells[start : start + block_cells]
        ijk = (cells[:, None, :] * per_coarse_cell + _lattice(per_coarse_cell)[None]).reshape(-1, 3)
        keep, density, color = _voxel_values(
            decoder, level, ijk, across, voxel_size_m, directions, quality
        )
        kept.append((ijk[keep], density, color))
    return LevelGrids(
        np.concatenate([k[0] for k in kept]),
        np.concatenate([k[1] for k in kept]),
        np.concatenate([k[2] for k in kept], axis=1),
        across,
        voxel_size_m,
    )


def _lattice(count: int) -> np.ndarray:
    """Integer offsets [count^3, 3] of the points of a count^3 lattice."""
    return np.stack(np.meshgrid(*[np.arange(count)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)


def _voxel_values(
    decoder: NumpyField,
    level: int,
    ijk: np.ndarray,
    across: int,
    voxel_size_m: float,
    directions: np.ndarray,
    quality: PreviewQuality,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of voxels ``ijk`` are kept (a mask [n]: their optical depth matters), and their
    density [k] and colour SH [B, k, 3]: the field sampled at ``supersample^3`` points per
    voxel from each direction. Density is the mean over the voxel and the directions; colour,
    per direction the density-weighted mean over the voxel (the voxel's emission), is fitted
    over the directions, for the kept voxels only (a quarter of them on the demo)."""
    samples = quality.supersample
    offsets = (_lattice(samples) + 0.5) / samples  # within the voxel, in voxels
    normalized = (ijk[:, None, :] + offsets[None]) * (2.0 / across) - 1.0
    points = decoder.field.to_world(normalized.reshape(-1, 3))
    view_density, view_rgb = decoder.query_views(points, level, directions)
    count = directions.shape[0]
    view_density = view_density.reshape(count, ijk.shape[0], -1)  # [D, n, s]
    density = view_density.mean(axis=(0, 2))
    keep = density * voxel_size_m >= MIN_OPTICAL_DEPTH
    view_density = view_density[:, keep]
    view_rgb = srgb_to_linear(view_rgb.reshape(count, ijk.shape[0], -1, 3)[:, keep])
    total = view_density.sum(axis=-1, keepdims=True)
    weight = np.where(total > 0.0, view_density / np.maximum(total, 1e-30), 1.0 / samples**3)
    # [1, s] @ [s, 3] per voxel and direction: matmul is 3x faster than the einsum was
    voxel_rgb = np.matmul(weight[:, :, None, :], view_rgb)[:, :, 0]
    color = project_views(voxel_rgb, directions, quality.sh_degree)
    constants = SH_CONSTANTS[: color.shape[0], None, None].astype(np.float32)
    return keep, density[keep], color * constants


def color_grid_names(degree: int) -> list[str]:
    """Grid names of the colour SH coefficients, in core.asset.numpy_field's SH_POLYNOMIALS order:
    ``color`` is the view-averaged colour, ``color_<term>`` multiplies a direction term."""
    terms = SH_POLYNOMIALS[1 : sh_coefficient_count(degree)]
    return [COLOR_GRID, *[f"{COLOR_GRID}_{grid_term(term)}" for term in terms]]


def grid_term(polynomial: str) -> str:
    """A polynomial of SH_POLYNOMIALS as a grid name suffix (``3zz-1`` -> ``zz``)."""
    return polynomial.replace("3zz-1", "zz").replace("xx-yy", "xx_yy")


def write_level_vdb(decoder: NumpyField, level: int, path: Path) -> int:
    """Decode ``level`` and write its grids to ``path``; returns the active voxel count.

    Written atomically: a reader never sees half a file, and an interrupted write leaves no
    file behind that the cache would trust."""
    openvdb = load_openvdb()
    grids_of_level = level_voxels(decoder, level)
    across = grids_of_level.across
    # Voxel i's centre is at normalised -1 + (i + 0.5) * 2 / across; VDB puts it at index i.
    origin = decoder.field.to_world(np.full(3, -1.0 + 1.0 / across))
    named = [(DENSITY_GRID, grids_of_level.density)]
    named += zip(color_grid_names(QUALITY.sh_degree), grids_of_level.color, strict=True)
    tiles = _tile_layout(grids_of_level.ijk)
    grids = []
    for name, values in named:
        grid = openvdb.FloatGrid() if values.ndim == 1 else openvdb.Vec3SGrid()
        grid.name = name
        if values.ndim == 1:
            grid.gridClass = openvdb.GridClass.FOG_VOLUME
        transform = openvdb.createLinearTransform(voxelSize=grids_of_level.voxel_size_m)
        transform.postTranslate(tuple(float(x) for x in origin))
        grid.transform = transform
        grid.saveFloatAsHalf = True  # half the cache on disk; the values are fp16-exact enough
        _fill_grid(grid, tiles, values)
        grids.append(grid)
    voxel_count = int(grids[0].activeVoxelCount())
    with atomic_path(path) as temporary:
        openvdb.write(str(temporary), grids=grids)
    return voxel_count


@dataclass(frozen=True)
class _Tiles:
    """A level's voxels grouped into the ``TILE_VOXELS^3`` tiles that hold any, worked out once
    for all its grids. Filling dense tiles instead of dense slabs of the voxels' bounding box
    (fewer zeros, one flat scatter) took the ten grids of a level with 1.9M voxels from 3.8 s
    to 1.6 s of CPU, and the demo's finest level from 0.14 s to 0.08 s."""

    origins: list[tuple[int, int, int]]  # first voxel of each tile, tiles in ``offsets`` order
    offsets: np.ndarray  # [N] ascending: tile * TILE_VOXELS^3 + the voxel's place in its tile
    order: np.ndarray  # [N] the voxel (of ``ijk``) at each of ``offsets``


def _tile_layout(ijk: np.ndarray) -> _Tiles:
    if ijk.shape[0] == 0:
        return _Tiles([], np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    tiles = ijk // TILE_VOXELS
    low = tiles.min(axis=0)
    span = tuple(int(x) for x in tiles.max(axis=0) - low + 1)
    keys, which = np.unique(np.ravel_multi_index(tuple((tiles - low).T), span), return_inverse=True)
    origins = (np.stack(np.unravel_index(keys, span), axis=-1) + low) * TILE_VOXELS
    inside = np.ravel_multi_index(tuple((ijk - tiles * TILE_VOXELS).T), (TILE_VOXELS,) * 3)
    offsets = which.astype(np.int64) * TILE_VOXELS**3 + inside
    order = np.argsort(offsets)
    return _Tiles([tuple(origin) for origin in origins.tolist()], offsets[order], order)


def _fill_grid(grid: Any, tiles: _Tiles, values: np.ndarray) -> None:
    """Activate ``values`` (of the voxels ``tiles`` was made from) through dense tiles, at most
    ``BLOCK_VOXELS`` voxels of them at a time (openvdb's Python API fills grids from dense
    arrays only); voxels left at zero stay inactive."""
    per_tile = TILE_VOXELS**3
    tiles_per_block = max(1, BLOCK_VOXELS // per_tile)
    for first in range(0, len(tiles.origins), tiles_per_block):
        origins = tiles.origins[first : first + tiles_per_block]
        start, stop = np.searchsorted(
            tiles.offsets, [first * per_tile, (first + len(origins)) * per_tile]
        )
        block = np.zeros((len(origins) * per_tile, *values.shape[1:]), dtype=np.float32)
        block[tiles.offsets[start:stop] - first * per_tile] = values[tiles.order[start:stop]]
        block = block.reshape(len(origins), TILE_VOXELS, TILE_VOXELS, TILE_VOXELS, -1)
        for tile, origin in zip(block, origins, strict=True):
            grid.copyFromArray(tile if values.ndim > 1 else tile[..., 0], ijk=origin)


def count_voxels(path: Path) -> int:
    """Active voxels of a cached level's density grid, from the statistics OpenVDB writes into
    the file's metadata (no voxel data is read)."""
    metadata = load_openvdb().readGridMetadata(str(path), DENSITY_GRID).metadata
    return int(metadata["file_voxel_count"])
