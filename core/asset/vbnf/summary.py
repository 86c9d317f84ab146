"""``asset_info``: what an asset holds and what each level costs to stream, from its header.

Nothing is decoded: the chunk table gives every size, and the chunks present are CRC-checked,
so ``info`` doubles as a quick integrity check of a download.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from .coded_chunk import coded_split
from .header import AssetHeader
from .reader import Source, named_errors, scan_asset
from .spec import role_bytes


def asset_info(source: Source, keep_intact: bool = False) -> dict[str, Any]:
    """Sizes, per-level byte split and compression ratios of ``source`` (JSON-ready).

    Each level's ``bytes`` is what the file stores (after its codec); ``structure_bytes``,
    ``index_bytes``, ``codebook_bytes`` and ``feature_bytes`` split its decompressed
    ``raw_bytes``; ``stored_structure_bytes`` and ``stored_index_bytes`` say what the first two
    take in the file (they differ for the ``rans`` codec). ``cumulative_bytes`` counts the
    header and every chunk up to that level: the bytes to stream before that level can be drawn.
    ``keep_intact``: a corrupted chunk is reported in ``warnings`` (its level and the finer ones
    not ``present``) instead of raising.
    """
    scan = scan_asset(source, keep_intact=keep_intact)
    header = scan.header
    layouts = header.layouts()
    with named_errors(scan.name):
        levels = [
            asdict(layout)
            | {"present": index < len(scan.chunks)}
            | _stored_split(header, index, scan.chunks)
            for index, layout in enumerate(layouts)
        ]
    corners = sum(layout.corners for layout in layouts)
    fp16_feature_bytes = 2 * corners * header.feature_dim
    chunk_bytes = sum(layout.bytes for layout in layouts)
    return {
        "total_bytes": header.total_bytes,
        "available_bytes": scan.available_bytes,
        "bitwidth": header.bitwidth,
        "feature_dim": header.feature_dim,
        "store": header.store,
        "rank": header.rank,
        "hidden_dim": header.hidden_dim,
        "min_level": header.min_level,
        "max_level": header.max_level,
        "header_bytes": header.header_bytes,
        "mlp_bytes": header.mlp_bytes,
        "mlp_bits": header.mlp_bits,
        "levels": levels,
        "missing_levels": scan.missing_levels,
        "warnings": scan.notes(),
        "fp16_feature_bytes": fp16_feature_bytes,
        "paper_ratio": _paper_ratio(header),
        "real_ratio": fp16_feature_bytes / chunk_bytes,
        "file_ratio": fp16_feature_bytes / header.total_bytes,
    }


def _stored_split(
    header: AssetHeader, index: int, chunks: list[bytes | bytearray]
) -> dict[str, int | None]:
    """What a level's octree structure and indices occupy in the file: their plain sizes for
    codec ``none``, the sizes of their streams for ``rans`` (read from the streams' headers);
    unknown (None) inside a zlib or zstd chunk or when the chunk is missing."""
    entry = header.chunks[index]
    arrays = header.store_arrays(entry)
    if entry.codec == "none":
        return {
            "stored_structure_bytes": entry.structure_bytes,
            "stored_index_bytes": role_bytes(arrays, "index"),
        }
    if entry.codec != "rans" or index >= len(chunks):
        return {"stored_structure_bytes": None, "stored_index_bytes": None}
    split = coded_split(
        chunks[index], entry.structure_bytes, arrays, header.bitwidth, f"level {entry.level} chunk"
    )
    return {"stored_structure_bytes": split["structure"], "stored_index_bytes": split["index"]}


def _paper_ratio(header: AssetHeader) -> float | None:
    """The paper's 16mk / (mb + k 2^b) (section 3), with m summed over levels and one codebook
    per level; it ignores the octree and counts codebook entries as the paper writes them.
    Defined for learned indices (the ``codebook`` store) only."""
    if header.store != "codebook":
        return None
    k, b = header.feature_dim, header.bitwidth
    numerator = sum(16 * entry.corners * k for entry in header.chunks)
    return numerator / sum(entry.corners * b + k * (1 << b) for entry in header.chunks)
