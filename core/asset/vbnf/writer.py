"""Serialising a :class:`FieldData` into a ``.vbnf`` asset.

The writer refuses (``ValueError``) a field the reader would not read back identically: wrong
array shapes, values fp16 cannot hold, counts beyond the format's caps. Chunks whose compressed
form is not smaller than their contents are stored with codec ``none`` instead.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from ...atomic import atomic_write_bytes
from ..field_data import FieldData, MLPWeights
from .chunk import encode_store, level_structure, to_fp16
from .codecs import compress
from .coded_chunk import encode_coded_chunk
from .header import AssetHeader, ChunkEntry, pack_header
from .spec import (
    CODEC_IDS,
    MAX_CHUNK_BYTES,
    MLP_ARRAYS,
    MLP_FP16_BITS,
    Codec,
    StoreArray,
    header_problem,
    mlp_shapes,
    store_arrays,
)


def write_asset(
    field: FieldData,
    path: str | Path,
    compression: Codec = "none",
    mlp_bits: int = MLP_FP16_BITS,
) -> None:
    """Write ``field`` to ``path`` atomically: readers see the old file or the complete new one."""
    atomic_write_bytes(Path(path), encode_asset(field, compression, mlp_bits))


def encode_asset(
    field: FieldData, compression: Codec = "none", mlp_bits: int = MLP_FP16_BITS
) -> bytes:
    """The complete asset: header, then one chunk per feature level, coarsest first.
    ``mlp_bits`` below 16 stores the MLP's weight matrices as integers (``mlp_quant``)."""
    if compression not in CODEC_IDS:
        raise ValueError(f"unknown compression {compression!r}; choose from {sorted(CODEC_IDS)}")
    _check_field(field, mlp_bits)
    entries = []
    stored_chunks = []
    for level in field.levels:
        structure = level_structure(field.octree, level.level, field.min_level)
        corners = field.octree.num_corners(level.level)
        arrays = store_arrays(
            field.store_kind, corners, field.feature_dim, field.bitwidth, field.rank
        )
        raw = structure + encode_store(level, arrays, field.bitwidth)
        if len(raw) > MAX_CHUNK_BYTES:
            raise ValueError(f"level {level.level} needs {len(raw)} bytes, over the chunk cap")
        stored, codec = _compressed(raw, compression, len(structure), arrays, field.bitwidth)
        if len(stored) >= len(raw):
            stored, codec = raw, "none"
        entries.append(
            ChunkEntry(level.level, len(stored), len(structure), corners, zlib.crc32(stored), codec)
        )
        stored_chunks.append(stored)
    header = AssetHeader(
        store=field.store_kind,
        min_level=field.min_level,
        bitwidth=field.bitwidth,
        feature_dim=field.feature_dim,
        rank=field.rank,
        scale=float(field.scale),
        offset=np.asarray(field.offset, dtype=np.float64),
        mlp=_fp16_mlp(field),
        chunks=tuple(entries),
        mlp_bits=mlp_bits,
    )
    return pack_header(header) + b"".join(stored_chunks)


def _compressed(
    raw: bytes, compression: Codec, structure_bytes: int, arrays: list[StoreArray], bitwidth: int
) -> tuple[bytes, Codec]:
    """A chunk's stored form: ``rans`` needs the chunk's layout, the others see bytes."""
    if compression == "rans":
        return encode_coded_chunk(raw, structure_bytes, arrays, bitwidth), compression
    return compress(raw, compression), compression


def _check_field(field: FieldData, mlp_bits: int) -> None:
    if not field.levels:
        raise ValueError("field has no feature levels to store")
    problem = header_problem(
        field.store_kind,
        field.min_level,
        field.max_level,
        field.feature_dim,
        int(np.shape(field.mlp.hidden_bias)[0]),
        field.bitwidth,
        field.rank,
        float(field.scale),
        np.asarray(field.offset, dtype=np.float64).ravel().tolist(),
        mlp_bits,
    )
    if problem is not None:
        raise ValueError(f"field cannot be stored: {problem}")
    if field.octree.max_level < field.max_level:
        raise ValueError(
            f"octree stops at level {field.octree.max_level}, features go to {field.max_level}"
        )
    for index, level in enumerate(field.levels):
        if level.level != field.min_level + index or level.kind != field.store_kind:
            raise ValueError(
                f"feature level {index} is level {level.level} ({level.kind}); expected level "
                f"{field.min_level + index} ({field.store_kind})"
            )


def _fp16_mlp(field: FieldData) -> MLPWeights:
    """The MLP rounded to fp16 (as float32), after checking its shapes."""
    shapes = mlp_shapes(field.feature_dim, int(np.shape(field.mlp.hidden_bias)[0]))
    arrays = []
    for name, shape, array in zip(MLP_ARRAYS, shapes, field.mlp.arrays(), strict=True):
        if np.shape(array) != shape:
            raise ValueError(f"MLP {name} has shape {np.shape(array)}, expected {shape}")
        arrays.append(to_fp16(array, f"MLP {name}").astype(np.float32))
    return MLPWeights(*arrays)
