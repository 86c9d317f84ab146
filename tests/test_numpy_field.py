"""The numpy decoder against a deliberately naive per-point reference written from the spec."""

from __future__ import annotations

import math

import numpy as np
import pytest

from core.asset.field_data import FieldData, LevelData
from core.asset.numpy_field import (
    AVERAGING_DIRECTIONS,
    NumpyField,
    project_views,
    spherical_harmonics,
)
from core.asset.vbnf import encode_asset, read_asset
from core.asset.vbnf.example import random_field
from core.data.cameras import fibonacci_directions

STORES = [("dense", 0), ("codebook", 3), ("lowrank", 0), ("hashed", 5)]


def reference_corner_feature(level: LevelData, index: int, corner: tuple[int, int, int]) -> list:
    if level.kind == "dense":
        assert level.features is not None
        return list(level.features[index])
    if level.kind == "lowrank":
        assert level.coefficients is not None and level.basis is not None
        return list(level.coefficients[index] @ level.basis)
    assert level.codebook is not None
    if level.kind == "codebook":
        assert level.indices is not None
        return list(level.codebook[level.indices[index]])
    x, y, z = corner
    bits = int(math.log2(level.codebook.shape[0]))
    row = ((x * 1) ^ (y * 2654435761) ^ (z * 805459861)) % 2**64 % 2**bits
    return list(level.codebook[row])


def reference_query(
    field: FieldData, world: np.ndarray, finest: int, direction: np.ndarray
) -> tuple[float, list[float]]:
    """Density and RGB at one point, with plain loops over levels, corners and neurons."""
    point = [(float(world[axis]) - float(field.offset[axis])) * field.scale for axis in range(3)]
    feature = [0.0] * field.feature_dim
    inside = False
    for level in range(field.min_level, finest + 1):
        if any(abs(value) > 1.0 for value in point):
            break
        resolution = 2**level
        scaled = [(value + 1.0) / 2.0 * resolution for value in point]
        cell = tuple(min(max(math.floor(value), 0), resolution - 1) for value in scaled)
        cells = {tuple(map(int, row)): i for i, row in enumerate(field.octree.cells[level])}
        if cell not in cells:
            continue
        inside = inside or level == field.min_level
        corners = {tuple(map(int, row)): i for i, row in enumerate(field.octree.corners(level))}
        fraction = [scaled[axis] - cell[axis] for axis in range(3)]
        for dx in (0, 1):
            for dy in (0, 1):
                for dz in (0, 1):
                    weight = 1.0
                    for axis, bit in enumerate((dx, dy, dz)):
                        weight *= fraction[axis] if bit else 1.0 - fraction[axis]
                    corner = (cell[0] + dx, cell[1] + dy, cell[2] + dz)
                    level_data = field.levels[level - field.min_level]
                    values = reference_corner_feature(level_data, corners[corner], corner)
                    for i in range(field.feature_dim):
                        feature[i] += weight * float(values[i])
    norm = math.sqrt(sum(float(value) ** 2 for value in direction))
    unit = [float(value) / norm for value in direction]
    encoding = list(unit)
    for frequency in (1.0, 2.0, 4.0, 8.0):
        encoding += [math.sin(value * frequency) for value in unit]
        encoding += [math.cos(value * frequency) for value in unit]
    inputs = feature + encoding
    mlp = field.mlp
    hidden = [
        max(0.0, sum(float(w) * x for w, x in zip(row, inputs, strict=True)) + float(bias))
        for row, bias in zip(mlp.hidden_weight, mlp.hidden_bias, strict=True)
    ]
    out = [
        sum(float(w) * h for w, h in zip(row, hidden, strict=True)) + float(bias)
        for row, bias in zip(mlp.output_weight, mlp.output_bias, strict=True)
    ]
    density = max(0.0, out[0]) if inside else 0.0
    return density, [1.0 / (1.0 + math.exp(-value)) for value in out[1:]]


