"""Reading a ``.vbnf`` asset, whole or as a prefix, from a path, bytes or a binary stream.

Reading is sequential, as a client streaming the file would do it: the header, then each chunk
in turn until the source ends. Sizes come only from a validated header and data is read in
bounded pieces, so a header that lies costs nothing until the bytes actually arrive. A chunk cut
off by the end of the data is *missing* (its level and all finer ones are reported, the complete
levels still decode); a chunk whose bytes are all there but fail their CRC is *corrupted* and
raises :class:`AssetError` naming its level. Every error names the file when there is one.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from ...errors import AssetError, VbnfError
from ..field_data import FieldData, LevelData
from ..octree import SparseOctree
from . import budget
from .chunk import decode_store, decode_structure
from .codecs import ChunkReader
from .coded_chunk import CodedChunk, PlainChunk, decode_coded_chunks, parse_coded_chunk
from .header import AssetHeader, LevelLayout, header_size, unpack_header
from .spec import PREFIX

Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO

_READ_PIECE_BYTES = 1 << 24


@dataclass(frozen=True)
class ScannedAsset:
    """The header and the complete, CRC-checked chunks of a source, still encoded."""

    name: str | None  # the file's path, for messages; None for in-memory sources
    header: AssetHeader
    chunks: list[bytes | bytearray]  # stored bytes of the complete chunks read, coarsest first
    requested_levels: int  # how many chunks were asked for (all, or up to a max_level)
    available_bytes: int  # bytes read before the source ended or reading stopped
    damage: str | None = None  # why reading stopped at a corrupted chunk (keep_intact only)

    @property
    def missing_levels(self) -> list[int]:
        """Requested levels whose chunk is not (completely) in the source."""
        wanted = self.header.chunks[len(self.chunks) : self.requested_levels]
        return [entry.level for entry in wanted]

    def notes(self) -> list[str]:
        """Human-readable lines about what the source lacks or what was left unread."""
        notes = []
        missing = self.missing_levels
        if missing and self.damage is not None:
            notes.append(
                f"{self.damage}: level{'s' if len(missing) > 1 else ''} {_level_span(missing)} "
                "left out"
            )
        elif missing:
            last_missing = self.header.layouts()[missing[-1] - self.header.min_level]
            notes.append(
                f"truncated: the data ends after {self.available_bytes} bytes; level"
                f"{'s' if len(missing) > 1 else ''} {_level_span(missing)} missing (reaching "
                f"level {last_missing.level} needs {last_missing.cumulative_bytes} bytes)"
            )
        unread = [entry.level for entry in self.header.chunks[self.requested_levels :]]
        if unread:
            notes.append(f"levels {_level_span(unread)} not read (finer than max_level)")
        return notes


@dataclass(frozen=True)
class AssetContents:
    """A decoded asset: the field with every complete level, and what the file holds."""

    field: FieldData
    header_bytes: int
    levels: list[LevelLayout]  # every level the header declares, present or not
    missing_levels: list[int]
    notes: list[str]


def read_asset(
    source: Source,
    max_level: int | None = None,
    memory_budget_bytes: int | None = None,
    keep_intact: bool = False,
) -> AssetContents:
    """Decode ``source`` up to ``max_level`` (default: all levels it has).

    A truncated source yields its complete levels, with the rest in ``missing_levels`` and
    ``notes``; so does a corrupted chunk with ``keep_intact`` (else it raises); a source without
    even one complete level raises :class:`AssetError`, and so does one whose levels would need
    more memory than the budget (see ``budget.py``).
    """
    scan = scan_asset(
        source, max_level, budget.memory_budget_bytes(memory_budget_bytes), keep_intact
    )
    header = scan.header
    if not scan.chunks:
        first = header.layouts()[0]
        reason = scan.damage or (
            f"the coarsest (level {first.level}) needs {first.cumulative_bytes} bytes, the "
            f"data has {scan.available_bytes}"
        )
        raise AssetError(f"no complete level: {reason}", scan.name)
    with named_errors(scan.name):
        try:
            field = _decode_field(header, scan.chunks)
        except MemoryError as error:  # within the budget, but this machine has less free
            decoded = header.chunks[: len(scan.chunks)]
            needed_bytes = sum(budget.decoded_level_bytes(header, entry) for entry in decoded)
            raise AssetError(
                f"out of memory decoding levels {_level_span([e.level for e in decoded])} "
                f"(they need about {needed_bytes >> 20} MiB); read fewer levels"
            ) from error
    return AssetContents(
        field=field,
        header_bytes=header.header_bytes,
        levels=header.layouts(),
        missing_levels=scan.missing_levels,
        notes=scan.notes(),
    )


def scan_asset(
    source: Source,
    max_level: int | None = None,
    decode_budget_bytes: int | None = None,
    keep_intact: bool = False,
) -> ScannedAsset:
    """Read the header and the chunks of levels up to ``max_level``, checking their CRCs; with
    ``keep_intact`` a corrupted chunk ends the scan (``damage`` says why) instead of raising.

    With ``decode_budget_bytes`` the levels to decode (those the source is long enough to hold)
    are first checked against that memory budget, before a single chunk byte is read."""
    with _open(source) as (stream, name), named_errors(name):
        reader = _Reader(stream)
        header = _read_header(reader)
        if max_level is not None and max_level < header.min_level:
            raise VbnfError(
                f"max_level {max_level} is below the coarsest level {header.min_level}", name
            )
        requested = [e for e in header.chunks if max_level is None or e.level <= max_level]
        if decode_budget_bytes is not None:  # for the levels the source can hold at all
            size_bytes = reader.source_bytes
            present = [
                entry
                for entry, layout in zip(requested, header.layouts(), strict=False)
                if size_bytes is None or layout.cumulative_bytes <= size_bytes
            ]
            budget.check_budget(header, present, decode_budget_bytes)
        chunks = []
        damage = None
        for entry in requested:
            stored = reader.read(entry.stored_bytes)
            if len(stored) < entry.stored_bytes:
                break
            computed_crc = zlib.crc32(stored)
            if computed_crc != entry.crc32:
                damage = (
                    f"level {entry.level} chunk is corrupted (CRC-32 {computed_crc:08x}, "
                    f"chunk table says {entry.crc32:08x})"
                )
                if not keep_intact:
                    raise AssetError(damage)
                break
            chunks.append(stored)
        if len(chunks) == len(header.chunks) and reader.read(1):
            raise AssetError(f"unexpected data after the last chunk (byte {header.total_bytes})")
        return ScannedAsset(
            name, header, chunks, len(requested), reader.consumed_bytes, damage=damage
        )


@contextmanager
def named_errors(name: str | None) -> Iterator[None]:
    """Re-raise an :class:`AssetError` that does not name its file with ``name``."""
    try:
        yield
    except AssetError as error:
        if name is None or error.path is not None:
            raise
        raise AssetError(str(error), name) from error


class _Reader:
    """Sequential reads that allocate only as data arrives, however large the request: from a
    source of known size a read is one buffer of what the source still holds (never the size a
    header claims), from a pipe it grows piece by piece."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._readinto: Callable[[memoryview], int | None] | None = getattr(
            stream, "readinto", None
        )
        self._remaining_bytes = None if self._readinto is None else _remaining_bytes(stream)
        self.consumed_bytes = 0

    @property
    def source_bytes(self) -> int | None:
        """Size of the source from where reading began (None: unknown)."""
        return self._remaining_bytes

    def read(self, size: int) -> bytes | bytearray:
        """Up to ``size`` bytes; fewer only when the source has ended."""
        if self._remaining_bytes is None or self._readinto is None:
            return self._read_pieces(size)
        buffer = bytearray(min(size, max(self._remaining_bytes - self.consumed_bytes, 0)))
        view, filled = memoryview(buffer), 0
        while filled < len(buffer):
            count = self._readinto(view[filled : filled + _READ_PIECE_BYTES])
            if not count:
                del view
                del buffer[filled:]  # the source shrank meanwhile
                break
            filled += count
        self.consumed_bytes += len(buffer)
        return buffer

    def _read_pieces(self, size: int) -> bytes:
        pieces = []
        remaining = size
        while remaining > 0:
            piece = self._stream.read(min(remaining, _READ_PIECE_BYTES))
            if not piece:
                break
            pieces.append(piece)
            remaining -= len(piece)
        data = b"".join(pieces)
        self.consumed_bytes += len(data)
        return data


