"""The ``.vbnf`` format: exact round trips, prefixes as lower LODs, ``cut``, ``info``, the CLI."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from core.asset.field_data import FieldData
from core.asset.vbnf import asset_info, bitpack, cut_asset, encode_asset, read_asset, write_asset
from core.asset.vbnf.example import random_field
from core.cli import main
from core.errors import AssetError, VbnfError

STORES = (
    [("codebook", bitwidth) for bitwidth in range(1, 9)]
    + [("hashed", bitwidth) for bitwidth in range(1, 9)]
    + [("dense", 4), ("lowrank", 4)]
)


def make_field(store: str, bitwidth: int = 4) -> FieldData:
    return random_field(store, bitwidth=bitwidth, seed=bitwidth)


def assert_same_field(actual: FieldData, expected: FieldData, levels: int | None = None) -> None:
    """``actual`` equals ``expected`` restricted to its first ``levels`` feature levels."""
    levels = len(expected.levels) if levels is None else levels
    assert len(actual.levels) == levels
    finest = expected.min_level + levels - 1
    assert actual.octree.max_level == finest
    for level in range(finest + 1):
        np.testing.assert_array_equal(actual.octree.cells[level], expected.octree.cells[level])
    assert (actual.min_level, actual.feature_dim, actual.bitwidth, actual.rank) == (
        expected.min_level,
        expected.feature_dim,
        expected.bitwidth,
        expected.rank,
    )
    assert actual.scale == expected.scale
    np.testing.assert_array_equal(actual.offset, expected.offset)
    for got, want in zip(actual.mlp.arrays(), expected.mlp.arrays(), strict=True):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want)
    for got_level, want_level in zip(actual.levels, expected.levels[:levels], strict=True):
        assert (got_level.level, got_level.kind) == (want_level.level, want_level.kind)
        for name in ("features", "codebook", "indices", "coefficients", "basis"):
            got, want = getattr(got_level, name), getattr(want_level, name)
            assert (got is None) == (want is None), name
            if got is not None:
                np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(("store", "bitwidth"), STORES)
def test_round_trip_is_exact(store: str, bitwidth: int) -> None:
    field = make_field(store, bitwidth)
    contents = read_asset(encode_asset(field))
    assert_same_field(contents.field, field)
    assert contents.missing_levels == [] and contents.notes == []


def test_round_trip_rounds_to_fp16_only() -> None:
    field = make_field("dense")
    field.levels[0].features = field.levels[0].features + np.float32(1e-4)
    field.mlp.hidden_bias = field.mlp.hidden_bias + np.float32(1e-4)
    decoded = read_asset(encode_asset(field)).field
    expected = field.levels[0].features.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(decoded.levels[0].features, expected)
    bias = field.mlp.hidden_bias.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(decoded.mlp.hidden_bias, bias)


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
@pytest.mark.parametrize("store", ["dense", "codebook", "lowrank", "hashed"])
def test_compressed_round_trip(store: str, compression: str) -> None:
    field = make_field(store)
    data = encode_asset(field, compression)
    assert_same_field(read_asset(data).field, field)
    codecs = {level["codec"] for level in asset_info(data)["levels"]}
    assert codecs <= {compression, "none"}
    if store == "dense":  # random fp16 features still compress a little; random indices do not
        assert compression in codecs


def skewed_indices(field: FieldData, seed: int = 0) -> FieldData:
    """``field`` with indices drawn from a skewed distribution, as trained indices are."""
    rng = np.random.default_rng(seed)
    for level in field.levels:
        if level.indices is not None:
            entries = 1 << field.bitwidth
            weights = rng.dirichlet(np.full(entries, 0.5))
            level.indices = rng.choice(entries, size=level.indices.size, p=weights)
    return field


@pytest.mark.parametrize(("store", "bitwidth"), STORES)
def test_rans_round_trip_is_exact(store: str, bitwidth: int) -> None:
    field = skewed_indices(make_field(store, bitwidth), seed=bitwidth)
    data = encode_asset(field, "rans")
    assert_same_field(read_asset(data).field, field)
    info = asset_info(data)
    assert {level["codec"] for level in info["levels"]} <= {"rans", "none"}
    assert info["total_bytes"] == len(data) <= len(encode_asset(field))


def test_rans_codes_skewed_indices_and_masks_below_their_raw_bits() -> None:
    field = skewed_indices(random_field("codebook", bitwidth=4, max_level=6, seed=3))
    data = encode_asset(field, "rans")
    finest = asset_info(data)["levels"][-1]
    assert finest["codec"] == "rans"
    assert finest["stored_index_bytes"] < 0.95 * finest["index_bytes"]
    assert finest["stored_structure_bytes"] < 0.9 * finest["structure_bytes"]
    stored = finest["stored_structure_bytes"] + finest["stored_index_bytes"]
    assert finest["bytes"] == stored + finest["codebook_bytes"]
    layouts = read_asset(data).levels
    for count, layout in enumerate(layouts, start=1):  # every prefix still a lower LOD
        assert_same_field(read_asset(data[: layout.cumulative_bytes]).field, field, levels=count)


def test_incompressible_chunks_are_stored_plain() -> None:
    field = make_field("codebook", 8)  # random codebook and indices do not compress
    info = asset_info(encode_asset(field, "zlib"))
    for level in info["levels"]:
        assert level["codec"] == "none" or level["bytes"] < level["raw_bytes"]


@pytest.mark.parametrize("store", ["codebook", "lowrank"])
def test_every_chunk_boundary_is_a_lower_lod(store: str) -> None:
    field = make_field(store)
    data = encode_asset(field, "zlib")
    layouts = read_asset(data).levels
    for count, layout in enumerate(layouts, start=1):
        prefix = read_asset(data[: layout.cumulative_bytes])
        assert_same_field(prefix.field, field, levels=count)
        assert prefix.missing_levels == [later.level for later in layouts[count:]]
        assert bool(prefix.notes) == (count < len(layouts))
        assert_same_field(read_asset(data, max_level=layout.level).field, field, levels=count)


def test_cut_keeps_chunks_byte_exact() -> None:
    field = make_field("codebook")
    data = encode_asset(field)
    full_info = asset_info(data)
    for count, level in enumerate(full_info["levels"], start=1):
        cut = cut_asset(data, level=level["level"])
        cut_info = asset_info(cut)
        assert cut_info["total_bytes"] == len(cut) and cut_info["missing_levels"] == []
        chunks = data[full_info["header_bytes"] : level["cumulative_bytes"]]
        assert cut[cut_info["header_bytes"] :] == chunks
        assert_same_field(read_asset(cut).field, field, levels=count)
        assert cut_asset(data, max_bytes=len(cut)) == cut
        if count > 1:
            assert cut_asset(data, max_bytes=len(cut) - 1) == cut_asset(
                data, level=level["level"] - 1
            )


def test_cut_refuses_what_it_cannot_keep() -> None:
    data = encode_asset(make_field("codebook"))
    coarsest = cut_asset(data, level=2)
    with pytest.raises(VbnfError, match="coarsest level"):
        cut_asset(data, max_bytes=len(coarsest) - 1)
    with pytest.raises(VbnfError, match="level 9 is not in this asset"):
        cut_asset(data, level=9)
    with pytest.raises(VbnfError, match="below the coarsest"):
        cut_asset(data, level=1)


def test_cut_repairs_a_truncated_download() -> None:
    field = make_field("dense")
    data = encode_asset(field)
    layouts = read_asset(data).levels
    repaired = cut_asset(data[: layouts[2].cumulative_bytes + 5])
    assert asset_info(repaired)["missing_levels"] == []
    assert_same_field(read_asset(repaired).field, field, levels=3)


@pytest.mark.parametrize(("store", "bitwidth"), [("codebook", 3), ("hashed", 5), ("lowrank", 4)])
def test_info_accounts_for_every_byte(store: str, bitwidth: int) -> None:
    field = make_field(store, bitwidth)
    data = encode_asset(field)
    info = asset_info(data)
    levels = info["levels"]
    assert info["total_bytes"] == len(data) == levels[-1]["cumulative_bytes"]
    assert info["header_bytes"] + sum(level["bytes"] for level in levels) == len(data)
    cumulative = info["header_bytes"]
    for level, level_data in zip(levels, field.levels, strict=True):
        cumulative += level["bytes"]
        assert level["cumulative_bytes"] == cumulative
        parts = ("structure_bytes", "index_bytes", "codebook_bytes", "feature_bytes")
        assert sum(level[part] for part in parts) == level["raw_bytes"] == level["bytes"]
        assert level["corners"] == field.octree.num_corners(level_data.level)
        assert level["structure_bytes"] == (
            sum(field.octree.cells[parent].shape[0] for parent in range(field.min_level))
            if level_data.level == field.min_level
            else field.octree.cells[level_data.level - 1].shape[0]
        )
    corners = sum(level["corners"] for level in levels)
    k = field.feature_dim
    assert info["fp16_feature_bytes"] == 2 * corners * k
    if store == "codebook":
        denominator = sum(level["corners"] * bitwidth + k * 2**bitwidth for level in levels)
        assert info["paper_ratio"] == pytest.approx(16 * corners * k / denominator)
        assert all(level["index_bytes"] == -(-level["corners"] * bitwidth // 8) for level in levels)
    else:
        assert info["paper_ratio"] is None


def test_header_layout_matches_the_spec() -> None:
    field = make_field("codebook", 5)
    data = encode_asset(field)
    assert data[:4] == b"VBNF"
    version, store, min_level, max_level, bitwidth, k, rank, hidden = struct.unpack_from(
        "<HBBBBHHH", data, 4
    )
    assert (version, store, min_level, max_level, bitwidth) == (2, 1, 2, 5, 5)
    assert (k, rank, hidden) == (8, 0, 32)
    assert struct.unpack_from("<4dB", data, 16) == (0.8, 0.25, -0.5, 1.0, 16)
    header_bytes = asset_info(data)["header_bytes"]
    assert header_bytes == 49 + 2 * (32 * (8 + 27) + 32 + 4 * 32 + 4) + 4 * 32 + 4
    (crc,) = struct.unpack_from("<I", data, header_bytes - 4)
    assert crc == zlib.crc32(data[: header_bytes - 4])
    table = 49 + 2 * (32 * (8 + 27) + 32 + 4 * 32 + 4)
    stored, structure, corners, chunk_crc, codec = struct.unpack_from("<QQQIB", data, table)
    first_chunk = data[header_bytes : header_bytes + stored]
    assert (structure, corners, codec) == (9, field.octree.num_corners(2), 0)
    assert chunk_crc == zlib.crc32(first_chunk)
    assert (
        first_chunk[:9]
        == field.octree.child_masks(0).tobytes() + field.octree.child_masks(1).tobytes()
    )


def version_1(data: bytes) -> bytes:
    """``data`` (version 2, fp16 MLP) as the version-1 writer wrote it: no MLP bits byte."""
    header_bytes = asset_info(data)["header_bytes"]
    old = bytearray(data[:48] + data[49 : header_bytes - 4])
    struct.pack_into("<H", old, 4, 1)
    return bytes(old) + struct.pack("<I", zlib.crc32(bytes(old))) + data[header_bytes:]


def test_version_1_files_are_still_read() -> None:
    field = make_field("codebook", 4)
    old = version_1(encode_asset(field, "zlib"))
    contents = read_asset(old)
    assert_same_field(contents.field, field)
    assert contents.header_bytes == asset_info(old)["header_bytes"] == 48 + 2 * 1284 + 4 * 32 + 4
    assert_same_field(read_asset(cut_asset(old, level=3)).field, field, levels=2)


@pytest.mark.parametrize("mlp_bits", [8, 6, 4, 2])
def test_quantized_mlp_is_canonical_and_small(mlp_bits: int) -> None:
    field = make_field("codebook", 4)
    field.mlp.hidden_weight[3] = 1e-6  # a row below the smallest scale: stored as zeros
    data = encode_asset(field, "rans", mlp_bits)
    info = asset_info(data)
    weights = [(32, 8 + 27), (4, 32)]
    expected = sum(2 * rows + (rows * cols * mlp_bits + 7) // 8 for rows, cols in weights)
    assert info["mlp_bits"] == mlp_bits and info["mlp_bytes"] == expected + 2 * (32 + 4)
    decoded = read_asset(data).field
    assert (decoded.mlp.hidden_weight[3] == 0).all()
    np.testing.assert_array_equal(decoded.mlp.hidden_bias, field.mlp.hidden_bias)
    for got, want in [(decoded.mlp.hidden_weight, field.mlp.hidden_weight)]:
        step = np.abs(want).max(axis=1, keepdims=True) / (2 ** (mlp_bits - 1) - 1)
        assert (np.abs(got - want)[4:] <= 0.51 * step[4:] + 1e-6).all()
    assert encode_asset(decoded, "rans", mlp_bits) == data  # re-encoding is byte exact
    assert cut_asset(data) == data


def test_non_canonical_mlp_codes_are_refused() -> None:
    """Codes whose row maximum is not +-127 at 8 bits would re-encode to other values."""
    original = encode_asset(make_field("codebook", 4), "none", 8)
    data = bytearray(original)
    first_row = slice(49 + 2 * 32, 49 + 2 * 32 + 8 + 27)  # after the 32 fp16 row scales
    codes = np.frombuffer(bytes(data[first_row]), np.uint8).astype(np.int64) - 128
    data[first_row] = (np.clip(codes, -126, 126) + 128).astype(np.uint8).tobytes()
    header_bytes = asset_info(original)["header_bytes"]
    struct.pack_into("<I", data, header_bytes - 4, zlib.crc32(bytes(data[: header_bytes - 4])))
    with pytest.raises(AssetError, match="not scaled to their largest code"):
        read_asset(bytes(data))


def test_indices_are_packed_little_endian() -> None:
    assert bitpack.pack_indices(np.array([1, 2, 3]), 2) == bytes([0b00111001])
    assert bitpack.pack_indices(np.array([5, 6]), 3) == bytes([0b00110101])
    assert bitpack.pack_indices(np.array([0x1234]), 16) == bytes([0x34, 0x12])


@pytest.mark.parametrize("bitwidth", [1, 3, 7, 8, 11, 16])
def test_bit_packing_matches_a_bit_string_reference(
    bitwidth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bitpack, "BLOCK_INDICES", 16)  # exercise block boundaries
    rng = np.random.default_rng(bitwidth)
    values = rng.integers(0, 1 << bitwidth, size=101)
    stream = "".join(format(int(value), f"0{bitwidth}b")[::-1] for value in values)
    stream += "0" * (-len(stream) % 8)
    expected = bytes(int(stream[start : start + 8][::-1], 2) for start in range(0, len(stream), 8))
    packed = bitpack.pack_indices(values, bitwidth)
    assert packed == expected
    np.testing.assert_array_equal(bitpack.unpack_indices(packed, values.size, bitwidth), values)


def test_write_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "scene.vbnf"
    field = make_field("codebook")
    write_asset(field, path)
    before = path.read_bytes()
    broken = make_field("codebook")
    assert broken.levels[1].indices is not None
    broken.levels[1].indices = broken.levels[1].indices[:-1]
    with pytest.raises(ValueError, match="level 3 indices has shape"):
        write_asset(broken, path)
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["scene.vbnf"]


def test_writer_refuses_values_fp16_cannot_hold() -> None:
    field = make_field("dense")
    field.levels[0].features = field.levels[0].features * np.float32(1e6)
    with pytest.raises(ValueError, match="not finite in fp16"):
        encode_asset(field)
    field = make_field("codebook")
    field.bitwidth = 17
    with pytest.raises(ValueError, match="bitwidth 17"):
        encode_asset(field)


def test_sources_can_be_paths_streams_and_bytes(tmp_path: Path) -> None:
    field = make_field("hashed", 6)
    path = tmp_path / "scene.vbnf"
    write_asset(field, path, compression="zlib")
    with path.open("rb") as stream:
        from_stream = read_asset(stream).field
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        assert_same_field(read_asset(source).field, field)
    assert_same_field(from_stream, field)


def test_errors_name_the_file_and_the_level(tmp_path: Path) -> None:
    data = bytearray(encode_asset(make_field("codebook")))
    third = asset_info(bytes(data))["levels"][2]
    data[third["cumulative_bytes"] - 1] ^= 0xFF
    path = tmp_path / "damaged.vbnf"
    path.write_bytes(bytes(data))
    with pytest.raises(AssetError, match=r"damaged\.vbnf: level 4 chunk is corrupted \(CRC-32"):
        read_asset(path)
    with pytest.raises(AssetError, match="cannot open"):
        read_asset(tmp_path / "absent.vbnf")


def test_keep_intact_decodes_the_levels_before_a_corrupted_chunk(tmp_path: Path) -> None:
    field = make_field("codebook")
    data = bytearray(encode_asset(field))
    third = asset_info(bytes(data))["levels"][2]
    data[third["cumulative_bytes"] - 1] ^= 0xFF  # level 4 of 2..5
    contents = read_asset(bytes(data), keep_intact=True)
    assert contents.field.max_level == 3 and contents.missing_levels == [4, 5]
    assert (
        contents.notes == [contents.notes[0].split(": levels")[0] + ": levels 4..5 left out"]
        and "level 4 chunk is corrupted (CRC-32" in contents.notes[0]
    )
    info = asset_info(bytes(data), keep_intact=True)
    assert [level["present"] for level in info["levels"]] == [True, True, False, False]
    data[asset_info(bytes(data), keep_intact=True)["header_bytes"] + 1] ^= 0xFF  # level 2 too
    with pytest.raises(AssetError, match="no complete level: level 2 chunk is corrupted"):
        read_asset(bytes(data), keep_intact=True)


def test_a_source_without_a_complete_level_is_refused() -> None:
    data = encode_asset(make_field("codebook"))
    first = asset_info(data)["levels"][0]["cumulative_bytes"]
    with pytest.raises(AssetError, match="no complete level"):
        read_asset(data[: first - 1])
    assert asset_info(data[: first - 1])["missing_levels"] == [2, 3, 4, 5]
    with pytest.raises(AssetError, match="truncated header"):
        asset_info(data[:100])


def test_zstd_without_the_module_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode_asset(make_field("dense"), "zstd")
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes ``import zstandard`` fail
    with pytest.raises(AssetError, match=r"zstd-compressed.*'zstandard' Python module"):
        read_asset(data)
    with pytest.raises(VbnfError, match="zstandard"):
        encode_asset(make_field("dense"), "zstd")
    assert asset_info(data)["total_bytes"] == len(data)  # info needs no decompression


def test_info_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "scene.vbnf"
    write_asset(make_field("codebook"), path)
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == asset_info(path)
    assert main(["info", str(path)]) == 0
    table = capsys.readouterr().out
    assert "codebook store" in table and "paper 16mk/(mb+k*2^b)" in table
    path.write_bytes(path.read_bytes()[:-1])
    assert main(["info", str(path)]) == 0
    captured = capsys.readouterr()
    assert "(missing)" in captured.out
    assert "warning:" in captured.err and "level 5 missing" in captured.err


def test_cut_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, out = tmp_path / "scene.vbnf", tmp_path / "small.vbnf"
    write_asset(make_field("codebook"), path)
    assert main(["cut", str(path), "--level", "3", "-o", str(out)]) == 0
    assert out.read_bytes() == cut_asset(path, level=3)
    assert main(["cut", str(path), "--max-bytes", "10", "-o", str(out)]) == 1
    assert "error:" in capsys.readouterr().err
    path.write_bytes(path.read_bytes()[:-1])  # a download cut short inside its finest level
    assert main(["cut", str(path), "-o", str(out)]) == 0
    repaired = asset_info(out)
    assert repaired["max_level"] == asset_info(path)["max_level"] - 1
    assert out.read_bytes() == cut_asset(path, level=repaired["max_level"])


def test_reading_and_decoding_import_numpy_only(tmp_path: Path) -> None:
    path = tmp_path / "scene.vbnf"
    write_asset(make_field("codebook"), path, compression="zlib")
    script = (
        "import sys\n"
        "from core.asset.numpy_field import NumpyField\n"
        "from core.asset.vbnf import asset_info, read_asset\n"
        f"field = read_asset({str(path)!r}).field\n"
        f"asset_info({str(path)!r})\n"
        "NumpyField(field).query([[0.0, 0.0, 0.0]], field.max_level)\n"
        "heavy = {'torch', 'zstandard', 'bpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", script], cwd=root, check=True)
