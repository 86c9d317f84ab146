"""``python -m core export RUN_DIR -o ASSET``: write a ``.vbnf`` from a training checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..asset.vbnf import write_asset
from ..neural.checkpoint import load_checkpoint

HELP = "write a .vbnf asset from a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="training output folder (or checkpoint.pt)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="asset path (.vbnf)")
    parser.add_argument("--compression", choices=("none", "zlib", "zstd", "rans"), default="none")


def run(args: argparse.Namespace) -> int:
    field = load_checkpoint(args.run_dir).field
    write_asset(field.to_field_data(), args.out, compression=args.compression)
    print(args.out)
    return 0
