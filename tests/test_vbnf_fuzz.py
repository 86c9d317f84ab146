"""Hostile input: truncations, flipped bytes, garbage and lying headers give ``AssetError`` only,
decode what is complete, and never allocate what the header merely claims."""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
import zlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from core.asset.field_data import FieldData
from core.asset.vbnf import asset_info, cut_asset, encode_asset, read_asset
from core.asset.vbnf.codecs import compress
from core.asset.vbnf.example import random_field
from core.asset.vbnf.header import AssetHeader, ChunkEntry, pack_header
from core.errors import AssetError, VbnfError

SMALL = random_field(
    "codebook", bitwidth=3, min_level=1, max_level=3, feature_dim=2, hidden_dim=4, surface_points=12
)
SMALL_ASSETS = {codec: encode_asset(SMALL, codec) for codec in ("none", "zlib")}


def skewed(field: FieldData) -> FieldData:
    """``field`` with indices mostly 0..2: uniform ones would make rans store them plain, and
    its decoder must be fuzzed too."""
    rng = np.random.default_rng(0)
    levels = [
        replace(level, indices=np.minimum(level.indices, rng.integers(0, 3, level.indices.size)))
        for level in field.levels
        if level.indices is not None
    ]
    return replace(field, levels=levels)


SMALL_ASSETS["rans"] = encode_asset(skewed(SMALL), "rans", mlp_bits=6)  # + an integer MLP

MEMORY_CAP_BYTES = 4 << 20


def only_asset_errors(data: bytes) -> None:
    """Run every entry point on ``data``; anything but success or AssetError fails the test."""
    readers: list[Callable[[bytes], object]] = [read_asset, asset_info, cut_asset]
    for reader in readers:
        with contextlib.suppress(AssetError):
            reader(data)


@pytest.mark.parametrize("codec", sorted(SMALL_ASSETS))
def test_every_truncation_decodes_its_complete_levels(codec: str) -> None:
    data = SMALL_ASSETS[codec]
    full = read_asset(data)
    ends = [layout.cumulative_bytes for layout in full.levels]
    for size in range(len(data)):
        complete = sum(end <= size for end in ends)
        if complete == 0:
            with pytest.raises(AssetError):
                read_asset(data[:size])
            continue
        contents = read_asset(data[:size])
        assert len(contents.field.levels) == complete
        assert contents.missing_levels == [layout.level for layout in full.levels[complete:]]
        assert contents.notes and "truncated" in contents.notes[0]
        for got, want in zip(contents.field.levels, full.field.levels, strict=False):
            np.testing.assert_array_equal(got.indices, want.indices)


def test_truncated_header_is_refused_at_every_length() -> None:
    data = SMALL_ASSETS["none"]
    for size in range(read_asset(data).header_bytes):
        with pytest.raises(AssetError, match=r"truncated header|not a \.vbnf"):
            asset_info(data[:size])


def reseal(data: bytearray, original: bytes) -> bytes:
    """Recompute the header CRC and the chunk CRCs (at the original layout), so corruption
    reaches the checks behind the CRCs instead of stopping at them."""
    contents = read_asset(original)
    header_bytes = contents.header_bytes
    table_offset = header_bytes - 4 - 32 * len(contents.levels)
    start = header_bytes
    for index, layout in enumerate(contents.levels):
        crc = zlib.crc32(bytes(data[start : layout.cumulative_bytes]))
        struct.pack_into("<I", data, table_offset + 32 * index + 24, crc)
        start = layout.cumulative_bytes
    struct.pack_into("<I", data, header_bytes - 4, zlib.crc32(bytes(data[: header_bytes - 4])))
    return bytes(data)


@pytest.mark.parametrize("resealed", [False, True])
@pytest.mark.parametrize("codec", sorted(SMALL_ASSETS))
def test_random_byte_flips(codec: str, resealed: bool) -> None:
    original = SMALL_ASSETS[codec]
    rng = np.random.default_rng(7 + resealed)
    for _ in range(150):
        data = bytearray(original)
        for position in rng.integers(0, len(data), size=rng.integers(1, 4)):
            data[position] ^= int(rng.integers(1, 256))
        only_asset_errors(reseal(data, original) if resealed else bytes(data))


def flipped(data: bytes, start: int, end: int, rng: np.random.Generator) -> bytearray:
    damaged = bytearray(data)
    damaged[int(rng.integers(start, end))] ^= int(rng.integers(1, 256))
    return damaged


def read_error(data: bytes) -> str | None:
    try:
        read_asset(data)
    except AssetError as error:
        return str(error)
    return None


