"""``python -m core train DATA_DIR -o OUT_DIR``: train a field, write checkpoint, asset, metrics."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from .. import locks
from ..asset.vbnf import asset_info, read_asset, write_asset
from ..atomic import atomic_write_bytes
from ..data.dataset import Split, load_split
from ..errors import TrainingCancelled, VbnfError
from ..limits import DEFAULT_INDEX_RATE, DEFAULT_MLP_BITS
from ..neural.evaluate import check_scorable, constant_colour_psnr, evaluate_levels
from ..neural.field import FieldConfig, RadianceField, TrainableStore
from ..neural.render.backend import BACKEND_CHOICES, Backend, require_device
from ..neural.trainer import TrainOptions, prepare_run
from ..progress import ProgressReporter
from ..run_layout import ASSET_NAME, METRICS_NAME, TRAIN_LOCK_NAME

HELP = "train a VQ-AD (or uncompressed) radiance field from an RGB-D dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults, field_defaults = TrainOptions(), FieldConfig()
    parser.add_argument("data_dir", type=Path, help="dataset folder (transforms_*.json)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    store = parser.add_mutually_exclusive_group()
    store.add_argument(
        "--bitwidth",
        type=int,
        default=field_defaults.bitwidth,
        help="bits per codebook index: 1..8, or 1..16 with --hashed (default %(default)s)",
    )
    store.add_argument(
        "--uncompressed",
        action="store_true",
        help="train the uncompressed grid (NGLOD-NeRF baseline)",
    )
    parser.add_argument(
        "--hashed",
        action="store_true",
        help="random fixed indices instead of learned ones (hash baseline)",
    )
    parser.add_argument("--feature-dim", type=int, default=field_defaults.feature_dim)
    parser.add_argument("--min-level", type=int, default=field_defaults.min_level)
    parser.add_argument("--max-level", type=int, default=field_defaults.max_level)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-rays", type=int, default=defaults.batch_rays)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument(
        "--dilation",
        type=int,
        default=defaults.dilation,
        help="grow the finest octree level by this many cells",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device)
    parser.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default=defaults.backend,
        help="ray traversal, sampling and compositing: CUDA kernels via CuPy (cupy), the torch "
        "reference (torch), or cupy where it can run (auto, the default)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--checkpoint-interval",
        type=float,
        default=defaults.checkpoint_interval_s,
        help="seconds between checkpoints",
    )
    parser.add_argument(
        "--mlp-bits",
        type=int,
        default=DEFAULT_MLP_BITS,
        help="bits per decoder MLP weight in the asset: 16 (fp16) or 2..8 (integers with a "
        "scale per row, trained for in the last 10%% of the steps; default %(default)s)",
    )
    parser.add_argument(
        "--index-rate",
        type=float,
        default=DEFAULT_INDEX_RATE,
        help="weight of the indices' expected bits in the loss: cheaper-to-code indices, "
        "0 to turn it off (default %(default)s)",
    )
    parser.add_argument(
        "--compression",
        choices=("none", "zlib", "zstd", "rans"),
        default="rans",
        help="lossless compression of each level chunk in the asset (rans: entropy-coded "
        "octree masks and codebook indices)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in OUT with its own settings (only --epochs, --device and "
        "--backend may change)",
    )
    parser.add_argument(
        "--events",
        action="store_true",
        help="print one JSON object per line on stdout (for the Blender add-on)",
    )


def field_config(args: argparse.Namespace) -> FieldConfig:
    if args.hashed and args.uncompressed:
        raise VbnfError("--hashed and --uncompressed exclude each other")
    store: TrainableStore = (
        "dense" if args.uncompressed else "hashed" if args.hashed else "codebook"
    )
    try:
        return FieldConfig(args.min_level, args.max_level, args.feature_dim, store, args.bitwidth)
    except ValueError as error:
        raise VbnfError(str(error)) from error


def train_options(args: argparse.Namespace) -> TrainOptions:
    try:
        return TrainOptions(
            epochs=args.epochs,
            batch_rays=args.batch_rays,
            lr=args.lr,
            seed=args.seed,
            dilation=args.dilation,
            device=args.device,
            checkpoint_interval_s=args.checkpoint_interval,
            backend=args.backend,
            mlp_bits=args.mlp_bits,
            index_rate_weight=args.index_rate,
        )
    except ValueError as error:
        raise VbnfError(str(error)) from error


def run(args: argparse.Namespace) -> int:
    reporter = ProgressReporter(1, events=args.events)
    try:
        require_device(args.device)
        options, config = train_options(args), field_config(args)
        test = load_split(args.data_dir, "test")
        check_scorable(test, args.data_dir)  # before training, not after it
        reporter.stage("load", f"loading dataset {args.data_dir}")
        train = load_split(args.data_dir, "train")
        with locks.held(args.out / TRAIN_LOCK_NAME, "another training run into this folder"):
            metrics = train_and_score(args, options, config, train, test, reporter)
    except TrainingCancelled:  # its event comes from the command line, wherever it is raised
        raise
    except VbnfError as error:
        reporter.emit("error", message=str(error))
        raise
    reporter.emit(
        "done", out_dir=str(args.out), asset=str(args.out / ASSET_NAME), metrics=metrics["levels"]
    )
    return 0


def train_and_score(
    args: argparse.Namespace,
    options: TrainOptions,
    config: FieldConfig,
    train: Split,
    test: Split,
    reporter: ProgressReporter,
) -> dict:
    """Everything that writes into the output folder, done while holding its lock."""
    trainer = prepare_run(args.data_dir, args.out, config, options, args.resume, reporter, train)
    reporter.stage(
        "train", f"training {trainer.total_steps} steps ({trainer.backend.name} backend)"
    )
    state = trainer.run()
    metrics = finish(
        trainer.field, trainer.backend, train, test, args, reporter, trainer.options.mlp_bits
    )
    metrics["train_seconds"] = round(state.elapsed_s, 2)
    metrics["steps"] = state.step
    metrics["options"] = asdict(trainer.options)
    atomic_write_bytes(args.out / METRICS_NAME, json.dumps(metrics, indent=2).encode())
    return metrics


def finish(
    field: RadianceField,
    backend: Backend,
    train: Split,
    test: Split,
    args: argparse.Namespace,
    reporter: ProgressReporter,
    mlp_bits: int,
) -> dict:
    """Write the asset, then score *its bytes* (not the float model) on the test split, on the
    training device and backend."""
    reporter.stage("export", "writing the .vbnf asset")
    asset_path = args.out / ASSET_NAME
    write_asset(field.to_field_data(), asset_path, compression=args.compression, mlp_bits=mlp_bits)
    reporter.stage("eval", "scoring the asset on the test views")
    started = time.monotonic()
    shipped = RadianceField.from_field_data(read_asset(asset_path).field).to(args.device)
    scores = evaluate_levels(shipped, test, backend=backend)
    for score in scores:
        reporter.emit("level", **score.to_dict())
    return {
        "config": field.config.to_dict(),
        "levels": [score.to_dict() for score in scores],
        "constant_colour_psnr": constant_colour_psnr(train, test),
        "eval_seconds": round(time.monotonic() - started, 2),
        "asset": asset_info(asset_path),
    }
