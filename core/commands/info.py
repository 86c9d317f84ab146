"""``python -m core info ASSET [--json]``: what a ``.vbnf`` holds and what each level costs.

Per level: stored bytes, the bytes to stream before it can be drawn (header included), how its
contents split into octree structure, indices, codebook and per-corner features, and the
compression ratios. A truncated file is reported with a warning naming the missing levels.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..asset.vbnf import asset_info

HELP = "show an asset's levels, byte sizes and compression ratios"

_COLUMNS = (
    ("level", "level"),
    ("corners", "corners"),
    ("bytes", "bytes"),
    ("cumulative", "cumulative_bytes"),
    ("structure", "structure_bytes"),
    ("indices", "index_bytes"),
    ("coded str", "stored_structure_bytes"),
    ("coded idx", "stored_index_bytes"),
    ("codebook", "codebook_bytes"),
    ("features", "feature_bytes"),
    ("codec", "codec"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("asset", type=Path, help=".vbnf file")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    info = asset_info(args.asset)
    print(json.dumps(info, indent=2) if args.json else format_info(info, str(args.asset)))
    for warning in info["warnings"]:
        print(f"warning: {args.asset}: {warning}", file=sys.stderr)
    return 0


def format_info(info: dict[str, Any], name: str) -> str:
    """The human-readable table of ``info`` (the dict of ``asset_info``)."""
    store = info["store"]
    parameters = {"codebook": f", b={info['bitwidth']} bits", "hashed": f", b={info['bitwidth']}"}
    parameters["lowrank"] = f", rank {info['rank']}"
    weights = "fp16" if info["mlp_bits"] == 16 else f"{info['mlp_bits']}-bit weights"
    lines = [
        f"{name}: {store} store, k={info['feature_dim']} features"
        f"{parameters.get(store, '')}, levels {info['min_level']}..{info['max_level']}, "
        f"MLP hidden width {info['hidden_dim']}",
        f"{info['total_bytes']} bytes: header {info['header_bytes']} "
        f"(MLP {info['mlp_bytes']}, {weights}), "
        f"chunks {info['total_bytes'] - info['header_bytes']}",
        "  ".join(f"{title:>10}" for title, _ in _COLUMNS),
    ]
    for level in info["levels"]:
        row = "  ".join(f"{level[key]!s:>10}" for _, key in _COLUMNS)
        lines.append(row + ("" if level["present"] else "  (missing)"))
    paper = info["paper_ratio"]
    lines.append(
        f"compression vs fp16 features ({info['fp16_feature_bytes']} bytes): "
        + (f"paper 16mk/(mb+k*2^b) {paper:.1f}x, " if paper is not None else "")
        + f"chunks incl. octree {info['real_ratio']:.1f}x, whole file {info['file_ratio']:.1f}x"
    )
    return "\n".join(lines)
