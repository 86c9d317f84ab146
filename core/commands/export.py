"""``python -m core export RUN_DIR -o ASSET``: write a ``.vbnf`` from a training checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..asset.vbnf import write_asset
from ..asset.vbnf.spec import MLP_FP16_BITS
from ..errors import VbnfError
from ..neural.checkpoint import load_checkpoint

HELP = "write a .vbnf asset from a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="training output folder (or checkpoint.pt)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="asset path (.vbnf)")
    parser.add_argument("--compression", choices=("none", "zlib", "zstd", "rans"), default="rans")
    parser.add_argument(
        "--mlp-bits",
        type=int,
        default=None,
        help="bits per MLP weight: 16 (fp16) or 2..8; default: what the run trained for",
    )


def run(args: argparse.Namespace) -> int:
    loaded = load_checkpoint(args.run_dir)
    mlp_bits = args.mlp_bits or loaded.train_options.get("mlp_bits", MLP_FP16_BITS)
    try:
        write_asset(
            loaded.field.to_field_data(), args.out, args.compression, mlp_bits=int(mlp_bits)
        )
    except ValueError as error:
        raise VbnfError(str(error)) from error
    print(args.out)
    return 0
