"""``python -m core cut ASSET [--level L] [--max-bytes N] -o OUT``: a smaller, complete asset.

Keeps the coarsest levels: up to ``--level`` and as many as fit in ``--max-bytes`` with the
rewritten header (both may be given). With neither it keeps every complete level, which turns a
truncated download into a valid asset. Chunks are copied byte for byte.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..asset.vbnf import asset_info, cut_asset
from ..atomic import atomic_write_bytes

HELP = "write a lower level of detail of an asset (or a truncated one's complete levels)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("asset", type=Path, help=".vbnf file")
    parser.add_argument("--level", type=int, help="finest level to keep")
    parser.add_argument("--max-bytes", type=int, help="keep the most levels that fit in N bytes")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output .vbnf path")


def run(args: argparse.Namespace) -> int:
    data = cut_asset(args.asset, level=args.level, max_bytes=args.max_bytes)
    atomic_write_bytes(args.out, data)
    info = asset_info(data)
    print(f"{args.out}: levels {info['min_level']}..{info['max_level']}, {len(data)} bytes")
    return 0
