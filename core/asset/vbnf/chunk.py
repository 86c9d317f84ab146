"""The decompressed contents of one level's chunk: octree child masks, then the feature store.

Layout (all little-endian, no padding)::

    child masks      structure_bytes x u8   (levels 0..min_level-1 for the first chunk,
                                             level L-1 for the chunk of level L > min_level)
    store            dense:    features     [M, k] fp16
                     codebook: codebook     [2^b, k] fp16, then M indices packed at b bits
                     hashed:   codebook     [2^b, k] fp16
                     lowrank:  basis        [f, k] fp16, then coefficients [M, f] fp16

``M`` is the level's corner count, which follows from the octree the masks complete. Both
directions live here so the byte order of a store is written down exactly once.
"""

from __future__ import annotations

import numpy as np

from ...errors import AssetError
from ..field_data import LevelData, StoreKind
from ..octree import SparseOctree
from .bitpack import pack_indices, unpack_indices
from .codecs import ChunkReader
from .spec import FP16, StoreArray

FP16_PIECE_VALUES = 1 << 19  # fp16 values decoded per piece: 1 MiB of temporaries


def level_structure(octree: SparseOctree, level: int, min_level: int) -> bytes:
    """The child masks the chunk of ``level`` carries, breadth first."""
    parents = range(min_level) if level == min_level else [level - 1]
    return b"".join(octree.child_masks(parent).tobytes() for parent in parents)


def to_fp16(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as little-endian fp16, refusing values fp16 cannot hold (the format's only loss
    is rounding, never an overflow to infinity)."""
    with np.errstate(over="ignore", invalid="ignore"):
        half = np.ascontiguousarray(array, dtype=FP16)
    if not np.isfinite(half).all():
        raise ValueError(f"{what} has values that are not finite in fp16 (|x| > 65504 or NaN)")
    return half


def encode_store(level: LevelData, arrays: list[StoreArray], bitwidth: int) -> bytes:
    """Serialise ``level``'s store, checking each array has the shape the layout expects."""
    parts = []
    for spec in arrays:
        array = getattr(level, spec.name)
        if array is None or np.shape(array) != spec.shape:
            found = None if array is None else np.shape(array)
            raise ValueError(
                f"level {level.level} {spec.name} has shape {found}, expected {spec.shape}"
            )
        if spec.role == "index":
            parts.append(pack_indices(array, bitwidth))
        else:
            parts.append(to_fp16(array, f"level {level.level} {spec.name}").tobytes())
    return b"".join(parts)


def decode_structure(
    raw: bytes | bytearray, structure_bytes: int, masks_per_level: list[np.ndarray], level: int
) -> list[np.ndarray]:
    """Append the child masks this chunk carries to ``masks_per_level`` (levels 0..), checking
    that each level has exactly one mask per cell and that no cell is childless."""
    masks = np.frombuffer(raw, dtype=np.uint8, count=structure_bytes)
    cell_count = int(np.unpackbits(masks_per_level[-1]).sum()) if masks_per_level else 1
    masks_per_level = list(masks_per_level)
    position = 0
    while position < structure_bytes:
        level_masks = masks[position : position + cell_count]
        if level_masks.size < cell_count:
            raise AssetError(
                f"level {level} octree structure ends inside level {len(masks_per_level)}'s masks"
            )
        if not level_masks.all():
            raise AssetError(f"level {level} octree structure has a cell without children")
        masks_per_level.append(level_masks)
        position += cell_count
        cell_count = int(np.unpackbits(level_masks).sum())
    if len(masks_per_level) != level:
        raise AssetError(
            f"level {level} octree structure defines levels up to {len(masks_per_level)}, "
            f"expected {level}"
        )
    return masks_per_level


def decode_store(
    chunk: ChunkReader,
    level: int,
    kind: StoreKind,
    arrays: list[StoreArray],
    bitwidth: int,
    indices: np.ndarray | None = None,
) -> LevelData:
    """Read a level's store from ``chunk`` (positioned after the structure) straight into its
    decoded arrays: fp16 goes to float32 piece by piece, so the level is never held twice.
    ``indices``: the codebook indices already decoded (by the ``rans`` codec), which ``chunk``
    then does not hold."""
    values: dict[str, np.ndarray] = {}
    for spec in arrays:
        if spec.role == "index" and indices is not None:
            values[spec.name] = indices
        elif spec.role == "index":
            packed = np.empty(spec.bytes, dtype=np.uint8)
            chunk.readinto(packed.data)
            values[spec.name] = unpack_indices(packed.data, spec.shape[0], bitwidth)
        else:
            values[spec.name] = _read_fp16(chunk, level, spec)
    return LevelData(level, kind, **values)


def _read_fp16(chunk: ChunkReader, level: int, spec: StoreArray) -> np.ndarray:
    decoded = np.empty(spec.shape, dtype=np.float32)
    flat = decoded.reshape(-1)
    for start in range(0, flat.size, FP16_PIECE_VALUES):
        half = np.empty(min(FP16_PIECE_VALUES, flat.size - start), dtype=FP16)
        chunk.readinto(half.data)
        if not np.isfinite(half).all():
            raise AssetError(f"level {level} {spec.name} holds non-finite fp16 values")
        flat[start : start + half.size] = half
    return decoded
