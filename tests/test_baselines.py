"""Post-hoc baselines of Table 2: k-means VQ (kmVQ) and low-rank truncation (LRA) per level."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.asset.field_data import FieldData
from core.asset.vbnf import asset_info, encode_asset, read_asset
from core.asset.vbnf.example import random_field
from core.report.baselines import kmeans, kmeans_quantize, low_rank

FEATURE_DIM = 16


@pytest.fixture(scope="module")
def dense() -> FieldData:
    return random_field("dense", min_level=2, max_level=5, feature_dim=FEATURE_DIM, seed=3)


def _mse(field: FieldData, reference: FieldData) -> float:
    """Mean squared feature error over every corner of every level."""
    errors = [
        np.mean((level.corner_features(reference.octree.corners(level.level)) - ref.features) ** 2)
        for level, ref in zip(field.levels, reference.levels, strict=True)
    ]
    return float(np.mean(errors))


@pytest.mark.parametrize("bitwidth", [2, 4, 6])
def test_kmvq_codebook_has_two_to_the_b_entries_and_valid_indices(
    dense: FieldData, bitwidth: int
) -> None:
    quantized = kmeans_quantize(dense, bitwidth)
    assert quantized.store_kind == "codebook" and quantized.bitwidth == bitwidth
    for level, source in zip(quantized.levels, dense.levels, strict=True):
        assert level.codebook is not None and level.indices is not None
        assert level.codebook.shape == (1 << bitwidth, FEATURE_DIM)
        assert level.indices.shape == (source.features.shape[0],)  # type: ignore[union-attr]
        assert level.indices.min() >= 0 and level.indices.max() < 1 << bitwidth


def test_kmeans_beats_a_random_codebook_and_improves_with_bits(dense: FieldData) -> None:
    points = dense.levels[-1].features
    assert points is not None
    rng = np.random.default_rng(0)
    random_codebook = points[rng.choice(points.shape[0], 16, replace=False)]
    random_error = np.min(((points[:, None] - random_codebook[None]) ** 2).sum(-1), axis=1).mean()
    centroids, labels = kmeans(points, 16)
    kmeans_error = ((points - centroids[labels]) ** 2).sum(-1).mean()
    assert kmeans_error < 0.9 * random_error
    errors = [_mse(kmeans_quantize(dense, bits), dense) for bits in (2, 4, 6)]
    assert errors[0] > errors[1] > errors[2]


def test_kmeans_is_deterministic_for_a_seed(dense: FieldData) -> None:
    first, second = kmeans_quantize(dense, 4, seed=7), kmeans_quantize(dense, 4, seed=7)
    for a, b in zip(first.levels, second.levels, strict=True):
        np.testing.assert_array_equal(a.indices, b.indices)  # type: ignore[arg-type]
        np.testing.assert_array_equal(a.codebook, b.codebook)  # type: ignore[arg-type]


def test_kmeans_with_fewer_points_than_clusters_is_exact() -> None:
    points = np.arange(12, dtype=np.float64).reshape(4, 3)
    centroids, labels = kmeans(points, 8)
    np.testing.assert_array_equal(centroids[labels], points)


def test_lra_is_exact_at_full_rank_and_error_falls_with_rank(dense: FieldData) -> None:
    assert _mse(low_rank(dense, FEATURE_DIM), dense) < 1e-10
    errors = [_mse(low_rank(dense, rank), dense) for rank in (2, 4, 8, 12)]
    assert all(a > b for a, b in itertools.pairwise(errors))


def test_lra_rejects_a_rank_above_the_feature_size(dense: FieldData) -> None:
    with pytest.raises(ValueError, match="rank"):
        low_rank(dense, FEATURE_DIM + 1)


def test_baselines_need_a_dense_field(dense: FieldData) -> None:
    with pytest.raises(ValueError, match="dense"):
        low_rank(kmeans_quantize(dense, 2), 4)


def test_lra_bytes_are_coefficients_plus_basis(dense: FieldData) -> None:
    rank = 4
    info = asset_info(encode_asset(low_rank(dense, rank)))
    for layout in info["levels"]:
        corners = dense.octree.num_corners(layout["level"])
        assert layout["feature_bytes"] == 2 * corners * rank
        assert layout["codebook_bytes"] == 2 * rank * FEATURE_DIM
        assert layout["index_bytes"] == 0


def test_kmvq_bytes_are_packed_indices_plus_codebook(dense: FieldData) -> None:
    bits = 4
    info = asset_info(encode_asset(kmeans_quantize(dense, bits)))
    for layout in info["levels"]:
        corners = dense.octree.num_corners(layout["level"])
        assert layout["index_bytes"] == (corners * bits + 7) // 8
        assert layout["codebook_bytes"] == 2 * (1 << bits) * FEATURE_DIM


@pytest.mark.parametrize("make", [lambda f: kmeans_quantize(f, 4), lambda f: low_rank(f, 8)])
def test_baselines_round_trip_through_the_asset(dense: FieldData, make) -> None:
    compressed = make(dense)
    decoded = read_asset(encode_asset(compressed)).field
    assert decoded.store_kind == compressed.store_kind
    for written, read in zip(compressed.levels, decoded.levels, strict=True):
        corners = dense.octree.corners(written.level)
        np.testing.assert_allclose(
            read.corner_features(corners), written.corner_features(corners), atol=2e-3, rtol=2e-3
        )
