"""Chunk codec ``rans``: a level's octree masks and codebook indices entropy-coded on their own.

The other codecs (zlib, zstd) see a chunk as bytes; packed 4-bit indices and one-byte masks
look like noise to them. This codec knows the chunk's layout (from the header and chunk table,
so each level still decodes on its own from a prefix): the child masks become one
:mod:`.rans` stream over 256 symbols, each index array one stream over ``2^b`` symbols, and the
fp16 arrays (codebook, basis, features) are kept as they are, in their usual order::

    structure stream | store arrays in file order (fp16 bytes as is, indices as a stream)

Decoding gives back the chunk's plain contents (the indices as the arrays they decode to), so
everything after the codec (mask validation, the store's arrays) is shared with the other
codecs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import AssetError
from .bitpack import unpack_indices
from .rans import (
    ByteReader,
    ParsedStream,
    decode_streams,
    encode_symbols,
    parse_stream,
    skip_symbols,
)
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


@dataclass(frozen=True)
class CodedChunk:
    """A ``rans`` chunk's parts in file order, parsed but not decoded: the masks' stream, then
    per store array its symbol stream (indices) or its fp16 bytes."""

    masks: ParsedStream
    store: list[ParsedStream | memoryview]
    bitwidth: int

    @property
    def streams(self) -> list[ParsedStream]:
        return [self.masks, *(part for part in self.store if isinstance(part, ParsedStream))]


def parse_coded_chunk(
    stored: bytes | bytearray,
    structure_bytes: int,
    arrays: list[StoreArray],
    bitwidth: int,
    what: str,
) -> CodedChunk:
    """Split a ``rans`` chunk into its parts, checking every size and table on the way."""
    reader = ByteReader(stored, what)
    masks = parse_stream(reader, structure_bytes, MASK_BITS)
    store: list[ParsedStream | memoryview] = [
        parse_stream(reader, spec.shape[0], bitwidth)
        if spec.role == "index"
        else reader.take(spec.bytes)
        for spec in arrays
    ]
    _check_consumed(reader, stored)
    return CodedChunk(masks, store, bitwidth)


@dataclass(frozen=True)
class PlainChunk:
    """A decoded ``rans`` chunk: the plain layout's bytes but for the indices, which stay the
    arrays the decoder made (packing them only to unpack them again cost about as much as
    parsing every stream of the chunk)."""

    contents: bytes  # child masks, then the store's fp16 arrays in file order
    indices: np.ndarray | None  # the level's codebook indices (int64), if its store has any


def decode_coded_chunks(chunks: Sequence[CodedChunk]) -> list[PlainChunk | AssetError]:
    """Each chunk decoded, or the first error its streams give. All streams of all chunks are
    decoded in one batch (see :func:`.rans.decode_streams`): a whole prefix costs about as many
    steps as its longest stream."""
    decoded = iter(decode_streams([stream for chunk in chunks for stream in chunk.streams]))
    results: list[PlainChunk | AssetError] = []
    for chunk in chunks:
        symbols = [next(decoded) for _ in chunk.streams]
        errors = [error for error in symbols if isinstance(error, AssetError)]
        if errors:
            results.append(errors[0])
            continue
        masks, *indices = [array for array in symbols if isinstance(array, np.ndarray)]
        parts = [masks.astype(np.uint8).tobytes()]
        parts += [bytes(part) for part in chunk.store if isinstance(part, memoryview)]
        results.append(PlainChunk(b"".join(parts), indices[0] if indices else None))
    return results


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
