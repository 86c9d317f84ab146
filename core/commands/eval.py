"""``python -m core eval SOURCE DATA_DIR``: PSNR and SSIM per level of detail.

SOURCE is a training folder (its checkpoint is rendered) or a ``.vbnf`` asset, in which case
the score is that of the shipped bytes, at every level the file holds (a cut or truncated file
scores the levels it has).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..asset.vbnf import read_asset
from ..data.dataset import load_split
from ..neural.checkpoint import load_checkpoint
from ..neural.evaluate import check_scorable, evaluate_levels
from ..neural.field import RadianceField
from ..neural.render.backend import BACKEND_CHOICES, require_device, select_backend

HELP = "render a split at every level and report PSNR and SSIM"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="training output folder or .vbnf asset")
    parser.add_argument("data_dir", type=Path, help="dataset folder")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--renders", type=Path, help="write the renders as PNGs here")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default="auto", help="who renders (default auto)"
    )


def load_field(source: Path, device: str) -> RadianceField:
    if source.is_file():
        return RadianceField.from_field_data(read_asset(source).field).to(device)
    return load_checkpoint(source, device).field


def run(args: argparse.Namespace) -> int:
    require_device(args.device)
    split = load_split(args.data_dir, args.split)
    check_scorable(split, args.data_dir)
    backend = select_backend(args.backend, args.device)
    field = load_field(args.source, args.device).eval()
    scores = evaluate_levels(field, split, args.renders, backend)
    if args.json:
        print(json.dumps({"levels": [score.to_dict() for score in scores]}, indent=2))
    else:
        print(f"{'level':>5} {'PSNR':>8} {'SSIM':>7}")
        for score in scores:
            print(f"{score.level:>5} {score.psnr:8.2f} {score.ssim:7.4f}")
    return 0
