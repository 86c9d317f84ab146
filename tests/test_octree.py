"""The sparse octree: construction, child masks, corners, and the two point lookups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.asset import octree as octree_module
from core.asset.octree import CORNER_OFFSETS, SparseOctree, locate, morton_encode
from core.neural.render.accel import LevelIndex


def random_octree(max_level: int = 5, seed: int = 0) -> SparseOctree:
    points = np.random.default_rng(seed).uniform(-0.8, 0.8, size=(300, 3))
    return SparseOctree.from_points(points, max_level, dilation=1)


def test_each_level_is_the_parents_of_the_next() -> None:
    octree = random_octree()
    for level in range(octree.max_level):
        parents = np.unique(octree.cells[level + 1] >> 1, axis=0)
        assert sorted(map(tuple, parents)) == sorted(map(tuple, octree.cells[level]))
        codes = morton_encode(octree.cells[level])
        assert np.all(np.diff(codes) > 0), "cells must be in strictly increasing Morton order"


def test_child_masks_round_trip() -> None:
    octree = random_octree()
    masks = [octree.child_masks(level) for level in range(octree.max_level)]
    rebuilt = SparseOctree.from_child_masks(masks)
    for original, copy in zip(octree.cells, rebuilt.cells, strict=True):
        np.testing.assert_array_equal(original, copy)


def test_corners_are_shared_between_neighbouring_cells() -> None:
    octree = random_octree()
    level = 4
    corners, cell_corners = octree.corners(level), octree.cell_corners(level)
    expected = octree.cells[level][:, None, :] + CORNER_OFFSETS[None]
    np.testing.assert_array_equal(corners[cell_corners], expected)
    assert corners.shape[0] < 8 * octree.cells[level].shape[0]
    assert len(np.unique(morton_encode(corners))) == corners.shape[0]


@pytest.mark.parametrize("dense_factor", [0, 4, 1 << 40])  # always sorted, as used, always dense
def test_corner_tables_are_the_same_on_either_path(
    dense_factor: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dense-grid and the sorting ways to find a level's corners agree exactly with the
    definition: distinct corners in increasing Morton order, each cell's corners among them."""
    monkeypatch.setattr(octree_module, "DENSE_GRID_ENTRIES_PER_CORNER", dense_factor)
    octree = SparseOctree(random_octree(max_level=6, seed=3).cells)  # no tables built yet
    for level in range(octree.max_level + 1):
        corners, cell_corners = octree.corners(level), octree.cell_corners(level)
        references = (octree.cells[level][:, None, :] + CORNER_OFFSETS[None]).reshape(-1, 3)
        codes = np.unique(morton_encode(references))
        np.testing.assert_array_equal(morton_encode(corners), codes)
        np.testing.assert_array_equal(corners[cell_corners].reshape(-1, 3), references)
        assert corners.dtype == cell_corners.dtype == np.int64


def test_numpy_and_torch_lookups_agree() -> None:
    octree = random_octree()
    points = np.random.default_rng(1).uniform(-1.1, 1.1, size=(5000, 3))
    for level in range(2, octree.max_level + 1):
        cell_np, weights_np = locate(octree, level, points)
        cell_t, weights_t = LevelIndex(octree, level).locate(torch.from_numpy(points))
        np.testing.assert_array_equal(cell_np, cell_t.numpy())
        np.testing.assert_allclose(weights_np, weights_t.numpy(), atol=1e-12)
        np.testing.assert_allclose(weights_np.sum(axis=1), 1.0, atol=1e-12)
        assert (cell_np >= 0).any() and (cell_np < 0).any()


def test_points_outside_the_cube_are_unallocated() -> None:
    octree = SparseOctree.from_points(np.array([[0.99, 0.99, 0.99]]), 3)
    cell, _ = locate(octree, 3, np.array([[0.99, 0.99, 0.99], [1.5, 0.99, 0.99]]))
    assert cell[0] >= 0 and cell[1] == -1
