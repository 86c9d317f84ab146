"""``python -m core synth OUT_DIR``: write the built-in synthetic RGB-D dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.synthetic import write_synthetic_dataset
from ..errors import VbnfError

HELP = "write the built-in synthetic scene as a dataset (no Blender needed)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--views", type=int, default=40, help="training views")
    parser.add_argument("--test-views", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64, help="image width and height (px)")


def run(args: argparse.Namespace) -> int:
    try:
        write_synthetic_dataset(args.out_dir, args.views, args.test_views, args.resolution)
    except ValueError as error:
        raise VbnfError(str(error)) from error
    print(args.out_dir)
    return 0
