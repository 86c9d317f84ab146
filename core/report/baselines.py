"""Post-hoc compression of a trained uncompressed grid: the kmVQ and LRA rows of Table 2.

Both act on each octree level's corner features alone, after training, with the decoder MLP
left as it is; that is the point of the comparison (paper section 5.2): they cannot adapt the
rest of the model to their error, VQ-AD learns its indices and codebook with it.

- :func:`kmeans_quantize` (kmVQ): per level, a ``2^b``-entry codebook from k-means on the
  level's features and each corner's nearest entry as its b-bit index. Same store and same
  bytes as VQ-AD at that bitwidth, so the two compare at equal size.
- :func:`low_rank` (LRA): per level, the KLT truncated to ``f`` factors. The features are *not*
  centred: the ``lowrank`` store holds ``coefficients @ basis`` and no mean, and the truncated
  SVD of the raw features is the best rank-``f`` product there is (Eckart-Young), so centring
  would need an extra basis row and coefficient column (one more factor) to be representable.

Numpy only (seeded, deterministic), so the results do not depend on torch or the device.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..asset.field_data import FieldData, LevelData

KMEANS_ITERATIONS = 30  # Lloyd steps; the assignment is stable well before this on our grids


def kmeans(
    points: np.ndarray, clusters: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Centroids [clusters, k] and labels [N] of ``points`` [N, k] (k-means++ seeding, then a
    fixed number of Lloyd steps). With no more points than clusters every point is its own
    centroid and the spare centroids are zero, which is exact."""
    points = np.asarray(points, dtype=np.float64)
    count = points.shape[0]
    if count <= clusters:
        centroids = np.zeros((clusters, points.shape[1]))
        centroids[:count] = points
        return centroids, np.arange(count)
    rng = np.random.default_rng(seed)
    centroids = _kmeans_plus_plus(points, clusters, rng)
    labels = np.zeros(count, dtype=np.int64)
    for _ in range(iterations):
        distances = _squared_distances(points, centroids)
        labels = distances.argmin(axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, labels, points)
        sizes = np.bincount(labels, minlength=clusters)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = np.flatnonzero(~filled)
        if empty.size:  # re-seed dead entries at the worst-represented points
            errors = distances[np.arange(count), labels]
            centroids[empty] = points[np.argsort(errors)[::-1][: empty.size]]
    labels = _squared_distances(points, centroids).argmin(axis=1)
    return centroids, labels


def _kmeans_plus_plus(points: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Arthur & Vassilvitskii 2007: each new centre drawn with probability proportional to the
    squared distance to the nearest centre so far."""
    centroids = np.empty((clusters, points.shape[1]))
    centroids[0] = points[rng.integers(points.shape[0])]
    nearest = ((points - centroids[0]) ** 2).sum(axis=1)
    for index in range(1, clusters):
        total = nearest.sum()
        if total > 0.0:
            chosen = rng.choice(points.shape[0], p=nearest / total)
        else:  # fewer distinct points than clusters: any point will do
            chosen = rng.integers(points.shape[0])
        centroids[index] = points[chosen]
        nearest = np.minimum(nearest, ((points - centroids[index]) ** 2).sum(axis=1))
    return centroids


def _squared_distances(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """[N, K] squared Euclidean distances via |x|^2 - 2 x.c + |c|^2 (no [N, K, k] temporary)."""
    distances = (
        (points**2).sum(axis=1)[:, None]
        - 2.0 * points @ centroids.T
        + (centroids**2).sum(axis=1)[None, :]
    )
    return np.maximum(distances, 0.0)


def kmeans_quantize(
    field: FieldData, bitwidth: int, iterations: int = KMEANS_ITERATIONS, seed: int = 0
) -> FieldData:
    """kmVQ: the dense ``field`` with each level's features replaced by a b-bit codebook store."""
    levels = []
    for level in _dense_levels(field):
        features = level.features
        assert features is not None
        codebook, indices = kmeans(features, 1 << bitwidth, iterations, seed + level.level)
        levels.append(
            LevelData(
                level.level, "codebook", codebook=codebook.astype(np.float32), indices=indices
            )
        )
    return replace(field, levels=levels, bitwidth=bitwidth, rank=0)


def low_rank(field: FieldData, rank: int) -> FieldData:
    """LRA: the dense ``field`` with each level's features [M, k] replaced by coefficients
    [M, f] times a basis [f, k], the top ``f`` right singular vectors of the (uncentred)
    features."""
    if not 1 <= rank <= field.feature_dim:
        raise ValueError(f"rank must be in 1..{field.feature_dim}, got {rank}")
    levels = []
    for level in _dense_levels(field):
        features = np.asarray(level.features, dtype=np.float64)
        _, _, right = np.linalg.svd(features, full_matrices=False)
        basis = np.zeros((rank, field.feature_dim))
        kept = min(rank, right.shape[0])  # a level with fewer corners than f has fewer factors
        basis[:kept] = right[:kept]
        levels.append(
            LevelData(
                level.level,
                "lowrank",
                coefficients=(features @ basis.T).astype(np.float32),
                basis=basis.astype(np.float32),
            )
        )
    return replace(field, levels=levels, bitwidth=0, rank=rank)


def _dense_levels(field: FieldData) -> list[LevelData]:
    if field.store_kind != "dense":
        raise ValueError(f"post-hoc compression needs a dense field, got a {field.store_kind} one")
    return field.levels
