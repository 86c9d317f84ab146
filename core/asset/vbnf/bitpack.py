"""Packing codebook indices at b bits each, the bulk of a VQ-AD level.

Bit order is little-endian at both scales: index ``i`` occupies stream bits ``i*b .. i*b+b-1``,
its least significant bit first, and stream bit ``j`` is bit ``j % 8`` (value ``1 << (j % 8)``)
of byte ``j // 8``. The last byte is padded with zero bits. This is what ``np.packbits`` with
``bitorder="little"`` produces from each index's bits listed low to high, so both directions are
a few vectorised calls. Work goes in blocks of :data:`BLOCK_INDICES` (a multiple of 8, so every
block ends on a byte boundary) to keep the one-byte-per-bit temporaries small.
"""

from __future__ import annotations

import numpy as np

from .spec import packed_index_bytes

BLOCK_INDICES = 1 << 18


def pack_indices(indices: np.ndarray, bitwidth: int) -> bytes:
    """Pack non-negative integers below ``2**bitwidth`` into ``packed_index_bytes`` bytes."""
    values = np.asarray(indices, dtype=np.int64).ravel()
    if values.size and (values.min() < 0 or values.max() >= 1 << bitwidth):
        raise ValueError(f"indices must lie in 0..{(1 << bitwidth) - 1} to pack at {bitwidth} bits")
    shifts = np.arange(bitwidth, dtype=np.int64)
    blocks = []
    for start in range(0, values.size, BLOCK_INDICES):
        bits = ((values[start : start + BLOCK_INDICES, None] >> shifts) & 1).astype(np.uint8)
        blocks.append(np.packbits(bits.ravel(), bitorder="little").tobytes())
    return b"".join(blocks)


def unpack_indices(data: bytes | memoryview, count: int, bitwidth: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: ``count`` int64 indices from the packed bytes."""
    if len(data) != packed_index_bytes(count, bitwidth):
        raise ValueError(
            f"{count} indices at {bitwidth} bits need "
            f"{packed_index_bytes(count, bitwidth)} bytes, got {len(data)}"
        )
    packed = np.frombuffer(data, dtype=np.uint8)
    weights = np.left_shift(1, np.arange(bitwidth, dtype=np.int64))
    block_bytes = BLOCK_INDICES * bitwidth // 8
    values = np.empty(count, dtype=np.int64)
    for block, start in enumerate(range(0, count, BLOCK_INDICES)):
        block_count = min(BLOCK_INDICES, count - start)
        block_packed = packed[block * block_bytes : (block + 1) * block_bytes]
        bits = np.unpackbits(block_packed, count=block_count * bitwidth, bitorder="little")
        values[start : start + block_count] = bits.reshape(block_count, bitwidth) @ weights
    return values
