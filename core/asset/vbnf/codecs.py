"""Optional lossless compression of one chunk: ``none``, ``zlib`` (stdlib) or ``zstd``.

Each chunk is compressed on its own so a client can decode level by level as bytes arrive.
``zstandard`` is imported only when a zstd chunk is written or read, keeping the reader
numpy-only otherwise. Decompression never produces more than the size the chunk table declares
(itself capped), so a small hostile chunk cannot expand into gigabytes.
"""

from __future__ import annotations

import zlib
from types import ModuleType

from ...errors import AssetError, VbnfError
from .spec import Codec

ZLIB_LEVEL = 9
ZSTD_LEVEL = 12
_READ_PIECE_BYTES = 1 << 20


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


def decompress(stored: bytes, codec: Codec, raw_bytes: int, what: str) -> bytes:
    """Decompress ``stored`` into exactly ``raw_bytes`` bytes (``what`` names the chunk)."""
    if codec == "none":
        raw = stored
    elif codec == "zlib":
        raw = _inflate(stored, raw_bytes, what)
    else:
        raw = _unzstd(stored, raw_bytes, what)
    if len(raw) != raw_bytes:
        raise AssetError(
            f"{what} decompresses to {len(raw)} bytes, the chunk table says {raw_bytes}"
        )
    return raw


def _inflate(stored: bytes, raw_bytes: int, what: str) -> bytes:
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(stored, raw_bytes + 1)
    except zlib.error as error:
        raise AssetError(f"{what} is not valid zlib data ({error})") from error
    if not inflater.eof or inflater.unused_data:
        raise AssetError(f"{what} is not one complete zlib stream of {raw_bytes} bytes")
    return raw


def _unzstd(stored: bytes, raw_bytes: int, what: str) -> bytes:
    zstandard = _zstandard()
    if zstandard is None:
        raise AssetError(
            f"{what} is zstd-compressed, which needs the 'zstandard' Python module "
            "(not installed here); install it or re-export the asset with zlib"
        )
    pieces = []
    produced_bytes = 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(stored) as reader:
            while produced_bytes <= raw_bytes:
                piece = reader.read(min(_READ_PIECE_BYTES, raw_bytes + 1 - produced_bytes))
                if not piece:
                    break
                pieces.append(piece)
                produced_bytes += len(piece)
    except zstandard.ZstdError as error:
        raise AssetError(f"{what} is not valid zstd data ({error})") from error
    return b"".join(pieces)
