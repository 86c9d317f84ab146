"""Peak memory of reading the worst-case ``.vbnf`` inputs: a small zstd file declaring a huge
chunk (a decompression bomb) and a tiny valid asset that decodes to a full level-7 octree with
k = 256 features. Each case is read in a fresh subprocess (``read_asset`` then ``NumpyField``,
what ``core eval`` and the add-on's import do) and its peak RSS is printed; nothing is asserted.

    .venv/bin/python bench/hostile_memory.py --out /tmp/hostile [--bomb-gib 4] [--root OTHER]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.asset.field_data import MLPWeights
from core.asset.vbnf.header import AssetHeader, ChunkEntry, pack_header
from core.asset.vbnf.spec import VIEW_ENCODING_DIM, Codec, max_structure_bytes

PIECE_BYTES = 1 << 24

MEASURE = """
import json, resource, sys
sys.path.insert(0, sys.argv[2])
from core.asset.vbnf import read_asset
from core.asset.numpy_field import NumpyField
try:
    field = read_asset(sys.argv[1]).field
    if sys.argv[3] == "torch":  # what core eval does with an asset
        from core.neural.field import RadianceField
        RadianceField.from_field_data(field)
    else:  # what the add-on's import does
        NumpyField(field)
    outcome = "decoded"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"outcome": outcome[:300], "peak_rss_mib": round(peak_mib)}))
"""


def dense_asset(
    path: Path, level: int, feature_dim: int, corners: int, structure: bytes, codec: Codec = "zstd"
) -> int:
    """Write a one-level dense asset whose chunk is ``structure`` then zero features for
    ``corners`` corners, zstd-compressed (or stored) as a stream, never held whole here;
    returns its size."""
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    encode = compressor.compress if codec == "zstd" else bytes
    feature_bytes = 2 * corners * feature_dim
    zeros = bytes(PIECE_BYTES)
    chunk_path = path.with_suffix(".chunk")
    crc, stored_bytes = 0, 0
    with open(chunk_path, "wb") as chunk:
        pieces = [structure] + [
            zeros[: min(PIECE_BYTES, feature_bytes - start)]
            for start in range(0, feature_bytes, PIECE_BYTES)
        ]
        for piece in pieces:
            stored = encode(piece)
            chunk.write(stored)
            crc, stored_bytes = zlib.crc32(stored, crc), stored_bytes + len(stored)
        if codec == "zstd":
            tail = compressor.flush()
            chunk.write(tail)
            crc, stored_bytes = zlib.crc32(tail, crc), stored_bytes + len(tail)
    hidden_dim = 1
    mlp = MLPWeights(
        np.zeros((hidden_dim, feature_dim + VIEW_ENCODING_DIM), np.float32),
        np.zeros(hidden_dim, np.float32),
        np.zeros((4, hidden_dim), np.float32),
        np.zeros(4, np.float32),
    )
    entry = ChunkEntry(level, stored_bytes, len(structure), corners, crc, codec)
    header = AssetHeader("dense", level, 0, feature_dim, 0, 1.0, np.zeros(3), mlp, (entry,))
    with open(path, "wb") as asset, open(chunk_path, "rb") as chunk:
        asset.write(pack_header(header))
        while piece := chunk.read(PIECE_BYTES):
            asset.write(piece)
    chunk_path.unlink()
    return path.stat().st_size


def full_octree_asset(path: Path, level: int, feature_dim: int, codec: Codec = "zstd") -> int:
    """Every cell of every level occupied: a valid asset with the most corners ``level`` has."""
    structure = b"\xff" * max_structure_bytes(level, level)
    return dense_asset(path, level, feature_dim, ((1 << level) + 1) ** 3, structure, codec)


def bomb_asset(path: Path, declared_bytes: int) -> int:
    """A level-11 dense (k = 1) chunk declaring ``declared_bytes`` of contents, all zeros."""
    level = 11
    structure_bytes = level  # a single chain of cells: the fewest masks the level can have
    corners = (declared_bytes - structure_bytes) // 2
    return dense_asset(path, level, 1, corners, bytes(structure_bytes))


def measure(path: Path, limit_bytes: int | None, root: Path, decoder: str) -> dict:
    command = [sys.executable, "-c", MEASURE, str(path), str(root), decoder]
    if limit_bytes is not None:
        command = ["prlimit", f"--as={limit_bytes}", *command]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        return {"outcome": f"rc {result.returncode}: {result.stderr.strip()[-300:]}"}
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--bomb-gib", type=float, default=4.0)
    parser.add_argument("--limit-gib", type=float, help="address-space limit of the readers")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="checkout whose reader is measured (default: this one), e.g. an older one",
    )
    parser.add_argument(
        "--decoder",
        choices=("numpy", "torch"),
        default="numpy",
        help="after reading: NumpyField (the add-on) or RadianceField (core eval)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    limit = None if args.limit_gib is None else int(args.limit_gib * (1 << 30))
    bomb_bytes = min(int(args.bomb_gib * (1 << 30)), (1 << 32) - 64)
    cases = {
        "bomb": (args.out / "bomb.vbnf", lambda path: bomb_asset(path, bomb_bytes)),
        "full_level7_k256": (args.out / "full7.vbnf", lambda path: full_octree_asset(path, 7, 256)),
        "full_level7_k256_uncompressed": (
            args.out / "full7_none.vbnf",
            lambda path: full_octree_asset(path, 7, 256, "none"),
        ),
    }
    for name, (path, build) in cases.items():
        size = build(path)
        result = measure(path, limit, args.root, args.decoder)
        print(json.dumps({"case": name, "file_bytes": size, **result}), flush=True)


if __name__ == "__main__":
    main()
