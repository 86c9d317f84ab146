"""The ``.vbnf`` header: packing, and unpacking that refuses anything absurd before allocating.

A reader gets the header in two steps so it never trusts a size it has not checked:
:func:`header_size` validates the fixed prefix (magic, version, every count against its cap)
and says how many bytes the whole header has; :func:`unpack_header` then checks the header's
CRC and every chunk-table entry against what its level could possibly hold.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

import numpy as np

from ...errors import AssetError
from ..field_data import MLPWeights, StoreKind
from .codecs import max_raw_bytes
from .spec import (
    CHUNK_ENTRY,
    CODEC_IDS,
    CRC,
    FORMAT_VERSION,
    FP16,
    MAGIC,
    MAX_CHUNK_BYTES,
    PREFIX,
    STORE_IDS,
    Codec,
    StoreArray,
    header_bytes,
    header_problem,
    max_corners,
    max_structure_bytes,
    mlp_shapes,
    mlp_values,
    role_bytes,
    store_arrays,
)

CHUNK_PADDING_BYTES = 3  # the "3x" closing CHUNK_ENTRY: zero, says the spec
_STORE_NAMES: dict[int, StoreKind] = {value: key for key, value in STORE_IDS.items()}
_CODEC_NAMES: dict[int, Codec] = {value: key for key, value in CODEC_IDS.items()}


@dataclass(frozen=True)
class ChunkEntry:
    """One row of the chunk table: where a level's bytes are and how to check them."""

    level: int
    stored_bytes: int  # in the file, after the codec
    structure_bytes: int  # child masks at the start of the decompressed chunk
    corners: int  # corners of this level; also derivable from the octree, kept to validate
    crc32: int  # of the stored bytes
    codec: Codec


@dataclass(frozen=True)
class LevelLayout:
    """Byte accounting of one level, as ``info`` reports it."""

    level: int
    bytes: int  # stored in the file
    cumulative_bytes: int  # header plus every chunk up to and including this one
    raw_bytes: int  # after decompression: structure + index + codebook + feature bytes
    structure_bytes: int
    index_bytes: int
    codebook_bytes: int
    feature_bytes: int
    corners: int
    codec: Codec


@dataclass(frozen=True)
class AssetHeader:
    """Everything before the first chunk, decoded (MLP as float32 holding fp16 values)."""

    store: StoreKind
    min_level: int
    bitwidth: int
    feature_dim: int
    rank: int
    scale: float
    offset: np.ndarray  # [3] float64
    mlp: MLPWeights
    chunks: tuple[ChunkEntry, ...]

    @property
    def max_level(self) -> int:
        return self.min_level + len(self.chunks) - 1

    @property
    def hidden_dim(self) -> int:
        return int(self.mlp.hidden_bias.shape[0])

    @property
    def header_bytes(self) -> int:
        return header_bytes(self.feature_dim, self.hidden_dim, len(self.chunks))

    @property
    def total_bytes(self) -> int:
        """Size of the complete asset this header describes."""
        return self.header_bytes + sum(entry.stored_bytes for entry in self.chunks)

    def store_arrays(self, entry: ChunkEntry) -> list[StoreArray]:
        return store_arrays(self.store, entry.corners, self.feature_dim, self.bitwidth, self.rank)

    def raw_bytes(self, entry: ChunkEntry) -> int:
        """Size of the chunk after decompression."""
        return entry.structure_bytes + sum(array.bytes for array in self.store_arrays(entry))

    def with_chunks(self, chunks: tuple[ChunkEntry, ...]) -> AssetHeader:
        return replace(self, chunks=chunks)

    def layouts(self) -> list[LevelLayout]:
        layouts = []
        cumulative_bytes = self.header_bytes
        for entry in self.chunks:
            arrays = self.store_arrays(entry)
            cumulative_bytes += entry.stored_bytes
            layouts.append(
                LevelLayout(
                    level=entry.level,
                    bytes=entry.stored_bytes,
                    cumulative_bytes=cumulative_bytes,
                    raw_bytes=self.raw_bytes(entry),
                    structure_bytes=entry.structure_bytes,
                    index_bytes=role_bytes(arrays, "index"),
                    codebook_bytes=role_bytes(arrays, "codebook"),
                    feature_bytes=role_bytes(arrays, "feature"),
                    corners=entry.corners,
                    codec=entry.codec,
                )
            )
        return layouts


def pack_header(header: AssetHeader) -> bytes:
    prefix = PREFIX.pack(
        MAGIC,
        FORMAT_VERSION,
        STORE_IDS[header.store],
        header.min_level,
        header.max_level,
        header.bitwidth,
        header.feature_dim,
        header.rank,
        header.hidden_dim,
        header.scale,
        *(float(value) for value in header.offset),
    )
    mlp = b"".join(
        np.ascontiguousarray(array, dtype=FP16).tobytes() for array in header.mlp.arrays()
    )
    table = b"".join(
        CHUNK_ENTRY.pack(
            entry.stored_bytes,
            entry.structure_bytes,
            entry.corners,
            entry.crc32,
            CODEC_IDS[entry.codec],
        )
        for entry in header.chunks
    )
    body = prefix + mlp + table
    return body + CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class _Prefix:
    store: StoreKind
    min_level: int
    max_level: int
    bitwidth: int
    feature_dim: int
    rank: int
    hidden_dim: int
    scale: float
    offset: np.ndarray

    @property
    def header_bytes(self) -> int:
        return header_bytes(self.feature_dim, self.hidden_dim, self.max_level - self.min_level + 1)


