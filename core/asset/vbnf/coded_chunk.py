"""Chunk codec ``rans``: a level's octree masks and codebook indices entropy-coded on their own.

The other codecs (zlib, zstd) see a chunk as bytes; packed 4-bit indices and one-byte masks
look like noise to them. This codec knows the chunk's layout (from the header and chunk table,
so each level still decodes on its own from a prefix): the child masks become one
:mod:`.rans` stream over 256 symbols, each index array one stream over ``2^b`` symbols, and the
fp16 arrays (codebook, basis, features) are kept as they are, in their usual order::

    structure stream | store arrays in file order (fp16 bytes as is, indices as a stream)

Decoding gives back exactly the chunk's plain contents, so everything after the codec (mask
validation, the store's arrays) is shared with the other codecs.
"""

from __future__ import annotations

import numpy as np

from ...errors import AssetError
from .bitpack import pack_indices, unpack_indices
from .rans import ByteReader, decode_symbols, encode_symbols, skip_symbols
from .spec import StoreArray

MASK_BITS = 8


def encode_coded_chunk(
    raw: bytes, structure_bytes: int, arrays: list[StoreArray], bitwidth: int
) -> bytes:
    """The ``rans`` form of a chunk's plain contents ``raw``."""
    masks = np.frombuffer(raw, dtype=np.uint8, count=structure_bytes)
    parts = [encode_symbols(masks, MASK_BITS)]
    offset = structure_bytes
    for spec in arrays:
        piece = raw[offset : offset + spec.bytes]
        if spec.role == "index":
            parts.append(encode_symbols(unpack_indices(piece, spec.shape[0], bitwidth), bitwidth))
        else:
            parts.append(piece)
        offset += spec.bytes
    return b"".join(parts)


def decode_coded_chunk(
    stored: bytes | bytearray,
    structure_bytes: int,
    arrays: list[StoreArray],
    bitwidth: int,
    what: str,
) -> bytes:
    """The plain contents of a ``rans`` chunk; any inconsistency is an :class:`AssetError`."""
    reader = ByteReader(stored, what)
    masks = decode_symbols(reader, structure_bytes, MASK_BITS)
    parts = [masks.astype(np.uint8).tobytes()]
    for spec in arrays:
        if spec.role == "index":
            parts.append(pack_indices(decode_symbols(reader, spec.shape[0], bitwidth), bitwidth))
        else:
            parts.append(bytes(reader.take(spec.bytes)))
    _check_consumed(reader, stored)
    return b"".join(parts)


def coded_split(
    stored: bytes | bytearray,
    structure_bytes: int,
    arrays: list[StoreArray],
    bitwidth: int,
    what: str,
) -> dict[str, int]:
    """Stored bytes of a ``rans`` chunk's structure and index streams, found by reading the
    streams' headers only (for ``info``, which decodes nothing)."""
    reader = ByteReader(stored, what)
    skip_symbols(reader, structure_bytes, MASK_BITS)
    split = {"structure": reader.position, "index": 0}
    for spec in arrays:
        start = reader.position
        if spec.role == "index":
            skip_symbols(reader, spec.shape[0], bitwidth)
            split["index"] += reader.position - start
        else:
            reader.take(spec.bytes)
    _check_consumed(reader, stored)
    return split


def _check_consumed(reader: ByteReader, stored: bytes | bytearray) -> None:
    if reader.position != len(stored):
        raise AssetError(
            f"{reader.what} has {len(stored) - reader.position} bytes after its coded contents"
        )
