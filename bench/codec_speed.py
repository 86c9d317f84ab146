"""How fast a ``rans``-coded asset decodes: indices/s per level and of a whole read, the read
against the same field's raw chunks, and the import into Blender.

Run ``python -m bench.codec_speed ASSET [...] [--repeats N] [--blender]``, ASSET a .vbnf whose
chunks are ``rans`` (``make demo``'s, or ``python -m core export --compression rans``). The same
field is re-encoded with raw chunks (codec ``none``, same MLP bits) for the raw side. Printed:

- per level: its index stream decoded alone, the level's streams (masks and indices) decoded
  together, and its chunk from stored bytes to plain contents (parsing and packing included),
  each in ms and M indices/s;
- the whole asset: every stream of every level in one batch, as the reader decodes them, and
  every chunk to plain contents;
- 2^20 indices drawn from the finest level's distribution, one stream (a level-8-sized one);
- ``read_asset`` of each prefix (header to the end of a level: the octree, the arrays), coded
  and raw;
- with ``--blender`` (the real bpy): File > Import of the asset, coded and raw, with an empty
  grid cache each time (the decoding of the shown level into OpenVDB grids included), and the
  reading part of it alone (``asset_info`` and ``read_asset``, what the import calls).

Each figure is the fastest of ``--repeats`` runs (the machine is shared: the minimum is the
signal), in CPU seconds of this process but for the import, which is wall time (Blender's grid
writing uses threads). Figures only, nothing is asserted.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from core.asset.vbnf import asset_info, encode_asset, read_asset
from core.asset.vbnf.coded_chunk import (
    CodedChunk,
    PlainChunk,
    decode_coded_chunks,
    parse_coded_chunk,
)
from core.asset.vbnf.header import AssetHeader, ChunkEntry
from core.asset.vbnf.rans import ByteReader, decode_streams, encode_symbols, parse_stream
from core.asset.vbnf.reader import scan_asset
from core.errors import AssetError

LARGE_STREAM = 1 << 20
BLENDER_REPEATS = 3  # an import writes grids for seconds: fewer runs


def best_seconds(
    work: Callable[[], object], repeats: int, clock: Callable[[], float] = time.process_time
) -> float:
    """Fastest of ``repeats`` runs of ``work``, by default in CPU seconds of this process (the
    decoding is single-threaded, and on a shared machine wall time mostly measures the
    others)."""
    times = []
    for _ in range(repeats):
        started = clock()
        work()
        times.append(clock() - started)
    return min(times)


def raw_twin(data: bytes) -> bytes:
    """The same field with raw chunks and the same MLP bits."""
    return encode_asset(read_asset(data).field, "none", asset_info(data)["mlp_bits"])


@dataclass(frozen=True)
class Level:
    entry: ChunkEntry
    stored: bytes | bytearray
    coded: CodedChunk


def coded_levels(data: bytes) -> tuple[AssetHeader, list[Level]]:
    scan = scan_asset(data)
    header = scan.header
    levels = []
    for entry, stored in zip(header.chunks, scan.chunks, strict=True):
        if entry.codec != "rans":
            raise SystemExit(f"level {entry.level} is stored as {entry.codec}, not rans")
        levels.append(Level(entry, stored, parse(header, entry, stored)))
    return header, levels


def parse(header: AssetHeader, entry: ChunkEntry, stored: bytes | bytearray) -> CodedChunk:
    arrays = header.store_arrays(entry)
    return parse_coded_chunk(stored, entry.structure_bytes, arrays, header.bitwidth, "chunk")


def to_plain(header: AssetHeader, levels: list[Level]) -> list[PlainChunk | AssetError]:
    """Stored chunks to their plain contents, as the reader does (parsing included)."""
    return decode_coded_chunks([parse(header, level.entry, level.stored) for level in levels])


def rate(count: int, seconds: float) -> str:
    return f"{1e3 * seconds:8.2f} ms {count / seconds / 1e6:6.2f} M/s"


def decode_report(data: bytes, raw: bytes, repeats: int) -> None:
    """Everything but Blender: per level, the whole asset, a large stream, prefix reads."""
    header, levels = coded_levels(data)
    print("level  corners  index stream alone        level's streams           chunk to plain")
    for level in levels:
        count = level.entry.corners
        alone = best_seconds(partial(decode_streams, level.coded.streams[1:]), repeats)
        together = best_seconds(partial(decode_streams, level.coded.streams), repeats)
        plain = best_seconds(partial(to_plain, header, [level]), repeats)
        print(
            f"{level.entry.level:>5}  {count:>7}  {rate(count, alone)}  "
            f"{rate(count, together)}  {rate(count, plain)}"
        )
    indices = sum(level.entry.corners for level in levels)
    streams = [stream for level in levels for stream in level.coded.streams]
    symbols = sum(stream.count for stream in streams)
    batch = best_seconds(partial(decode_streams, streams), repeats)
    plain = best_seconds(partial(to_plain, header, levels), repeats)
    print(
        f"whole asset, {len(streams)} streams in one batch: {rate(indices, batch)} of indices "
        f"({indices} indices, {symbols} symbols with the masks: {symbols / batch / 1e6:.2f} M/s)"
    )
    print(f"whole asset, every chunk to plain contents: {rate(indices, plain)}")

    (finest_indices,) = decode_streams(levels[-1].coded.streams[1:])
    assert isinstance(finest_indices, np.ndarray)
    large = np.random.default_rng(0).choice(finest_indices, size=LARGE_STREAM)
    coded_large = encode_symbols(large, header.bitwidth)
    stream = parse_stream(ByteReader(coded_large, "large"), LARGE_STREAM, header.bitwidth)
    seconds = best_seconds(partial(decode_streams, [stream]), repeats)
    print(
        f"{LARGE_STREAM} indices drawn from the finest level: {rate(LARGE_STREAM, seconds)}, "
        f"{len(coded_large) * 8 / (LARGE_STREAM * header.bitwidth):.3f} of raw bits"
    )
    for name, asset in (("coded", data), ("raw", raw)):
        ends = [layout["cumulative_bytes"] for layout in asset_info(asset)["levels"]]
        times = [best_seconds(partial(read_asset, asset[:end]), repeats) for end in ends]
        print(
            f"read_asset of the prefix to each level, {name:>5} ({len(asset)} bytes): "
            + ", ".join(f"{1e3 * t:.1f}" for t in times)
            + " ms"
        )


def blender_report(assets: dict[str, bytes]) -> None:
    """File > Import of each asset in the real bpy, with an empty grid cache each time."""
    repo_dir = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo_dir / "addon"))
    import bpy
    from vbnf_blender import register

    register()
    importer: Any = bpy.ops.import_scene  # the add-on's operator, which the stubs do not know
    folder = Path(tempfile.mkdtemp(prefix="vbnf-codec-speed-"))
    try:
        bpy.ops.wm.save_as_mainfile(filepath=str(folder / "scene.blend"))  # cache beside it
        for name, data in assets.items():
            path = folder / f"{name}.vbnf"
            path.write_bytes(data)

            def read(data: bytes = data) -> None:
                asset_info(data, keep_intact=True)
                read_asset(data, keep_intact=True)

            def import_once(path: Path = path) -> None:
                shutil.rmtree(folder / "vbnf_cache", ignore_errors=True)
                for obj in list(bpy.data.objects):
                    bpy.data.objects.remove(obj)
                assert importer.vbnf(filepath=str(path)) == {"FINISHED"}

            imported = best_seconds(import_once, BLENDER_REPEATS, time.perf_counter)
            reading = best_seconds(read, 10)
            print(
                f"Blender import, {name:>5}: {imported:.3f} s (of which reading the asset "
                f"{1e3 * reading:.1f} ms)"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("assets", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--blender", action="store_true", help="also time the import in bpy")
    args = parser.parse_args()
    for path in args.assets:
        data = path.read_bytes()
        raw = raw_twin(data)
        print(f"\n== {path}: {len(data)} bytes, raw twin {len(raw)} bytes")
        decode_report(data, raw, args.repeats)
        if args.blender:
            blender_report({"coded": data, "raw": raw})


if __name__ == "__main__":
    main()
