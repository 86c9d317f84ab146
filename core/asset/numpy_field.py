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

:meth:`NumpyField.query_views` keeps the per-direction values instead of averaging them, and
:func:`spherical_harmonics` / :func:`project_views` turn them into low-order real spherical
harmonic coefficients: how the Blender preview keeps view-dependent colour (a gold highlight
moves with the eye) in a few grids that a volume shader evaluates from the ray direction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.cameras import fibonacci_directions
from .cell_grid import CellGrid, lookup_cells
from .field_data import FieldData, encode_view_directions

AVERAGING_DIRECTION_COUNT = 32
# Points per batch: a batch costs a few hundred numpy calls, so it must be long enough to hide them.
DEFAULT_BATCH_POINTS = 1 << 13
# Points whose corner features are gathered at once: [n, 8 levels, k] floats, about an L2
# cache (1.3 MB at 5 levels, k = 16), read back by the blend before they leave it.
GATHER_BLOCK_POINTS = 1 << 9
# Rows of the hidden layer computed and shifted per direction at once: with their clipped
# copy, 1 MB.
SHIFT_BLOCK_ROWS = 1 << 10

AVERAGING_DIRECTIONS = fibonacci_directions(AVERAGING_DIRECTION_COUNT, hemisphere=False)

# Real spherical harmonics up to degree 2 (the usual normalisation, as in graphics' irradiance
# maps and 3D Gaussian splatting). Each basis function is a constant times a polynomial of the
# direction, named here in the order Y00, Y1-1, Y10, Y11, Y2-2 .. Y22; a shader that stores the
# constants with the coefficients only multiplies direction components.
SH_DEGREE_MAX = 2
SH_POLYNOMIALS = ("1", "y", "z", "x", "xy", "yz", "3zz-1", "xz", "xx-yy")
SH_CONSTANTS = np.array(
    [
        0.28209479177387814,
        *[0.4886025119029199] * 3,
        1.0925484305920792,
        1.0925484305920792,
        0.31539156525252005,
        1.0925484305920792,
        0.5462742152960396,
    ]
)


def sh_coefficient_count(degree: int) -> int:
    return (degree + 1) ** 2


def spherical_harmonics(directions: np.ndarray, degree: int) -> np.ndarray:
    """The real SH basis [D, (degree + 1)^2] at unit directions [D, 3] (degree 0..2)."""
    if not 0 <= degree <= SH_DEGREE_MAX:
        raise ValueError(f"spherical harmonics degree {degree} outside 0..{SH_DEGREE_MAX}")
    x, y, z = np.asarray(directions, dtype=np.float64).reshape(-1, 3).T
    polynomials = [np.ones_like(x), y, z, x, x * y, y * z, 3.0 * z * z - 1.0, x * z, x * x - y * y]
    count = sh_coefficient_count(degree)
    return np.stack(polynomials[:count], axis=-1) * SH_CONSTANTS[:count]


