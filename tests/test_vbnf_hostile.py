"""Hostile assets under a memory bound: every truncation, resealed flip, header and chunk-table
mutation and decompression bomb ends in success or one ``AssetError``, and the peak memory of
trying (``tracemalloc``) stays within a small multiple of what the asset really decodes to."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from core.asset.numpy_field import NumpyField
from core.asset.octree import SparseOctree
from core.asset.vbnf import encode_asset, read_asset
from core.asset.vbnf.budget import BUDGET_ENV, OCTREE_PEAK_BYTES_PER_CORNER
from core.asset.vbnf.codecs import compress
from core.asset.vbnf.example import random_field
from core.asset.vbnf.header import AssetHeader, ChunkEntry, pack_header
from core.asset.vbnf.spec import CHUNK_ENTRY, PREFIX
from core.errors import AssetError, VbnfError

FIELD = random_field(
    "codebook", bitwidth=3, min_level=1, max_level=3, feature_dim=2, hidden_dim=4, seed=3
)
ASSETS = {codec: encode_asset(FIELD, codec) for codec in ("none", "zlib", "zstd")}
# What any attempt on these small assets may allocate: far below one hostile claim.
SMALL_PEAK_BYTES = 2 << 20


@contextmanager
def peak_memory() -> Iterator[list[int]]:
    """Yields a list that holds the traced peak (bytes) once the block ends."""
    result: list[int] = []
    tracemalloc.start()
    try:
        yield result
        result.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def attempt(data: bytes) -> None:
    """Decode ``data``; only success or an AssetError that names a problem may come out."""
    try:
        NumpyField(read_asset(data, memory_budget_bytes=64 << 20).field)
    except AssetError as error:
        assert str(error) and "\n" not in str(error)


def layout(data: bytes) -> tuple[int, int, list[int]]:
    """Header size, chunk-table offset and chunk end offsets of a valid asset."""
    contents = read_asset(data)
    table = contents.header_bytes - 4 - CHUNK_ENTRY.size * len(contents.levels)
    return contents.header_bytes, table, [level.cumulative_bytes for level in contents.levels]


def reseal(data: bytearray, header_bytes: int, table: int, ends: list[int]) -> bytes:
    """Recompute every CRC (at the original layout) so mutations reach the checks behind them."""
    start = header_bytes
    for index, end in enumerate(ends):
        crc = zlib.crc32(bytes(data[start:end]))
        struct.pack_into("<I", data, table + CHUNK_ENTRY.size * index + 24, crc)
        start = end
    struct.pack_into("<I", data, header_bytes - 4, zlib.crc32(bytes(data[: header_bytes - 4])))
    return bytes(data)


@pytest.mark.parametrize("codec", sorted(ASSETS))
def test_truncations_and_resealed_flips_stay_small(codec: str) -> None:
    original = ASSETS[codec]
    header_bytes, table, ends = layout(original)
    rng = np.random.default_rng(5)
    with peak_memory() as peak:
        for size in range(0, len(original), 5):
            attempt(original[:size])
        for _ in range(150):
            data = bytearray(original)
            for position in rng.integers(0, len(data), size=rng.integers(1, 5)):
                data[position] ^= int(rng.integers(1, 256))
            attempt(reseal(data, header_bytes, table, ends))
    assert peak[0] < SMALL_PEAK_BYTES


def header_mutations(data: bytes) -> Iterator[bytearray]:
    """Each prefix field and each chunk-table field set to edge and random values."""
    header_bytes, table, ends = layout(data)
    rng = np.random.default_rng(9)
    fields = [(6, "B"), (7, "B"), (8, "B"), (9, "B"), (10, "H"), (12, "H"), (14, "H")]
    fields += [(16, "d"), (24, "d"), (32, "d"), (40, "d")]
    for index in range(len(ends)):
        entry = table + CHUNK_ENTRY.size * index
        fields += [(entry, "Q"), (entry + 8, "Q"), (entry + 16, "Q"), (entry + 28, "B")]
        fields += [(entry + 29, "B"), (entry + 31, "B")]
    for offset, kind in fields:
        width = struct.calcsize(kind)
        if kind == "d":
            values = [0.0, -1.0, 1e-300, 1e308, float("nan"), float("inf"), 1e10, 1e-10]
        else:
            top = (1 << (8 * width)) - 1
            values = [
                0,
                1,
                2,
                3,
                8,
                255,
                top,
                top >> 1,
                *rng.integers(0, min(top, 1 << 62), size=6).tolist(),
            ]
        for value in values:
            mutated = bytearray(data)
            struct.pack_into(f"<{kind}", mutated, offset, value)
            yield bytearray(reseal(mutated, header_bytes, table, ends))


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_structure_aware_header_and_table_mutations(codec: str) -> None:
    count = 0
    with peak_memory() as peak:
        for mutated in header_mutations(ASSETS[codec]):
            attempt(bytes(mutated))
            count += 1
    assert count > 200
    assert peak[0] < SMALL_PEAK_BYTES


def one_level_asset(
    level: int, feature_dim: int, structure: bytes, corners: int, stored: bytes, codec: str
) -> bytes:
    """A one-level dense asset with the given chunk contents and a valid CRC."""
    dense = random_field("dense", min_level=1, max_level=1, feature_dim=feature_dim, hidden_dim=2)
    entry = ChunkEntry(level, len(stored), len(structure), corners, zlib.crc32(stored), codec)
    header = AssetHeader("dense", level, 0, feature_dim, 0, 1.0, np.zeros(3), dense.mlp, (entry,))
    return pack_header(header) + stored


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_bombs_are_refused_by_the_budget_before_any_decompression(codec: str) -> None:
    """Zeros declared as a huge level: the budget refuses it naming the level and its claim."""
    corners = 2_000_000  # within what the level holds and what the stored bytes can expand to
    stored = compress(bytes(64 << 20), codec)  # 64 MiB of zeros in a few kB
    data = one_level_asset(8, 16, bytes(8), corners, stored, codec)
    with (
        peak_memory() as peak,
        pytest.raises(AssetError, match=r"level 8 declares 2000000 corners .* reading budget"),
    ):
        read_asset(data, memory_budget_bytes=256 << 20)
    assert peak[0] < 2 * len(stored) + SMALL_PEAK_BYTES


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_a_bomb_within_the_budget_stops_at_its_structure(codec: str) -> None:
    """With the budget raised, a bomb whose masks are zeros is refused after its structure."""
    stored = compress(bytes(64 << 20), codec)
    corners = (len(bytes(64 << 20)) - 8) // 32
    data = one_level_asset(8, 16, bytes(8), corners, stored, codec)
    with peak_memory() as peak, pytest.raises(AssetError, match="cell without children"):
        read_asset(data, memory_budget_bytes=1 << 50)
    assert peak[0] < 2 * len(stored) + SMALL_PEAK_BYTES


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_a_stream_longer_or_shorter_than_declared_is_refused(codec: str) -> None:
    field = random_field("dense", min_level=2, max_level=2, feature_dim=4, hidden_dim=2)
    structure = field.octree.child_masks(0).tobytes() + field.octree.child_masks(1).tobytes()
    corners = field.octree.num_corners(2)
    contents = structure + bytes(2 * 4 * corners)
    for extra, message in ((b"\0" * 4096, "does not end"), (None, "decompresses to")):
        raw = contents + extra if extra else contents[:-2]
        data = one_level_asset(2, 4, structure, corners, compress(raw, codec), codec)
        with pytest.raises(AssetError, match=message):
            read_asset(data)
    read_asset(one_level_asset(2, 4, structure, corners, compress(contents, codec), codec))


def test_a_valid_full_octree_decodes_within_a_small_multiple_of_its_size() -> None:
    """A full level-4 octree, k = 256, from a few kB of zstd: the peak is the decoded arrays
    plus the octree's sort temporaries, never the chunk twice over."""
    level, feature_dim = 4, 256
    octree = SparseOctree.from_child_masks(
        [np.full(8**parent, 255, np.uint8) for parent in range(level)]
    )
    structure = b"".join(octree.child_masks(parent).tobytes() for parent in range(level))
    corners = octree.num_corners(level)
    stored = compress(structure + bytes(2 * feature_dim * corners), "zstd")
    data = one_level_asset(level, feature_dim, structure, corners, stored, "zstd")
    decoded_bytes = 4 * feature_dim * corners
    with peak_memory() as peak:
        contents = read_asset(data)
    assert contents.field.levels[0].features.shape == (corners, feature_dim)
    assert peak[0] < 1.2 * decoded_bytes + OCTREE_PEAK_BYTES_PER_CORNER * corners
    assert peak[0] < 2 * decoded_bytes  # the old reader's join alone cost 2x the fp16 chunk


