"""Cell lookup without search: integer cell coordinates -> index of the octree cell, numpy only.

A binary search over sorted cell keys cost ~345 ns a point in the trainer and dominated the
numpy field; a table read costs a few. Levels whose full grid fits ``DENSE_MAX_LEVEL`` (a
level-7 grid is 2 M int32 entries, 8 MiB) are one dense table. Finer levels use a *brick
tree*: a dense root grid at a coarser level, then for every occupied cell a brick of 8^3
entries that resolves three more levels, as many steps as needed; memory follows the occupied
cells instead of the cube's volume.

Entries store ``index + 1`` with 0 for "nothing here", and brick 0 of every step is all zeros,
so an empty entry leads to an empty brick and on to 0: the lookup is pure integer indexing
(``take``, no branches, no ``where``), which is why the same :func:`lookup_cells` serves numpy
arrays (the numpy field, in Blender) and torch tensors (trainer and renderer) alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np

DENSE_MAX_LEVEL = 7  # 2^21 entries
BRICK_BITS = 3  # levels resolved per brick: 8^3 = 512 entries

Array = TypeVar("Array")  # np.ndarray or torch.Tensor, never mixed


@dataclass(frozen=True)
class CellGrid:
    """The lookup tables of one level: ``root`` [(2^root_level)^3] and one brick table
    [(bricks + 1) * 512] per step; int32, entries are ``index + 1`` or 0."""

    level: int
    root_level: int
    root: np.ndarray
    bricks: tuple[np.ndarray, ...]

    @classmethod
    def build(cls, cells: np.ndarray, level: int) -> CellGrid:
        """Tables for ``cells`` [N, 3] (integer coordinates at ``level``, any order): a
        coordinate maps to its row in ``cells``."""
        cells = np.asarray(cells, dtype=np.int64).reshape(-1, 3)
        steps = max(0, -(-(level - DENSE_MAX_LEVEL) // BRICK_BITS))
        root_level = level - BRICK_BITS * steps
        # Occupied cells of each intermediate level, parents before children: row i of
        # ``levels[s]`` owns brick i + 1 of step s.
        parents = [np.unique(cells >> (BRICK_BITS * (steps - s)), axis=0) for s in range(steps)]
        root = np.zeros(1 << (3 * root_level), dtype=np.int32)
        targets = [*parents, cells]
        rows = np.arange(1, targets[0].shape[0] + 1, dtype=np.int64)
        root[_linear(targets[0], root_level)] = rows
        bricks = []
        for step in range(steps):
            owners, children = parents[step], targets[step + 1]
            owner_of_child = _rows_of(owners, children >> BRICK_BITS)
            table = np.zeros((owners.shape[0] + 1) << (3 * BRICK_BITS), dtype=np.int32)
            slot = _linear(children & ((1 << BRICK_BITS) - 1), BRICK_BITS)
            table[((owner_of_child + 1) << (3 * BRICK_BITS)) + slot] = np.arange(
                1, children.shape[0] + 1
            )
            bricks.append(table)
        return cls(level, root_level, root, tuple(bricks))

    @property
    def nbytes(self) -> int:
        return int(self.root.nbytes + sum(table.nbytes for table in self.bricks))


def lookup_cells(root: Array, bricks: tuple[Array, ...], level: int, coords: Array) -> Array:
    """Row + 1 of each integer cell [N, 3] (int64, inside the grid) in the cells the tables
    were built from, 0 where there is none. ``root`` and ``bricks`` are a :class:`CellGrid`'s
    tables as numpy arrays or as torch tensors (then ``coords`` is a tensor too)."""
    root_level = level - BRICK_BITS * len(bricks)
    x, y, z = coords[:, 0], coords[:, 1], coords[:, 2]  # type: ignore[index]
    shift = level - root_level
    key = (((x >> shift) << root_level | (y >> shift)) << root_level) | (z >> shift)
    # take: the same read as indexing, about a third faster in numpy and in torch
    node = root.take(key)  # type: ignore[attr-defined]
    mask = (1 << BRICK_BITS) - 1
    for table in bricks:
        shift -= BRICK_BITS
        slot = ((((x >> shift) & mask) << BRICK_BITS | ((y >> shift) & mask)) << BRICK_BITS) | (
            (z >> shift) & mask
        )
        node = table.take((node << (3 * BRICK_BITS)) + slot)  # type: ignore[attr-defined]
    return node


def _linear(cells: np.ndarray, level: int) -> np.ndarray:
    return (((cells[:, 0] << level) | cells[:, 1]) << level) | cells[:, 2]


def _rows_of(table_cells: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each ``wanted`` cell in ``table_cells`` (all present), by sorted linear keys."""
    bits = int(max(table_cells.max(initial=0), wanted.max(initial=0))).bit_length()
    keys = _linear(table_cells, bits)
    order = np.argsort(keys)
    return order[np.searchsorted(keys[order], _linear(wanted, bits))]