def project_views(values: np.ndarray, directions: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares SH coefficients [B, ...] of ``values`` [D, ...] seen from unit
    ``directions`` [D, 3]: the low-order function of direction closest to the samples."""
    basis = spherical_harmonics(directions, degree)
    if basis.shape[0] < basis.shape[1]:
        raise ValueError(f"{basis.shape[0]} directions cannot fit {basis.shape[1]} coefficients")
    solve = np.linalg.pinv(basis).astype(np.float32)  # [B, D]
    flat = np.asarray(values, dtype=np.float32).reshape(values.shape[0], -1)
    return (solve @ flat).reshape(basis.shape[1], *values.shape[1:])


@dataclass(frozen=True)
class _CornerTable:
    """Every level's corners in one table, so that a point gathers the 8 corner rows of all its
    levels in one call and blends them in one small product, instead of a pass per level.

    Codebook stores stay compressed in memory: a small-integer index per cell corner into a
    tiny table, not a float vector per corner, so an imported asset costs Blender about what it
    costs on disk. Each level's cells start with an empty cell whose corners are a zero row:
    an unallocated cell (lookup 0) reads it, so no masks are needed on the way."""

    table: np.ndarray  # [rows, k] float32: per level its codebook or corner vectors, then 0
    cell_rows: np.ndarray  # [levels + cells, 8] table row of each corner of each cell
    cell_offsets: np.ndarray  # [levels] where each level's cells (its empty cell first) start
    grids: tuple[CellGrid, ...]  # integer cell -> 1 + cell index (0: none), without search

    @classmethod
    def of(cls, field: FieldData) -> _CornerTable:
        octree = field.octree
        tables, cell_rows, row_offset = [], [], 0
        for level in field.levels:
            corners = octree.corners(level.level)
            rows = level.corner_rows(corners)
            cell_corners = octree.cell_corners(level.level)
            if rows is None:
                table = level.corner_features(corners)
            else:
                table = level.codebook  # type: ignore[assignment]
                cell_corners = np.take(rows, cell_corners)
            zero_row = row_offset + int(table.shape[0])
            cell_rows += [np.full((1, 8), zero_row), cell_corners + row_offset]
            tables += [np.asarray(table, np.float32), np.zeros((1, field.feature_dim), np.float32)]
            row_offset = zero_row + 1
        cell_counts = [1 + len(octree.cells[level.level]) for level in field.levels]
        return cls(
            np.concatenate(tables),
            np.concatenate(cell_rows).astype(np.min_scalar_type(row_offset - 1)),
            np.cumsum([0, *cell_counts[:-1]]),
            tuple(octree.cell_grid(level.level) for level in field.levels),
        )


@dataclass(frozen=True)
class _Workspace:
    """Buffers that every batch of one query reuses. Multi-megabyte temporaries allocated
    afresh per batch went back to the system and returned as new pages, each zeroed by the
    kernel on first touch: 13 % of the decoder's time was page faults."""

    corners: np.ndarray  # [gather block, 8 levels, k] gathered corner features
    hidden: np.ndarray  # [shift block, H] a block of the hidden layer before its ReLU
    clipped: np.ndarray  # [shift block, H] that block shifted by one direction
    raw: np.ndarray  # [views, batch, 4] the output layer, before its activations
    density: np.ndarray  # [views, batch]
    rgb: np.ndarray  # [3, views, batch]

    @classmethod
    def of(
        cls, field: FieldData, points: int, batch_size: int, level: int, views: int
    ) -> _Workspace:
        batch = max(1, min(points, batch_size))
        corners = 8 * (level - field.min_level + 1)
        hidden = field.mlp.hidden_bias.shape[0]
        return cls(
            np.empty((min(batch, GATHER_BLOCK_POINTS), corners, field.feature_dim), np.float32),
            np.empty((min(batch, SHIFT_BLOCK_ROWS), hidden), dtype=np.float32),
            np.empty((min(batch, SHIFT_BLOCK_ROWS), hidden), dtype=np.float32),
            np.empty((views, batch, 4), dtype=np.float32),
            np.empty((views, batch), dtype=np.float32),
            np.empty((3, views, batch), dtype=np.float32),
        )


class NumpyField:
    """Vectorised, batched evaluation of one field; the joint corner table and the MLP weights
    are prepared once, so repeated queries only pay for the points.

    Arrays run along the points ([3, N] positions, [L, 2, 3, N] weights): numpy costs about a
    microsecond per call and more per short row, so rows of 3 or 8 values would cost more than
    the arithmetic. Batches of :data:`DEFAULT_BATCH_POINTS` amortise the calls; the gather and
    the per-direction work run in blocks that stay in cache.
    """

    def __init__(self, field: FieldData) -> None:
        if not field.levels:
            raise ValueError("field has no feature levels to decode")
        self.field = field
        self._corners = _CornerTable.of(field)
        k = field.feature_dim
        mlp = field.mlp
        hidden_weight = np.asarray(mlp.hidden_weight, dtype=np.float32)
        # Rows for the inputs [features, 1, view encoding]: the bias rides in the product, and
        # the first k + 1 rows alone give the view-free part of the hidden layer.
        self._hidden_weight = np.ascontiguousarray(
            np.concatenate(
                [hidden_weight[:, :k], mlp.hidden_bias[:, None], hidden_weight[:, k:]], 1
            ).T,
            dtype=np.float32,
        )  # [k + 1 + 27, H]
        # The colour rows are halved: sigmoid(x) = 0.5 + 0.5 tanh(x / 2), and halving is exact.
        halve = np.array([1.0, 0.5, 0.5, 0.5], dtype=np.float32)
        output_weight = np.asarray(mlp.output_weight, dtype=np.float32) * halve[:, None]
        self._output_weight = np.ascontiguousarray(output_weight.T)  # [H, 4]
        self._output_bias = np.asarray(mlp.output_bias, dtype=np.float32) * halve
        self._no_shift = np.zeros((1, self._hidden_weight.shape[1]), dtype=np.float32)
        self._averaging_shifts = self._view_shifts(AVERAGING_DIRECTIONS)

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
        ``batch_size * (hidden width + 8 * directions + 25 * levels) * 4`` bytes of temporaries
        (directions: 1 given, 32 averaged), 2 KiB a point at the defaults.
        """
        self._check_level(level)
        points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        if directions is not None:
            directions = np.broadcast_to(np.asarray(directions, dtype=np.float64), points.shape)
        density = np.empty(points.shape[0], dtype=np.float32)
        rgb = np.empty((points.shape[0], 3), dtype=np.float32)
        views = len(AVERAGING_DIRECTIONS) if directions is None else 1
        workspace = _Workspace.of(self.field, points.shape[0], batch_size, level, views)
        for start in range(0, points.shape[0], batch_size):
            batch = slice(start, start + batch_size)
            features, occupied = self._features(points[batch], level, workspace)
            if directions is None:
                inputs = self._mlp_inputs(features, None)
                shifts = self._averaging_shifts
            else:
                columns = np.ascontiguousarray(directions[batch].T)  # [3, N]
                unit_directions = (columns / np.linalg.norm(columns, axis=0)).T
                inputs = self._mlp_inputs(features, unit_directions)
                shifts = self._no_shift
            view_density, view_rgb = self._decode(inputs, shifts, occupied, workspace)
            density[batch] = view_density.mean(axis=0)
            rgb[batch] = view_rgb.mean(axis=1).T
        return density, rgb

    def query_views(
        self,
        points_world: np.ndarray,
        level: int,
        directions: np.ndarray,
        batch_size: int = DEFAULT_BATCH_POINTS,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Density [D, N] and RGB [D, N, 3] at world points [N, 3] seen along each of the unit
        ``directions`` [D, 3]: what :meth:`query` averages, kept per direction. The features are
        interpolated once per point, whatever the number of directions."""
        self._check_level(level)
        points = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        shifts = self._view_shifts(np.asarray(directions, dtype=np.float64).reshape(-1, 3))
        density = np.empty((shifts.shape[0], points.shape[0]), dtype=np.float32)
        rgb = np.empty((shifts.shape[0], points.shape[0], 3), dtype=np.float32)
        workspace = _Workspace.of(self.field, points.shape[0], batch_size, level, len(shifts))
        for start in range(0, points.shape[0], batch_size):
            batch = slice(start, start + batch_size)
            features, occupied = self._features(points[batch], level, workspace)
            inputs = self._mlp_inputs(features, None)
            view_density, view_rgb = self._decode(inputs, shifts, occupied, workspace)
            density[:, batch] = view_density
            for channel, plane in enumerate(view_rgb):  # [V, N] planes: long loops
                rgb[:, batch, channel] = plane
        return density, rgb

    def _check_level(self, level: int) -> None:
        field = self.field
        if not field.min_level <= level <= field.max_level:
            raise ValueError(
                f"level {level} outside the field's {field.min_level}..{field.max_level}"
            )

    def _view_shifts(self, unit_directions: np.ndarray) -> np.ndarray:
        """What each direction [D, 3] adds to the hidden layer, [D, H]."""
        k = self.field.feature_dim
        return encode_view_directions(unit_directions) @ self._hidden_weight[k + 1 :]

    def _mlp_inputs(self, features: np.ndarray, unit_directions: np.ndarray | None) -> np.ndarray:
        """The hidden layer's inputs as columns [k + 1 (+ 27), N]: the features, a 1 for the
        bias and the encoding of ``unit_directions`` [N, 3]; without them the caller shifts the
        hidden layer per direction."""
        parts = [features.T, np.ones((1, features.shape[0]), dtype=np.float32)]
        if unit_directions is not None:
            parts.append(encode_view_directions(unit_directions).T)
        return np.concatenate(parts)

    def _decode(
        self,
        inputs: np.ndarray,
        shifts: np.ndarray,
        occupied: np.ndarray,
        workspace: _Workspace,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Density [V, N] and RGB [3, V, N] from the hidden layer of ``inputs`` [K, N] shifted
        by each of ``shifts`` [V, H] (a direction's view term). relu(h + s) = max(h, -s) + s
        exactly, so a shift costs one pass over [N, H], and the output layer's ``W_o s`` is one
        small product. Block by block, so that the hidden layer is read while in cache."""
        hidden_weight = self._hidden_weight[: inputs.shape[0]]
        count = inputs.shape[1]
        raw = workspace.raw[:, :count]
        for start in range(0, count, SHIFT_BLOCK_ROWS):
            block = slice(start, start + SHIFT_BLOCK_ROWS)
            block_inputs = inputs[:, block].T
            hidden = workspace.hidden[: block_inputs.shape[0]]
            np.matmul(block_inputs, hidden_weight, out=hidden)
            clipped = workspace.clipped[: block_inputs.shape[0]]
            for negated, out in zip(-shifts, raw[:, block], strict=True):
                np.maximum(hidden, negated, out=clipped)
                np.matmul(clipped, self._output_weight, out=out)
        constant = shifts @ self._output_weight + self._output_bias  # [V, 4]
        # channel by channel: the [V, N] planes are long loops, [V, N, 3] blocks are not
        density = np.add(raw[..., 0], constant[:, :1], out=workspace.density[:, :count])
        np.maximum(density, np.float32(0.0), out=density)
        density[:, ~occupied] = 0.0
        rgb = workspace.rgb[:, :, :count]
        for channel, plane in enumerate(rgb, start=1):
            np.add(raw[..., channel], constant[:, channel : channel + 1], out=plane)
        np.tanh(rgb, out=rgb)
        rgb *= np.float32(0.5)
        rgb += np.float32(0.5)
        return density, rgb

    def _features(
        self, points_world: np.ndarray, level: int, workspace: _Workspace
    ) -> tuple[np.ndarray, np.ndarray]:
        """Summed trilinear corner features [N, k] of levels ``min_level..level`` and whether
        each point lies in an occupied cell of the coarsest level.

        The same arithmetic as :func:`core.asset.octree.locate` and the torch ``LevelIndex``
        (float64 positions, weights as products of per-axis pairs), done once for all levels:
        a coarser level's cell is the finest one shifted (floor(x / 2^m) = floor(floor(x) / 2^m))
        and its in-cell position the finest one rescaled, exactly as computed per level."""
        field = self.field
        corners = self._corners
        levels = range(field.min_level, level + 1)
        count = points_world.shape[0]
        normalized = field.to_normalized(np.ascontiguousarray(points_world.T).T).T  # [3, N]
        in_cube = np.all(np.abs(normalized) <= 1.0, axis=0)
        resolution = 1 << level
        scaled = (normalized + 1.0) * (0.5 * resolution)
        finest = np.clip(np.floor(scaled), 0, resolution - 1)
        fraction = scaled - finest
        finest_cells = finest.astype(np.int64)
        shifts = level - np.array(levels)
        inner = finest_cells & ((1 << shifts) - 1)[:, None, None]  # [L, 3, N]
        pairs = np.empty((len(levels), 2, 3, count), dtype=np.float32)  # 1 - u, u per axis
        np.multiply(inner + fraction, np.ldexp(1.0, -shifts)[:, None, None], out=pairs[:, 1])
        np.subtract(1.0, pairs[:, 1], out=pairs[:, 0])
        x, y, z = pairs[:, :, 0], pairs[:, :, 1], pairs[:, :, 2]
        # corner c = 4 x + 2 y + z of each level, written point by point for the blend
        weights = np.empty((count, len(levels), 4, 2), dtype=np.float32)
        xy = (x[:, :, None] * y[:, None]).reshape(-1, 4, 1, count)
        np.multiply(xy, z[:, None], out=weights.transpose(1, 2, 3, 0))
        # cell of each level, 0 where there is none or the point lies outside the cube (whose
        # clipped coordinates would find an edge cell)
        cells = np.empty((len(levels), count), dtype=np.int64)
        grids = corners.grids[: len(levels)]
        for grid, shift, level_cells in zip(grids, shifts, cells, strict=True):
            found = lookup_cells(grid.root, grid.bricks, grid.level, (finest_cells >> shift).T)
            np.multiply(found, in_cube, out=level_cells)
        occupied = cells[0] > 0
        cells += corners.cell_offsets[: len(levels), None]
        rows = np.take(corners.cell_rows, cells.T, axis=0).reshape(count, 1, -1)  # [N, 1, 8 L]
        weights = weights.reshape(rows.shape)
        blended = np.empty((count, 1, field.feature_dim), dtype=np.float32)
        for start in range(0, count, GATHER_BLOCK_POINTS):
            block = slice(start, start + GATHER_BLOCK_POINTS)
            block_rows = rows[block, 0]
            corner_features = workspace.corners[: block_rows.shape[0]]  # [n, 8 L, k]
            # rows are valid by construction; "clip" only lets take write into ``out`` unbuffered
            np.take(corners.table, block_rows, axis=0, out=corner_features, mode="clip")
            np.matmul(weights[block], corner_features, out=blended[block])
        return blended[:, 0], occupied