def _unpack_prefix(data: bytes) -> _Prefix:
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise AssetError(f"not a .vbnf file (magic {data[: len(MAGIC)]!r}, expected {MAGIC!r})")
    if len(data) < PREFIX.size:
        raise AssetError(f"truncated header: {len(data)} of at least {PREFIX.size} bytes")
    _, version, store_id, *counts, scale, x, y, z = PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise AssetError(
            f"unsupported .vbnf version {version} (this reader reads {FORMAT_VERSION})"
        )
    if store_id not in _STORE_NAMES:
        raise AssetError(f"header declares unknown store kind {store_id}")
    min_level, max_level, bitwidth, feature_dim, rank, hidden_dim = counts
    store = _STORE_NAMES[store_id]
    problem = header_problem(
        store, min_level, max_level, feature_dim, hidden_dim, bitwidth, rank, scale, (x, y, z)
    )
    if problem is not None:
        raise AssetError(f"header declares {problem}")
    offset = np.array([x, y, z], dtype=np.float64)
    return _Prefix(
        store, min_level, max_level, bitwidth, feature_dim, rank, hidden_dim, scale, offset
    )


def header_size(prefix: bytes) -> int:
    """Total header bytes announced by a prefix of at least ``PREFIX.size`` bytes."""
    return _unpack_prefix(prefix).header_bytes


def unpack_header(data: bytes) -> AssetHeader:
    """Decode a complete header (exactly ``header_size`` bytes), checking its CRC and table."""
    prefix = _unpack_prefix(data)
    if len(data) != prefix.header_bytes:
        raise AssetError(f"truncated header: {len(data)} of {prefix.header_bytes} bytes")
    body_bytes = prefix.header_bytes - CRC.size
    (stored_crc,) = CRC.unpack_from(data, body_bytes)
    computed_crc = zlib.crc32(data[:body_bytes])
    if stored_crc != computed_crc:
        raise AssetError(
            f"header is corrupted (CRC-32 {computed_crc:08x}, header says {stored_crc:08x})"
        )
    mlp = _unpack_mlp(data, prefix.feature_dim, prefix.hidden_dim)
    table_offset = PREFIX.size + 2 * mlp_values(prefix.feature_dim, prefix.hidden_dim)
    chunks = tuple(
        _unpack_entry(data, table_offset + index * CHUNK_ENTRY.size, level)
        for index, level in enumerate(range(prefix.min_level, prefix.max_level + 1))
    )
    header = AssetHeader(
        store=prefix.store,
        min_level=prefix.min_level,
        bitwidth=prefix.bitwidth,
        feature_dim=prefix.feature_dim,
        rank=prefix.rank,
        scale=prefix.scale,
        offset=prefix.offset,
        mlp=mlp,
        chunks=chunks,
    )
    for entry in chunks:
        _check_entry(header, entry)
    return header


def _unpack_mlp(data: bytes, feature_dim: int, hidden_dim: int) -> MLPWeights:
    arrays = []
    offset = PREFIX.size
    for shape in mlp_shapes(feature_dim, hidden_dim):
        count = math.prod(shape)
        array = np.frombuffer(data, dtype=FP16, count=count, offset=offset)
        offset += 2 * count
        arrays.append(array.astype(np.float32).reshape(shape))
    if not all(np.isfinite(array).all() for array in arrays):
        raise AssetError("decoder MLP holds non-finite fp16 values")
    return MLPWeights(*arrays)


def _unpack_entry(data: bytes, offset: int, level: int) -> ChunkEntry:
    stored_bytes, structure_bytes, corners, crc32, codec_id = CHUNK_ENTRY.unpack_from(data, offset)
    padding = data[offset + CHUNK_ENTRY.size - CHUNK_PADDING_BYTES : offset + CHUNK_ENTRY.size]
    if any(padding):
        raise AssetError(f"level {level} chunk table entry has non-zero padding {padding.hex()}")
    if codec_id not in _CODEC_NAMES:
        raise AssetError(f"level {level} uses unknown codec {codec_id}")
    return ChunkEntry(level, stored_bytes, structure_bytes, corners, crc32, _CODEC_NAMES[codec_id])


def _check_entry(header: AssetHeader, entry: ChunkEntry) -> None:
    """Refuse a table entry its level could not hold, so no size read later is absurd."""
    level = entry.level
    if not 8 <= entry.corners <= max_corners(level):
        raise AssetError(
            f"level {level} declares {entry.corners} corners, impossible at level {level}"
        )
    smallest_structure = header.min_level if level == header.min_level else 1
    if (
        not smallest_structure
        <= entry.structure_bytes
        <= max_structure_bytes(level, header.min_level)
    ):
        raise AssetError(
            f"level {level} declares {entry.structure_bytes} bytes of octree structure"
        )
    raw_bytes = header.raw_bytes(entry)
    if max(raw_bytes, entry.stored_bytes) > MAX_CHUNK_BYTES:
        raise AssetError(f"level {level} declares a chunk over the {MAX_CHUNK_BYTES}-byte cap")
    if raw_bytes > max_raw_bytes(entry.stored_bytes, entry.codec) and entry.codec != "none":
        raise AssetError(
            f"level {level} declares {raw_bytes} bytes of contents in {entry.stored_bytes} "
            f"{entry.codec} bytes, more than {entry.codec} can expand to"
        )
    if entry.codec == "none" and entry.stored_bytes != raw_bytes:
        raise AssetError(
            f"level {level} is stored uncompressed in {entry.stored_bytes} bytes but its "
            f"contents need {raw_bytes}"
        )
