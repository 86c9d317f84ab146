"""Evaluating a :class:`FieldData` with numpy alone: density and colour at world points.

This is the decoder that ships with the Blender extension, where torch is not available, so it
must reproduce the torch trainer's field exactly (up to float rounding):

- ``normalized = (world - offset) * scale``;
- for each feature level ``L`` from ``min_level`` to the requested level, the trilinear blend of
  the 8 corner features of the point's level-``L`` cell (nothing where that cell is not
  allocated), summed over levels;
- ``h = relu(W_h [feature, encode_view_directions(d)] + b_h)``, ``out = W_o h + b_o``;
  density ``relu(out[0])``, colour ``sigmoid(out[1:4])``;
- density 0 outside the coarsest level's occupied cells, where the trainer never samples.

Without view directions the field is view-averaged: density and colour are the means over the
fixed :data:`AVERAGING_DIRECTIONS`. The view encoding enters the hidden layer linearly, so the
feature part of the hidden layer is computed once and each direction only adds its own
precomputed ``W_h[:, k:] @ encode(d)`` before the ReLU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.cameras import fibonacci_directions
from .field_data import FieldData, LevelData, encode_view_directions
from .octree import SparseOctree, locate

AVERAGING_DIRECTION_COUNT = 32
DEFAULT_BATCH_POINTS = 1 << 15

AVERAGING_DIRECTIONS = fibonacci_directions(AVERAGING_DIRECTION_COUNT, hemisphere=False)


@dataclass(frozen=True)
class _LevelTable:
    """What one level's lookups gather from. Codebook stores stay compressed in memory: a
    small-integer index per corner into a tiny table, not a float vector per corner, so an
    imported asset costs Blender about what it costs on disk."""

    table: np.ndarray  # [rows, k] float32: the codebook, or one feature vector per corner
    corner_rows: np.ndarray | None  # [M] row of ``table`` for each corner; None: row = corner
    cell_corners: np.ndarray  # [cells, 8] corner indices

    @classmethod
    def of(cls, level: LevelData, octree: SparseOctree) -> _LevelTable:
        corners = octree.corners(level.level)
        rows = level.corner_rows(corners)
        if rows is None:
            table = level.corner_features(corners)
        else:
            table = level.codebook  # type: ignore[assignment]
            rows = rows.astype(np.min_scalar_type(max(int(table.shape[0]) - 1, 0)))
        return cls(np.asarray(table, np.float32), rows, octree.cell_corners(level.level))

    def gather(self, corner_ids: np.ndarray) -> np.ndarray:
        """Feature vectors [..., k] of the given corners."""
        if self.corner_rows is not None:
            corner_ids = np.take(self.corner_rows, corner_ids)
        # np.take: the same gathers as fancy indexing, about twice as fast
        return np.take(self.table, corner_ids, axis=0)


class NumpyField:
    """Vectorised, batched evaluation of one field; per-level corner feature tables and the
    split MLP weights are prepared once, so repeated queries only pay for the points."""

    def __init__(self, field: FieldData) -> None:
        if not field.levels:
            raise ValueError("field has no feature levels to decode")
        self.field = field
        octree = field.octree
        self._tables = [_LevelTable.of(level, octree) for level in field.levels]
        k = field.feature_dim
        hidden_weight = np.asarray(field.mlp.hidden_weight, dtype=np.float32)
        self._feature_weight = np.ascontiguousarray(hidden_weight[:, :k].T)  # [k, H]
        self._view_weight = np.ascontiguousarray(hidden_weight[:, k:].T)  # [27, H]
        self._hidden_bias = np.asarray(field.mlp.hidden_bias, dtype=np.float32)
        self._output_weight = np.asarray(field.mlp.output_weight, dtype=np.float32)  # [4, H]
        self._output_bias = np.asarray(field.mlp.output_bias, dtype=np.float32)
        self._averaging_view_terms = list(self._view_terms(AVERAGING_DIRECTIONS))

    def query(
        self,
        points_world: np.ndarray,
        level: int,
        directions: np.ndarray | None = None,
        batch_size: int = DEFAULT_BATCH_POINTS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Density [N] (ReLU, float32) and RGB [N, 3] (sigmoid, float32) at world points [N, 3]
        using feature levels ``min_level..level``.

        ``directions`` are the view directions [N, 3] or one shared [3] (normalised here); the
        default averages over :data:`AVERAGING_DIRECTIONS`. ``batch_size`` bounds memory: about
        ``batch_size * (hidden width + 8 * feature_dim) * 8`` bytes of temporaries.
        """
        field = self.field
        if not field.min_level <= level <= field.max_level:
            raise ValueError(
                f"level {level} outside the field's {field.min_level}..{field.max_level}"
            )
        points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        unit_directions = None
        if directions is not None:
            broadcast = np.broadcast_to(np.asarray(directions, dtype=np.float64), points.shape)
            unit_directions = broadcast / np.linalg.norm(broadcast, axis=-1, keepdims=True)
        density = np.empty(points.shape[0], dtype=np.float32)
        rgb = np.empty((points.shape[0], 3), dtype=np.float32)
        for start in range(0, points.shape[0], batch_size):
            batch = slice(start, start + batch_size)
            views = (
                self._averaging_view_terms
                if unit_directions is None
                else [self._view_terms(unit_directions[batch])]
            )
            density[batch], rgb[batch] = self._evaluate(points[batch], level, views)
        return density, rgb

    def _view_terms(self, unit_directions: np.ndarray) -> np.ndarray:
        """The view encoding's contribution to the hidden layer, [N, H]."""
        return encode_view_directions(unit_directions) @ self._view_weight

    def _evaluate(
        self, points: np.ndarray, level: int, views: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        features, inside = self._features(points, level)
        hidden_input = features @ self._feature_weight + self._hidden_bias
        hidden = np.empty_like(hidden_input)
        density = np.zeros(points.shape[0], dtype=np.float32)
        rgb = np.zeros((points.shape[0], 3), dtype=np.float32)
        for view in views:
            np.maximum(np.add(hidden_input, view, out=hidden), 0.0, out=hidden)
            # einsum beats BLAS for this 4-wide output by a wide margin
            out = np.einsum("nh,oh->no", hidden, self._output_weight) + self._output_bias
            density += np.maximum(out[:, 0], 0.0)
            rgb += 0.5 + 0.5 * np.tanh(0.5 * out[:, 1:4])  # sigmoid, without exp overflow
        density *= np.float32(1.0 / len(views))
        rgb *= np.float32(1.0 / len(views))
        density[~inside] = 0.0
        return density, rgb

    def _features(self, points_world: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Summed trilinear corner features [N, k] of levels ``min_level..level`` and whether
        each point lies in an occupied cell of the coarsest level."""
        field = self.field
        normalized = field.to_normalized(points_world)
        features = np.zeros((points_world.shape[0], field.feature_dim), dtype=np.float32)
        inside = np.zeros(points_world.shape[0], dtype=bool)
        for table_level, table in enumerate(self._tables[: level - field.min_level + 1]):
            cell, weights = locate(field.octree, field.min_level + table_level, normalized)
            allocated = cell >= 0
            if table_level == 0:
                inside = allocated
            corner_ids = np.take(table.cell_corners, np.where(allocated, cell, 0), axis=0)
            weights = np.where(allocated[:, None], weights, 0.0).astype(np.float32)
            features += np.einsum("nc,nck->nk", weights, table.gather(corner_ids))
        return features, inside
