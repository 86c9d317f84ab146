"""A trained field as plain numpy arrays: the hub between trainer, file format and decoder.

The torch model exports to :class:`FieldData`, the ``.vbnf`` writer serialises it, the reader
returns it (with only the levels a truncated file holds), the numpy decoder evaluates it and the
torch renderer can be rebuilt from it to score the shipped bytes. Nothing here needs torch.

A level's corner features are stored in one of four ways, the methods the paper compares:

- ``dense``: one feature vector per corner (the uncompressed NGLOD-NeRF grid);
- ``codebook``: a b-bit index per corner into a ``2^b x k`` codebook (VQ-AD, or k-means VQ);
- ``lowrank``: ``f`` coefficients per corner and an ``f x k`` basis (KLT truncation, LRA);
- ``hashed``: a codebook only; the index is a fixed spatial hash of the corner (random indices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .octree import SparseOctree

StoreKind = Literal["dense", "codebook", "lowrank", "hashed"]
STORE_KINDS: tuple[StoreKind, ...] = ("dense", "codebook", "lowrank", "hashed")

VIEW_FREQUENCIES = 4  # view direction encoding: identity + sin/cos at 2^0..2^3
VIEW_ENCODING_DIM = 3 + 6 * VIEW_FREQUENCIES  # 27 values
VIEW_SCALES = np.float32(2.0) ** np.arange(VIEW_FREQUENCIES, dtype=np.float32)  # 2^0..2^3
HASH_PRIMES = (1, 2654435761, 805459861)  # instant-ngp's spatial hash primes


def hashed_indices(corners: np.ndarray, bitwidth: int) -> np.ndarray:
    """Fixed pseudo-random codebook index of integer corners: the random-index baseline."""
    corners = np.asarray(corners, dtype=np.uint64)
    mixed = np.zeros(corners.shape[0], dtype=np.uint64)
    for axis, prime in enumerate(HASH_PRIMES):
        mixed ^= corners[:, axis] * np.uint64(prime)
    return (mixed & np.uint64((1 << bitwidth) - 1)).astype(np.int64)


def encode_view_directions(directions: np.ndarray) -> np.ndarray:
    """Positional encoding of unit view directions [N, 3] -> [N, 27] (no pi factor, as the
    reference implementation): the direction, then sin and cos of it at each frequency.

    Computed as [27, N] and returned as its transpose: numpy is slow along rows of 3 values."""
    columns = np.asarray(directions, dtype=np.float32).reshape(-1, 3).T
    encoded = np.empty((1 + 2 * VIEW_FREQUENCIES, *columns.shape), dtype=np.float32)
    encoded[0] = columns
    scaled = VIEW_SCALES[:, None, None] * encoded[0]  # [frequencies, 3, N]
    np.sin(scaled, out=encoded[1::2])
    np.cos(scaled, out=encoded[2::2])
    return encoded.reshape(VIEW_ENCODING_DIM, -1).T


@dataclass
class LevelData:
    """The feature store of one octree level; which arrays are set depends on ``kind``."""

    level: int
    kind: StoreKind
    features: np.ndarray | None = None  # dense: [M, k]
    codebook: np.ndarray | None = None  # codebook, hashed: [2^b, k]
    indices: np.ndarray | None = None  # codebook: [M] in [0, 2^b)
    coefficients: np.ndarray | None = None  # lowrank: [M, f]
    basis: np.ndarray | None = None  # lowrank: [f, k]

    def corner_features(self, corners: np.ndarray) -> np.ndarray:
        """Feature vectors [M, k] of this level's corners (``corners`` as integer coordinates,
        needed only by the hashed store)."""
        rows = self.corner_rows(corners)
        if rows is not None:
            return _required(self.codebook, "codebook")[rows]
        if self.kind == "dense":
            return _required(self.features, "features")
        return _required(self.coefficients, "coefficients") @ _required(self.basis, "basis")

    def corner_rows(self, corners: np.ndarray) -> np.ndarray | None:
        """The codebook row [M] of each corner for the codebook and hashed stores (learned or
        hashed from ``corners``); None for stores that hold a vector per corner."""
        if self.kind == "codebook":
            return _required(self.indices, "indices")
        if self.kind == "hashed":
            entries = int(_required(self.codebook, "codebook").shape[0])
            return hashed_indices(corners, entries.bit_length() - 1)
        return None


@dataclass
class MLPWeights:
    """The decoder: [k features + 27 view encoding] -> 128 ReLU -> 4 (density, RGB)."""

    hidden_weight: np.ndarray  # [128, k + 27]
    hidden_bias: np.ndarray  # [128]
    output_weight: np.ndarray  # [4, 128]; row 0 density (ReLU), rows 1..3 RGB (sigmoid)
    output_bias: np.ndarray  # [4]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.hidden_weight, self.hidden_bias, self.output_weight, self.output_bias


@dataclass
class FieldData:
    """Everything needed to evaluate the field, in normalised coordinates.

    World points map into the octree's cube as ``normalized = (world - offset) * scale``.
    ``levels`` holds the feature levels ``min_level..`` in order; a truncated asset holds fewer.
    """

    octree: SparseOctree
    min_level: int
    feature_dim: int
    scale: float
    offset: np.ndarray  # [3]
    mlp: MLPWeights
    levels: list[LevelData] = field(default_factory=list)
    bitwidth: int = 0  # codebook/hashed bits per index; 0 for dense stores
    rank: int = 0  # lowrank factors; 0 otherwise

    @property
    def max_level(self) -> int:
        """Finest feature level present."""
        return self.min_level + len(self.levels) - 1

    @property
    def store_kind(self) -> StoreKind:
        return self.levels[0].kind if self.levels else "dense"

    def to_normalized(self, world_points: np.ndarray) -> np.ndarray:
        return (np.asarray(world_points, dtype=np.float64) - self.offset) * self.scale

    def to_world(self, normalized_points: np.ndarray) -> np.ndarray:
        return np.asarray(normalized_points, dtype=np.float64) / self.scale + self.offset


def _required(array: np.ndarray | None, name: str) -> np.ndarray:
    if array is None:
        raise ValueError(f"feature store is missing its {name}")
    return array
