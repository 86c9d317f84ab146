"""Random but well-formed fields of every store kind, for tests and benchmarks.

The format and the decoder must be exercised without a trained model (training needs torch and
minutes); a random octree around a sphere with random fp16-representable features and MLP has
every property they rely on, and its values survive the fp16 round trip unchanged.
"""

from __future__ import annotations

import numpy as np

from ..field_data import FieldData, LevelData, MLPWeights, StoreKind
from ..octree import SparseOctree
from .spec import VIEW_ENCODING_DIM


def random_field(
    store: StoreKind,
    bitwidth: int = 4,
    min_level: int = 2,
    max_level: int = 5,
    feature_dim: int = 8,
    rank: int = 3,
    hidden_dim: int = 32,
    surface_points: int = 400,
    seed: int = 0,
) -> FieldData:
    """A field over the octree of ``surface_points`` random points near a sphere of radius 0.6.

    ``bitwidth`` applies to the codebook and hashed stores, ``rank`` to the lowrank store.
    """
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(surface_points, 3))
    radii = rng.uniform(0.5, 0.7, size=(surface_points, 1))
    points = directions / np.linalg.norm(directions, axis=1, keepdims=True) * radii
    octree = SparseOctree.from_points(points, max_level)

    def fp16_values(*shape: int, spread: float = 1.0) -> np.ndarray:
        return (rng.normal(scale=spread, size=shape)).astype(np.float16).astype(np.float32)

    levels = []
    for level in range(min_level, max_level + 1):
        corners = octree.num_corners(level)
        if store == "dense":
            levels.append(LevelData(level, store, features=fp16_values(corners, feature_dim)))
        elif store == "lowrank":
            basis = fp16_values(rank, feature_dim)
            coefficients = fp16_values(corners, rank)
            levels.append(LevelData(level, store, coefficients=coefficients, basis=basis))
        else:
            codebook = fp16_values(1 << bitwidth, feature_dim)
            indices = rng.integers(0, 1 << bitwidth, size=corners) if store == "codebook" else None
            levels.append(LevelData(level, store, codebook=codebook, indices=indices))
    mlp = MLPWeights(
        hidden_weight=fp16_values(hidden_dim, feature_dim + VIEW_ENCODING_DIM, spread=0.3),
        hidden_bias=fp16_values(hidden_dim, spread=0.1),
        output_weight=fp16_values(4, hidden_dim, spread=0.3),
        output_bias=fp16_values(4, spread=0.1),
    )
    return FieldData(
        octree=octree,
        min_level=min_level,
        feature_dim=feature_dim,
        scale=0.8,
        offset=np.array([0.25, -0.5, 1.0]),
        mlp=mlp,
        levels=levels,
        bitwidth=bitwidth if store in ("codebook", "hashed") else 0,
        rank=rank if store == "lowrank" else 0,
    )