def test_entropy_coded_damage_names_its_level() -> None:
    """All levels' streams are decoded in one batch, yet a stream that fails names the level
    it belongs to, and with two levels damaged an error of the coarser one is the one raised,
    as when each level was decoded in turn."""
    field = random_field("codebook", bitwidth=3, min_level=2, max_level=4, surface_points=200)
    original = encode_asset(skewed(field), "rans", mlp_bits=6)  # every level rans-coded
    levels = read_asset(original).levels
    rng = np.random.default_rng(13)
    named = set()
    for _ in range(300):
        coarse, fine = sorted(rng.choice(len(levels), size=2, replace=False))
        spans = [
            (levels[i].cumulative_bytes - levels[i].bytes, levels[i].cumulative_bytes)
            for i in (coarse, fine)
        ]
        damaged = flipped(original, *spans[0], rng)
        error = read_error(reseal(damaged, original))
        if error is not None and "entropy-coded" in error:
            assert f"level {levels[coarse].level} chunk" in error
            named.add(levels[coarse].level)
        both = flipped(bytes(damaged), *spans[1], rng)
        if error is not None and error.startswith(f"level {levels[coarse].level} "):
            assert read_error(reseal(both, original)) == error
    assert named == {layout.level for layout in levels[:-1]}


def test_random_garbage() -> None:
    rng = np.random.default_rng(11)
    prefix = SMALL_ASSETS["none"][:6]  # right magic and version, garbage after
    for _ in range(100):
        garbage = rng.integers(0, 256, size=rng.integers(0, 3000), dtype=np.uint8).tobytes()
        only_asset_errors(garbage)
        only_asset_errors(prefix + garbage)


def lying_header(level: int, corners: int, stored_bytes: int | None, codec: str) -> bytes:
    """A valid-CRC header for one dense level (k = 1) claiming ``corners`` corners, stored in
    ``stored_bytes`` (None: exactly what that many corners need)."""
    dense = random_field("dense", min_level=level, max_level=level, feature_dim=1, hidden_dim=1)
    structure_bytes = sum(dense.octree.cells[parent].shape[0] for parent in range(level))
    if stored_bytes is None:
        stored_bytes = structure_bytes + 2 * corners
    entry = ChunkEntry(level, stored_bytes, structure_bytes, corners, 0, codec)
    header = AssetHeader(
        store="dense",
        min_level=level,
        bitwidth=0,
        feature_dim=1,
        rank=0,
        scale=1.0,
        offset=np.zeros(3),
        mlp=dense.mlp,
        chunks=(entry,),
    )
    return pack_header(header)


@pytest.mark.parametrize(
    ("level", "corners", "stored_bytes", "codec", "message"),
    [
        (12, 4097**3, 2 * 4097**3, "none", "over the"),  # beyond the chunk cap
        (3, 10**6, 2 * 10**6, "none", "impossible at level 3"),  # more corners than cells allow
        (9, 513**3, 2**40, "zlib", "over the"),
        (9, 513**3, 2 * 513**3 + 10, "none", "contents need"),  # inconsistent sizes
        (9, 513**3, None, "none", "no complete level"),  # plausible but absent
        (9, 513**3, 1000, "zlib", "more than zlib can expand to"),
    ],
)
def test_lying_headers_allocate_nothing(
    level: int, corners: int, stored_bytes: int | None, codec: str, message: str
) -> None:
    header = lying_header(level, corners, stored_bytes, codec)
    tracemalloc.start()
    try:
        with pytest.raises(AssetError, match=message):
            read_asset(header + bytes(100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CAP_BYTES


@pytest.mark.parametrize("codec", ["zlib", "zstd"])
def test_a_compressed_bomb_stops_at_the_declared_size(codec: str) -> None:
    """A chunk that inflates far beyond its table entry is cut off, not inflated."""
    bomb = compress(bytes(32 << 20), codec)  # 32 MiB of zeros, far beyond the memory cap
    header = lying_header(5, 33**3, len(bomb), codec)  # declares ~72 kB of contents
    table_crc_offset = len(header) - 4 - 32 + 24
    data = bytearray(header + bomb)
    struct.pack_into("<I", data, table_crc_offset, zlib.crc32(bomb))
    struct.pack_into("<I", data, len(header) - 4, zlib.crc32(bytes(data[: len(header) - 4])))
    tracemalloc.start()
    try:
        with pytest.raises(AssetError):
            read_asset(bytes(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CAP_BYTES


def test_max_level_below_the_coarsest_level_is_a_user_error() -> None:
    with pytest.raises(VbnfError, match="below the coarsest"):
        read_asset(SMALL_ASSETS["none"], max_level=0)
