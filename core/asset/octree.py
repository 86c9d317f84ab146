"""Sparse octree over [-1, 1]^3 in Morton order, numpy only.

The octree is the structure every other part agrees on: the trainer allocates features on its
cells' corners, the ``.vbnf`` file stores it as breadth-first child masks, and the decoder looks
points up in it. Conventions follow the SPC layout of kaolin (facts, not code): child index
``c = 4*x_bit + 2*y_bit + z_bit``, Morton codes interleave ``...x1 y1 z1 x0 y0 z0`` with z least
significant, and cells of each level are kept sorted by Morton code, which makes the breadth-first
child-mask order and the per-level cell order the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..limits import MAX_LEVEL
from .cell_grid import CellGrid, lookup_cells

DENSE_GRID_ENTRIES_PER_CORNER = 4  # see _dual_corners

# Corner c of a cell sits at offset (c>>2 & 1, c>>1 & 1, c & 1): the same order as child masks.
CORNER_OFFSETS = np.array([[(c >> 2) & 1, (c >> 1) & 1, c & 1] for c in range(8)], dtype=np.int64)


def morton_encode(coords: np.ndarray) -> np.ndarray:
    """Interleave the bits of non-negative integer coordinates [N, 3] into int64 codes."""
    coords = np.asarray(coords, dtype=np.int64)
    codes = np.zeros(coords.shape[0], dtype=np.int64)
    bits = int(coords.max()).bit_length() if coords.size else 0
    for bit in range(bits):
        for axis in range(3):
            codes |= ((coords[:, axis] >> bit) & 1) << (3 * bit + 2 - axis)
    return codes


def quantize(points: np.ndarray, level: int) -> np.ndarray:
    """Integer cell coordinates at ``level`` of points in [-1, 1]^3 (clamped to the grid)."""
    resolution = 1 << level
    cells = np.floor((np.asarray(points, dtype=np.float64) + 1.0) * 0.5 * resolution)
    return np.clip(cells, 0, resolution - 1).astype(np.int64)


@dataclass(frozen=True)
class SparseOctree:
    """Occupied cells of every level ``0..max_level``, each level sorted by Morton code.

    ``cells[l]`` holds the integer coordinates of level ``l``'s occupied cells; a cell is occupied
    exactly when at least one of its children is (the finest level decides), so the tree is
    fully described by its finest level, or equivalently by its breadth-first child masks.
    """

    cells: tuple[np.ndarray, ...]

    @property
    def max_level(self) -> int:
        return len(self.cells) - 1

    @classmethod
    def from_points(cls, points: np.ndarray, max_level: int, dilation: int = 0) -> SparseOctree:
        """Build the octree whose finest cells contain ``points`` (in [-1, 1]^3).

        ``dilation`` grows the finest level by that many cells in all 26 directions, so surfaces
        seen from few views still get a shell of cells to place density in.
        """
        if not 0 <= max_level <= MAX_LEVEL:
            raise ValueError(f"max_level must be in 0..{MAX_LEVEL}, got {max_level}")
        finest = np.unique(quantize(points, max_level), axis=0)
        if dilation > 0:
            span = np.arange(-dilation, dilation + 1)
            offsets = np.stack(np.meshgrid(span, span, span, indexing="ij"), -1).reshape(-1, 3)
            finest = (finest[:, None, :] + offsets[None]).reshape(-1, 3)
            finest = np.unique(np.clip(finest, 0, (1 << max_level) - 1), axis=0)
        return cls.from_finest_cells(finest, max_level)

    @classmethod
    def from_finest_cells(cls, finest: np.ndarray, max_level: int) -> SparseOctree:
        levels = [_sorted_unique(np.asarray(finest, dtype=np.int64).reshape(-1, 3))]
        for _ in range(max_level):
            levels.append(_sorted_unique(levels[-1] >> 1))
        return cls(tuple(reversed(levels)))

    @classmethod
    def from_child_masks(cls, masks_per_level: list[np.ndarray]) -> SparseOctree:
        """Rebuild from breadth-first child masks: ``masks_per_level[l]`` has one byte per cell
        of level ``l`` (in Morton order), bit ``c`` set when child ``c`` exists."""
        cells = [np.zeros((1, 3), dtype=np.int64)]
        for level, masks in enumerate(masks_per_level):
            masks = np.asarray(masks, dtype=np.uint8)
            if masks.shape != (cells[level].shape[0],):
                raise ValueError(
                    f"level {level} needs {cells[level].shape[0]} child masks, got {masks.size}"
                )
            bits = np.unpackbits(masks[:, None], axis=1, bitorder="little").astype(bool)
            parent, child = np.nonzero(bits)  # row-major: parents in order, children ascending
            cells.append((cells[level][parent] << 1) + CORNER_OFFSETS[child])
        return cls(tuple(cells))

    def child_masks(self, level: int) -> np.ndarray:
        """One byte per cell of ``level`` telling which of its 8 children are occupied."""
        occupied = self.children(level) >= 0
        return (occupied << np.arange(8)).sum(axis=1).astype(np.uint8)

    def truncated(self, max_level: int) -> SparseOctree:
        return SparseOctree(self.cells[: max_level + 1])

    @cached_property
    def _codes(self) -> tuple[np.ndarray, ...]:
        return tuple(morton_encode(level_cells) for level_cells in self.cells)

    def find_cells(self, level: int, cell_coords: np.ndarray) -> np.ndarray:
        """Index of each integer cell in ``cells[level]``, or -1 where it is not occupied."""
        codes = self._codes[level]
        wanted = morton_encode(cell_coords)
        position = np.minimum(np.searchsorted(codes, wanted), codes.size - 1)
        return np.where(codes[position] == wanted, position, -1)

    @cached_property
    def _grids(self) -> dict[int, CellGrid]:
        return {}

    def cell_grid(self, level: int) -> CellGrid:
        """The search-free lookup tables of ``level`` (built on first use, then kept)."""
        if level not in self._grids:
            self._grids[level] = CellGrid.build(self.cells[level], level)
        return self._grids[level]

    @cached_property
    def _corner_tables(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        return {}

    def _corners(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """The corner tables of ``level``, built on first use: a reader checking each level's
        corner count as it arrives must not pay for every coarser level again."""
        if level not in self._corner_tables:
            self._corner_tables[level] = _dual_corners(self.cells[level])
        return self._corner_tables[level]

    def corners(self, level: int) -> np.ndarray:
        """Integer coordinates [M, 3] of the distinct corners of ``level``'s cells (Morton order).
        Features live here, so neighbouring cells share them and interpolation is continuous."""
        return self._corners(level)[0]

    def cell_corners(self, level: int) -> np.ndarray:
        """For each cell of ``level`` the indices [N, 8] of its 8 corners in ``corners(level)``."""
        return self._corners(level)[1]

    def num_corners(self, level: int) -> int:
        return int(self.corners(level).shape[0])

    def children(self, level: int) -> np.ndarray:
        """For each cell of ``level`` the indices [N, 8] of its children in ``cells[level + 1]``
        (-1 where a child is empty): the table a front-to-back ray traversal descends with."""
        child_cells = self.cells[level + 1]
        table = np.full((self.cells[level].shape[0], 8), -1, dtype=np.int64)
        parent = self.find_cells(level, child_cells >> 1)
        slot = (child_cells & 1) @ np.array([4, 2, 1], dtype=np.int64)
        table[parent, slot] = np.arange(child_cells.shape[0])
        return table


def _sorted_unique(cells: np.ndarray) -> np.ndarray:
    unique = np.unique(cells, axis=0)
    return unique[np.argsort(morton_encode(unique), kind="stable")]


def _dual_corners(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct corners of ``cells`` in Morton order and each cell's 8 indices into them.

    Where the corners' bounding grid has at most :data:`DENSE_GRID_ENTRIES_PER_CORNER` points
    per corner reference (every level of the demo scene's octree), the corners are told apart
    by marking them on that grid, which needs no sort of the 8 references per cell: a reader's
    corner-count check of the finest level was most of a read (16 ms against 6.5 ms on the 27k
    cells of a 64 px synthetic scene's level 6).
    Sparser levels, where the grid would be mostly empty memory, are sorted."""
    all_corners = (cells[:, None, :] + CORNER_OFFSETS[None]).reshape(-1, 3)
    side = int(all_corners.max()) + 1 if all_corners.size else 1
    if side**3 > DENSE_GRID_ENTRIES_PER_CORNER * all_corners.shape[0]:
        codes = morton_encode(all_corners)
        _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
        return all_corners[first], inverse.reshape(-1, 8).astype(np.int64)
    keys = (all_corners[:, 0] * side + all_corners[:, 1]) * side + all_corners[:, 2]
    present = np.zeros(side**3, dtype=bool)
    present[keys] = True
    linear = np.flatnonzero(present)  # the distinct corners, x-major
    distinct = np.stack([linear // (side * side), linear // side % side, linear % side], axis=1)
    by_code = np.argsort(morton_encode(distinct), kind="stable")
    index_of = np.empty(side**3, dtype=np.int64)
    index_of[linear[by_code]] = np.arange(by_code.size)
    return distinct[by_code], index_of[keys].reshape(-1, 8)


def locate(octree: SparseOctree, level: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cell index (-1 where unallocated or outside the cube) and trilinear weights [N, 8] of
    points in [-1, 1]^3 at ``level``. The weights of corner c are products of u or 1-u per axis,
    u being the point's position inside its cell."""
    points = np.asarray(points, dtype=np.float64)
    scaled = (points + 1.0) * 0.5 * (1 << level)
    cell_coords = np.clip(np.floor(scaled), 0, (1 << level) - 1).astype(np.int64)
    local = scaled - cell_coords
    grid = octree.cell_grid(level)
    cell = lookup_cells(grid.root, grid.bricks, level, cell_coords).astype(np.int64) - 1
    inside = np.all((points >= -1.0) & (points <= 1.0), axis=1)
    cell = np.where(inside, cell, -1)
    factors = np.stack([1.0 - local, local], axis=1)  # [N, 2, 3]: weight of bit 0 / 1 per axis
    weights = (
        factors[:, CORNER_OFFSETS[:, 0], 0]
        * factors[:, CORNER_OFFSETS[:, 1], 1]
        * factors[:, CORNER_OFFSETS[:, 2], 2]
    )
    return cell, weights