def query_points(field: FieldData, count: int, seed: int = 0) -> np.ndarray:
    """World points: a third in occupied finest cells, a third anywhere in the cube, a third
    partly outside it."""
    rng = np.random.default_rng(seed)
    cells = field.octree.cells[field.max_level]
    chosen = cells[rng.integers(0, cells.shape[0], size=count // 3)]
    occupied = (chosen + rng.uniform(size=chosen.shape)) * (2.0 / 2**field.max_level) - 1.0
    anywhere = rng.uniform(-1.0, 1.0, size=(count // 3, 3))
    beyond = rng.uniform(-1.3, 1.3, size=(count - 2 * (count // 3), 3))
    return field.to_world(np.concatenate([occupied, anywhere, beyond]))


@pytest.mark.parametrize(("store", "bitwidth"), STORES)
def test_decoder_matches_the_reference(store: str, bitwidth: int) -> None:
    field = random_field(store, bitwidth=max(bitwidth, 1), max_level=4, seed=3)
    decoder = NumpyField(field)
    points = query_points(field, 60)
    directions = np.random.default_rng(1).normal(size=points.shape)
    for level in range(field.min_level, field.max_level + 1):
        density, rgb = decoder.query(points, level, directions)
        assert density.dtype == np.float32 and rgb.dtype == np.float32
        expected = [
            reference_query(field, p, level, d) for p, d in zip(points, directions, strict=True)
        ]
        np.testing.assert_allclose(density, [e[0] for e in expected], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rgb, [e[1] for e in expected], rtol=1e-5, atol=1e-5)
        assert (density[: len(points) // 3] > 0).any()  # not trivially zero


def test_query_views_is_query_along_each_direction() -> None:
    field = random_field("codebook", seed=4)
    decoder = NumpyField(field)
    points = query_points(field, 50)
    directions = fibonacci_directions(6, hemisphere=False)
    density, rgb = decoder.query_views(points, field.max_level, directions, batch_size=7)
    for index, direction in enumerate(directions):
        one_density, one_rgb = decoder.query(points, field.max_level, direction)
        np.testing.assert_allclose(density[index], one_density, atol=1e-5)
        np.testing.assert_allclose(rgb[index], one_rgb, atol=1e-6)


def test_spherical_harmonics_fit_recovers_a_low_order_function_of_direction() -> None:
    directions = fibonacci_directions(40, hemisphere=False)
    basis = spherical_harmonics(directions, 2)
    # orthonormal over the sphere: the Fibonacci mean approximates the integral / 4 pi
    np.testing.assert_allclose(basis.T @ basis * (4 * np.pi / 40), np.eye(9), atol=0.05)
    truth = np.random.default_rng(0).normal(size=(9, 5, 3))
    values = np.einsum("db,bnc->dnc", basis, truth)
    np.testing.assert_allclose(project_views(values, directions, 2), truth, atol=1e-4)
    degree_one = project_views(values, directions, 1)  # the best fit of lower order
    np.testing.assert_allclose(degree_one, truth[:4], atol=0.1)
    with pytest.raises(ValueError, match="cannot fit"):
        project_views(values[:3], directions[:3], 1)


def test_view_averaged_colour_is_the_mean_over_the_documented_directions() -> None:
    field = random_field("codebook", seed=4)
    decoder = NumpyField(field)
    points = query_points(field, 90)
    averaged_density, averaged_rgb = decoder.query(points, field.max_level)
    per_direction = [decoder.query(points, field.max_level, d) for d in AVERAGING_DIRECTIONS]
    np.testing.assert_allclose(
        averaged_rgb, np.mean([rgb for _, rgb in per_direction], axis=0), atol=1e-6
    )
    mean_density = np.mean([density for density, _ in per_direction], axis=0)
    np.testing.assert_allclose(averaged_density, mean_density, atol=1e-5)


def test_averaging_directions_are_the_fibonacci_lattice() -> None:
    assert AVERAGING_DIRECTIONS.shape == (32, 3)
    np.testing.assert_allclose(np.linalg.norm(AVERAGING_DIRECTIONS, axis=1), 1.0)
    np.testing.assert_allclose(AVERAGING_DIRECTIONS[:, 2], 1.0 - (2 * np.arange(32) + 1) / 32)
    np.testing.assert_allclose(AVERAGING_DIRECTIONS.mean(axis=0), 0.0, atol=0.05)


def test_batches_do_not_change_results() -> None:
    field = random_field("lowrank", seed=5)
    decoder = NumpyField(field)
    points = query_points(field, 100)
    whole = decoder.query(points, field.max_level)
    batched = decoder.query(points, field.max_level, batch_size=7)
    for got, want in zip(batched, whole, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_density_is_zero_outside_the_coarsest_cells() -> None:
    field = random_field("dense", seed=6)
    decoder = NumpyField(field)
    points = query_points(field, 300)
    density, _ = decoder.query(points, field.max_level, np.array([0.0, 0.0, 1.0]))
    normalized = field.to_normalized(points)
    coarse = np.floor((normalized + 1.0) * 0.5 * 2**field.min_level).astype(int)
    in_cube = np.all(np.abs(normalized) <= 1.0, axis=1)
    occupied = {tuple(cell) for cell in field.octree.cells[field.min_level]}
    inside = in_cube & np.array([tuple(cell) in occupied for cell in coarse])
    assert (~inside).any() and np.all(density[~inside] == 0.0)


def test_decoding_a_truncated_asset_and_bad_levels() -> None:
    field = random_field("codebook", seed=7)
    data = encode_asset(field)
    prefix = read_asset(data[: read_asset(data).levels[1].cumulative_bytes]).field
    points = query_points(field, 30)
    got = NumpyField(prefix).query(points, prefix.max_level)
    want = NumpyField(field).query(points, prefix.max_level)
    for got_values, want_values in zip(got, want, strict=True):
        np.testing.assert_array_equal(got_values, want_values)
    with pytest.raises(ValueError, match="outside the field"):
        NumpyField(prefix).query(points, field.max_level)