def test_the_budget_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    data = ASSETS["zlib"]
    monkeypatch.setenv(BUDGET_ENV, "1K")
    with pytest.raises(AssetError, match="over the 1 MiB reading budget"):
        read_asset(data)
    read_asset(data, memory_budget_bytes=64 << 20)  # an explicit budget wins
    monkeypatch.setenv(BUDGET_ENV, "lots")
    with pytest.raises(VbnfError, match="is not a size"):
        read_asset(data)
    monkeypatch.setenv(BUDGET_ENV, "1.5G")
    read_asset(data)


def test_non_zero_chunk_table_padding_is_refused() -> None:
    data = ASSETS["none"]
    header_bytes, table, ends = layout(data)
    mutated = bytearray(data)
    mutated[table + CHUNK_ENTRY.size - 1] = 1
    with pytest.raises(AssetError, match="non-zero padding"):
        read_asset(reseal(mutated, header_bytes, table, ends))


@pytest.mark.parametrize("value", [1e308, -1e308, 1e12])
@pytest.mark.parametrize("offset", [16, 24, 40])
def test_extreme_normalisation_is_refused(offset: int, value: float) -> None:
    data = ASSETS["none"]
    header_bytes, table, ends = layout(data)
    mutated = bytearray(data)
    struct.pack_into("<d", mutated, offset, value)
    with pytest.raises(AssetError, match="normalisation"):
        read_asset(reseal(mutated, header_bytes, table, ends))
    assert PREFIX.size == 48  # the offsets above are the prefix's scale and offset fields
