"""Optional lossless compression of one chunk: ``none``, ``zlib`` (stdlib) or ``zstd``.

Each chunk is compressed on its own so a client can decode level by level as bytes arrive.
``zstandard`` is imported only when a zstd chunk is written or read, keeping the reader
numpy-only otherwise. Decompression streams into buffers the caller allocated for the arrays
it decodes (:class:`ChunkReader`), in bounded pieces and never beyond the size the chunk table
declares, so a small hostile chunk cannot expand into gigabytes and a valid one is never held
twice (compressed pieces, then joined).
"""

from __future__ import annotations

import zlib
from types import ModuleType
from typing import Any

from ...errors import AssetError, VbnfError
from .spec import Codec

ZLIB_LEVEL = 9
ZSTD_LEVEL = 12
_READ_PIECE_BYTES = 1 << 20

# The most bytes one stored byte can expand to: deflate's longest match (258 bytes) costs at
# least 2 bits, so zlib stays below 1032:1; zstd's densest block (RLE, 4 bytes for 128 KiB) is
# 32768:1, doubled here for margin. A table entry claiming more is a lie, refused unread.
MAX_EXPANSION = {"none": 1, "zlib": 1032, "zstd": 1 << 16}
EXPANSION_SLACK_BYTES = 1 << 10  # frame headers and checksums of tiny chunks


def max_raw_bytes(stored_bytes: int, codec: Codec) -> int:
    """The most bytes ``stored_bytes`` of ``codec`` data can decompress to."""
    if codec == "none":
        return stored_bytes
    return MAX_EXPANSION[codec] * stored_bytes + EXPANSION_SLACK_BYTES


def _zstandard() -> ModuleType | None:
    try:
        import zstandard
    except ImportError:
        return None
    return zstandard


def compress(raw: bytes, codec: Codec) -> bytes:
    if codec == "none":
        return raw
    if codec == "zlib":
        return zlib.compress(raw, ZLIB_LEVEL)
    zstandard = _zstandard()
    if zstandard is None:
        raise VbnfError("zstd compression needs the 'zstandard' Python module; use zlib instead")
    return bytes(zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw))


class ChunkReader:
    """The decompressed bytes of one chunk, read in order into caller-owned buffers.

    ``readinto`` fills a buffer completely or raises :class:`AssetError` (the data ends early);
    ``finish`` checks that the data ends exactly at ``raw_bytes``. At most one piece of
    :data:`_READ_PIECE_BYTES` is allocated here at a time, whatever the data claims.
    """

    def __init__(self, stored: bytes | bytearray, codec: Codec, raw_bytes: int, what: str) -> None:
        self._what = what
        self._raw_bytes = raw_bytes
        self._produced_bytes = 0
        self._stored = memoryview(stored)
        self._pending: bytes | memoryview = b""  # zlib input handed over, not yet consumed
        self._codec = codec
        self._inflater: Any = None
        self._zstd_reader: Any = None
        self._zstd_error: type[Exception] = Exception
        if codec == "zlib":
            self._inflater = zlib.decompressobj()
        elif codec == "zstd":
            zstandard = _zstandard()
            if zstandard is None:
                raise AssetError(
                    f"{what} is zstd-compressed, which needs the 'zstandard' Python module "
                    "(not installed here); install it or re-export the asset with zlib"
                )
            self._zstd_error = zstandard.ZstdError
            self._zstd_reader = zstandard.ZstdDecompressor().stream_reader(stored)

    def readinto(self, buffer: memoryview) -> None:
        """Fill ``buffer`` (a flat byte view) with the next decompressed bytes."""
        buffer = buffer.cast("B")
        if self._produced_bytes + len(buffer) > self._raw_bytes:
            raise AssetError(f"{self._what}: reading past the {self._raw_bytes} declared bytes")
        filled = 0
        while filled < len(buffer):
            count = self._produce(buffer[filled:])
            if count == 0:
                raise AssetError(
                    f"{self._what} decompresses to {self._produced_bytes + filled} bytes, "
                    f"the chunk table says {self._raw_bytes}"
                )
            filled += count
        self._produced_bytes += filled

    def finish(self) -> None:
        """Refuse data that goes on after the declared size (or a stream left incomplete)."""
        if self._produced_bytes != self._raw_bytes:
            raise AssetError(f"{self._what}: only {self._produced_bytes} bytes were decoded")
        extra = bytearray(1)
        if self._produce(memoryview(extra)) or not self._complete():
            raise AssetError(
                f"{self._what} does not end after the {self._raw_bytes} bytes the chunk table "
                f"declares (not one complete {self._codec} stream of that size)"
            )

    def _produce(self, target: memoryview) -> int:
        """Write up to ``len(target)`` (capped at one piece) decompressed bytes into
        ``target``; 0 when the data has ended."""
        size = min(len(target), _READ_PIECE_BYTES)
        if self._codec == "none":
            piece = self._stored[:size]
            self._stored = self._stored[size:]
            target[: len(piece)] = piece
            return len(piece)
        if self._codec == "zlib":
            return self._inflate(target, size)
        try:
            return int(self._zstd_reader.readinto(target[:size]))
        except self._zstd_error as error:
            raise AssetError(f"{self._what} is not valid zstd data ({error})") from error

    def _inflate(self, target: memoryview, size: int) -> int:
        """Inflate with the input fed in pieces too: zlib copies the unconsumed input on every
        call, which over a whole chunk would be quadratic."""
        inflater = self._inflater
        while True:
            if not self._pending and self._stored:
                self._pending = self._stored[:_READ_PIECE_BYTES]
                self._stored = self._stored[_READ_PIECE_BYTES:]
            try:
                piece = inflater.decompress(self._pending, size)
            except zlib.error as error:
                raise AssetError(f"{self._what} is not valid zlib data ({error})") from error
            self._pending = inflater.unconsumed_tail
            if piece or inflater.eof or not (self._pending or self._stored):
                target[: len(piece)] = piece
                return len(piece)

    def _complete(self) -> bool:
        if self._codec == "zlib":
            inflater = self._inflater
            return bool(inflater.eof) and not (inflater.unused_data or self._stored)
        return True  # none: nothing left (checked above); zstd: read() ended the frame