@contextmanager
def _open(source: Source) -> Iterator[tuple[BinaryIO, str | None]]:
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(source), None
    elif isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            stream = open(name, "rb")  # noqa: SIM115 - closed below, after the caller's reads
        except OSError as error:
            raise AssetError(f"cannot open ({error.strerror})", name) from error
        with stream:
            yield stream, name
    else:
        stream_name = getattr(source, "name", None)
        yield source, stream_name if isinstance(stream_name, str) else None


def _remaining_bytes(stream: BinaryIO) -> int | None:
    """Bytes a seekable source holds from its position on (None for a pipe or a socket)."""
    try:
        if not stream.seekable():
            return None
        position = stream.tell()
        end = stream.seek(0, io.SEEK_END)
        stream.seek(position)
    except (OSError, ValueError):
        return None
    return end - position


def _read_header(reader: _Reader) -> AssetHeader:
    prefix = bytes(reader.read(PREFIX.size))
    rest = bytes(reader.read(header_size(prefix) - PREFIX.size))
    return unpack_header(prefix + rest)


def _decode_field(header: AssetHeader, chunks: list[bytes | bytearray]) -> FieldData:
    masks_per_level: list[np.ndarray] = []
    levels: list[LevelData] = []
    octree: SparseOctree | None = None
    coded = _coded_contents(header, chunks)
    # zip stops at a chunk that failed to parse: its error is raised there
    for entry, stored, plain in zip(header.chunks, chunks, coded, strict=False):
        what = f"level {entry.level} chunk"
        if isinstance(plain, AssetError):
            raise plain
        if plain is None:
            chunk = ChunkReader(stored, entry.codec, header.raw_bytes(entry), what)
            indices = None
        else:  # rANS symbols back in the plain layout (less the indices), then read as any
            chunk = ChunkReader(plain.contents, "none", len(plain.contents), what)
            indices = plain.indices
        structure = bytearray(entry.structure_bytes)
        chunk.readinto(memoryview(structure))
        masks_per_level = decode_structure(
            structure, entry.structure_bytes, masks_per_level, entry.level
        )
        octree = SparseOctree.from_child_masks(masks_per_level)
        if octree.num_corners(entry.level) != entry.corners:  # before the store is allocated
            raise AssetError(
                f"level {entry.level} octree has {octree.num_corners(entry.level)} corners, "
                f"the chunk table says {entry.corners}"
            )
        arrays = header.store_arrays(entry)
        levels.append(
            decode_store(chunk, entry.level, header.store, arrays, header.bitwidth, indices)
        )
        chunk.finish()
    assert octree is not None, "read_asset decodes only sources with a complete level"
    return FieldData(
        octree=octree,
        min_level=header.min_level,
        feature_dim=header.feature_dim,
        scale=header.scale,
        offset=header.offset,
        mlp=header.mlp,
        levels=levels,
        bitwidth=header.bitwidth,
        rank=header.rank,
    )


def _coded_contents(
    header: AssetHeader, chunks: list[bytes | bytearray]
) -> list[PlainChunk | AssetError | None]:
    """Per chunk, the plain contents of a ``rans`` chunk (None for the other codecs), all
    decoded in one batch. A chunk that fails to parse ends the list with its error, raised
    when reading reaches it (after any error of a coarser level, as if each level were
    decoded in turn); finer chunks are not looked at."""
    contents: list[PlainChunk | AssetError | None] = []
    parsed: list[CodedChunk] = []
    positions: list[int] = []
    for entry, stored in zip(header.chunks, chunks, strict=False):
        if entry.codec != "rans":
            contents.append(None)
            continue
        what = f"level {entry.level} chunk"
        arrays = header.store_arrays(entry)
        try:
            parsed.append(
                parse_coded_chunk(stored, entry.structure_bytes, arrays, header.bitwidth, what)
            )
        except AssetError as error:
            contents.append(error)
            break
        positions.append(len(contents))
        contents.append(None)
    for position, plain in zip(positions, decode_coded_chunks(parsed), strict=True):
        contents[position] = plain
    return contents


def _level_span(levels: list[int]) -> str:
    return str(levels[0]) if len(levels) == 1 else f"{levels[0]}..{levels[-1]}"
