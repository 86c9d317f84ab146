"""Constants and size arithmetic of the ``.vbnf`` byte layout (see ``docs/vbnf-format.md``).

Everything a reader needs to know *before* touching data lives here: the fixed structs, the
identifiers of store kinds and codecs, the sanity caps that let a reader refuse an absurd header
before it allocates anything, and the rules that turn (store kind, corners, k, b, f) into byte
counts. Writer, reader and ``info`` all size things through these functions, so they cannot
disagree about where a level's indices end.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ...limits import MAX_ASSET_BITWIDTH, MAX_FEATURE_DIM, MAX_LEVEL
from ..field_data import VIEW_ENCODING_DIM, StoreKind

Codec = Literal["none", "zlib", "zstd"]

MAGIC = b"VBNF"
FORMAT_VERSION = 1

# magic, version, store kind, min level, max level, bitwidth, feature dim, rank, hidden dim,
# scale, offset x/y/z.
PREFIX = struct.Struct("<4sHBBBBHHHd3d")
# stored bytes, structure (child mask) bytes, corners, CRC-32 of the stored bytes, codec.
CHUNK_ENTRY = struct.Struct("<QQQIB3x")
CRC = struct.Struct("<I")
FP16 = "<f2"

STORE_IDS: dict[StoreKind, int] = {"dense": 0, "codebook": 1, "lowrank": 2, "hashed": 3}
CODEC_IDS: dict[Codec, int] = {"none": 0, "zlib": 1, "zstd": 2}

OUTPUT_DIM = 4  # density, r, g, b

# Caps a header must respect; anything beyond them is refused before any allocation.
MAX_RANK = 256
MAX_HIDDEN_DIM = 1024
MAX_CHUNK_BYTES = 1 << 32  # per chunk, stored and decompressed
# Normalisation bounds: any real scene fits them with room to spare, and within them no world
# point a renderer or openvdb handles can overflow float64 on its way into the cube.
SCALE_RANGE = (1e-9, 1e9)
MAX_ABS_OFFSET = 1e9


def packed_index_bytes(count: int, bitwidth: int) -> int:
    """Bytes of ``count`` indices packed at ``bitwidth`` bits each, padded to a whole byte."""
    return (count * bitwidth + 7) // 8


@dataclass(frozen=True)
class StoreArray:
    """One array of a level's store, in file order: the ``LevelData`` attribute it fills, its
    shape, its size in the file and its role in ``info``'s byte split (``codebook`` is the
    per-level shared table: a codebook or a lowrank basis; ``feature`` is per-corner fp16 data:
    dense features or lowrank coefficients)."""

    name: str
    shape: tuple[int, ...]
    bytes: int
    role: Literal["index", "codebook", "feature"]


def store_arrays(
    kind: StoreKind, corners: int, feature_dim: int, bitwidth: int, rank: int
) -> list[StoreArray]:
    """The arrays a level's store holds, in the order they are written."""

    def fp16(name: str, shape: tuple[int, int], role: Literal["codebook", "feature"]) -> StoreArray:
        return StoreArray(name, shape, 2 * shape[0] * shape[1], role)

    if kind == "dense":
        return [fp16("features", (corners, feature_dim), "feature")]
    if kind == "lowrank":
        return [
            fp16("basis", (rank, feature_dim), "codebook"),
            fp16("coefficients", (corners, rank), "feature"),
        ]
    codebook = fp16("codebook", (1 << bitwidth, feature_dim), "codebook")
    if kind == "hashed":
        return [codebook]
    indices = StoreArray("indices", (corners,), packed_index_bytes(corners, bitwidth), "index")
    return [codebook, indices]


def role_bytes(arrays: list[StoreArray], role: str) -> int:
    return sum(array.bytes for array in arrays if array.role == role)


MLP_ARRAYS = ("hidden_weight", "hidden_bias", "output_weight", "output_bias")


def mlp_shapes(feature_dim: int, hidden_dim: int) -> list[tuple[int, ...]]:
    """Shapes of the decoder MLP's arrays, in the order of ``MLP_ARRAYS`` and of the file."""
    return [
        (hidden_dim, feature_dim + VIEW_ENCODING_DIM),
        (hidden_dim,),
        (OUTPUT_DIM, hidden_dim),
        (OUTPUT_DIM,),
    ]


def mlp_values(feature_dim: int, hidden_dim: int) -> int:
    """Number of fp16 values of the decoder MLP."""
    return sum(math.prod(shape) for shape in mlp_shapes(feature_dim, hidden_dim))


def header_bytes(feature_dim: int, hidden_dim: int, level_count: int) -> int:
    """Size of the whole header: prefix, MLP, chunk table and the trailing CRC."""
    return (
        PREFIX.size
        + 2 * mlp_values(feature_dim, hidden_dim)
        + level_count * CHUNK_ENTRY.size
        + CRC.size
    )


def max_corners(level: int) -> int:
    """Corners of a fully occupied level: the most a valid asset can declare."""
    return ((1 << level) + 1) ** 3


def max_structure_bytes(level: int, min_level: int) -> int:
    """Most child-mask bytes the chunk of ``level`` can carry (every cell occupied)."""
    if level == min_level:
        return sum(8**parent for parent in range(min_level))
    return 8 ** (level - 1)


def header_problem(
    store: StoreKind,
    min_level: int,
    max_level: int,
    feature_dim: int,
    hidden_dim: int,
    bitwidth: int,
    rank: int,
    scale: float,
    offset: Sequence[float],
) -> str | None:
    """What makes these header values unstorable (``None`` when they are fine). The writer and
    the reader both ask, so a written file is never one the reader refuses."""
    indexed = store in ("codebook", "hashed")
    ranges = [
        ("min_level", min_level, 0, MAX_LEVEL),
        ("max_level", max_level, min_level, MAX_LEVEL),
        ("feature_dim", feature_dim, 1, MAX_FEATURE_DIM),
        ("hidden_dim", hidden_dim, 1, MAX_HIDDEN_DIM),
        ("bitwidth", bitwidth, *((1, MAX_ASSET_BITWIDTH) if indexed else (0, 0))),
        ("rank", rank, *((1, MAX_RANK) if store == "lowrank" else (0, 0))),
    ]
    for name, value, low, high in ranges:
        if not low <= value <= high:
            return f"{name} {value} outside {low}..{high} for a {store} store"
    if not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        return f"normalisation scale {scale} outside {SCALE_RANGE[0]:g}..{SCALE_RANGE[1]:g}"
    if len(offset) != 3 or not all(abs(value) <= MAX_ABS_OFFSET for value in offset):
        return f"normalisation offset {list(offset)} is not 3 numbers within ±{MAX_ABS_OFFSET:g}"
    return None
