"""``python -m core report DATA_DIR [DATA_DIR ...] -o REPORT_DIR``: the paper's comparison.

For each dataset: train the uncompressed grid, VQ-AD and the random-index baseline, derive
kmVQ and LRA from the uncompressed run, write every method as a ``.vbnf`` and score each from
its bytes at every level. Then write ``report.md`` (Tables 2 and 3, per scene and averaged, and
PSNR per level against bytes streamed), ``report.json``, ``rate_distortion.png`` and
``contact_sheet.png``. Runs live in ``REPORT_DIR/runs/<scene>/<method>`` and are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_bytes
from ..data.dataset import load_split, read_rgba_png
from ..errors import VbnfError
from ..limits import DEFAULT_INDEX_RATE, DEFAULT_MLP_BITS
from ..metrics import over_white, premultiply
from ..neural.evaluate import constant_colour_psnr
from ..report.plots import SheetBlock, contact_sheet, rate_distortion_plot
from ..report.runs import (
    UNCOMPRESSED,
    Method,
    RunSettings,
    log,
    parse_method,
    run_method,
    scored_test_views,
)
from ..report.tables import markdown_report, mean_rows, method_row

HELP = "train and score every method on datasets; write the paper's tables and RD plot"

# Table 2 (post-hoc LRA and kmVQ vs VQ-AD) and Table 3 (random indices with 16x and 64x the
# codebook of VQ-AD 4 bw). Add vqad2 or vqad1 for the low end of the rate-distortion curve.
DEFAULT_METHODS = "nglod,lra8,lra4,kmvq6,kmvq4,vqad6,vqad4,hash8,hash10"
QUICK_METHODS = "nglod,lra4,kmvq4,vqad4,hash8"
FULL = {"epochs": 3, "min_level": 3, "max_level": 6, "test_views": 0, "methods": DEFAULT_METHODS}
QUICK = {"epochs": 1, "min_level": 2, "max_level": 4, "test_views": 2, "methods": QUICK_METHODS}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("datasets", type=Path, nargs="+", help="dataset folders (one per scene)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="report folder")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke-test sizes: {QUICK} (flags override)"
    )
    parser.add_argument("--epochs", type=int, help=f"training epochs (default {FULL['epochs']})")
    parser.add_argument("--min-level", type=int, help=f"default {FULL['min_level']}")
    parser.add_argument("--max-level", type=int, help=f"default {FULL['max_level']}")
    parser.add_argument(
        "--methods",
        help=f"comma-separated (default {DEFAULT_METHODS}); nglod is added when kmvq/lra need it",
    )
    parser.add_argument(
        "--test-views", type=int, help="score only the first N test views (default: all)"
    )
    parser.add_argument("--batch-rays", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mlp-bits",
        type=int,
        default=DEFAULT_MLP_BITS,
        help="bits per MLP weight in the coded assets, trained for at the end (default "
        "%(default)s); the raw assets keep fp16",
    )
    parser.add_argument(
        "--index-rate",
        type=float,
        default=DEFAULT_INDEX_RATE,
        help="weight of the indices' expected bits in VQ-AD's loss (default %(default)s)",
    )


def resolve(args: argparse.Namespace) -> tuple[RunSettings, list[Method]]:
    """Flags, else the ``--quick`` or full defaults; the uncompressed run first when post-hoc
    methods are derived from it."""
    defaults = QUICK if args.quick else FULL

    def pick(name: str) -> Any:
        value = getattr(args, name)
        return defaults[name] if value is None else value

    try:
        methods = [parse_method(key) for key in pick("methods").split(",") if key.strip()]
    except ValueError as error:
        raise VbnfError(str(error)) from error
    if not methods:
        raise VbnfError("--methods names no method")
    if any(not method.trained for method in methods):
        methods = [Method(UNCOMPRESSED)] + [m for m in methods if m.family != UNCOMPRESSED]
    settings = RunSettings(
        min_level=pick("min_level"),
        max_level=pick("max_level"),
        epochs=pick("epochs"),
        batch_rays=args.batch_rays,
        seed=args.seed,
        test_views=pick("test_views"),
        mlp_bits=args.mlp_bits,
        index_rate=args.index_rate,
    )
    try:  # refuse bad numbers now, not after the first method has trained
        settings.train_options()
        for method in methods:
            if method.trained:
                settings.field_config(method)
    except ValueError as error:
        raise VbnfError(str(error)) from error
    return settings, list(dict.fromkeys(methods))


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    settings, methods = resolve(args)
    out: Path = args.out
    scenes = []
    names = _scene_names(args.datasets)
    for name, dataset_dir in zip(names, args.datasets, strict=True):
        log(f"scene {name} ({dataset_dir})")
        scenes.append(_run_scene(name, dataset_dir, out / "runs" / name, settings, methods))
    report = {
        "machine": describe_machine(),
        "settings": asdict(settings),
        "settings_line": _settings_line(settings, scenes),
        "methods": [method.key for method in methods],
        "scenes": scenes,
        "report_seconds": round(time.monotonic() - started, 1),
    }
    write_outputs(report, out)
    log(f"wrote {out / 'report.md'} in {report['report_seconds']:.0f} s")
    return 0


def _scene_names(datasets: list[Path]) -> list[str]:
    """Folder names, numbered where two datasets share one."""
    names = [Path(dataset).resolve().name for dataset in datasets]
    return [name if names.count(name) == 1 else f"{name}-{i}" for i, name in enumerate(names)]


def _run_scene(
    name: str, dataset_dir: Path, runs_dir: Path, settings: RunSettings, methods: list[Method]
) -> dict[str, Any]:
    test = scored_test_views(dataset_dir, settings.test_views)
    train = load_split(dataset_dir, "train")
    results = []
    uncompressed_asset = None
    for method in methods:
        result = run_method(
            method, dataset_dir, runs_dir / method.key, settings, train, test, uncompressed_asset
        )
        if method.family == UNCOMPRESSED:
            uncompressed_asset = Path(result["raw"]["asset"])
        results.append(result)
    return {
        "name": name,
        "dataset": str(dataset_dir),
        "train_views": len(train),
        "resolution_px": [test.intrinsics.width, test.intrinsics.height],
        "test_views": test.names,
        "constant_colour_psnr": constant_colour_psnr(train, test),
        "methods": results,
    }


def describe_machine() -> str:
    """CPU model, cores and GPU, so numbers are read against the machine that produced them."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{model}, {os.cpu_count()} cores, {gpu}; {platform.system()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _settings_line(settings: RunSettings, scenes: list[dict[str, Any]]) -> str:
    views = sorted(
        {
            f"{scene['train_views']} training views at {scene['resolution_px'][0]}x"
            f"{scene['resolution_px'][1]} px, {len(scene['test_views'])} test views scored"
            for scene in scenes
        }
    )
    return (
        f"{settings.epochs} epochs, levels {settings.min_level}..{settings.max_level}, "
        f"batches of {settings.batch_rays} rays, seed {settings.seed}, MLP {settings.mlp_bits} "
        f"bits, index rate {settings.index_rate:g}; " + "; ".join(views)
    )


def write_outputs(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=2).encode())
    atomic_write_bytes(out / "report.md", markdown_report(report).encode())
    rows = [[method_row(result) for result in scene["methods"]] for scene in report["scenes"]]
    panels = [
        (scene["name"], scene_rows)
        for scene, scene_rows in zip(report["scenes"], rows, strict=True)
    ]
    if len(rows) > 1:
        panels.append((f"mean of {len(rows)} scenes", mean_rows(rows)))
    rate_distortion_plot(panels, out / "rate_distortion.png")
    contact_sheet([_sheet_block(scene) for scene in report["scenes"]], out / "contact_sheet.png")


def _sheet_block(scene: dict[str, Any]) -> SheetBlock:
    """The first scored test view: its ground truth and every method's render per level."""
    test = scored_test_views(Path(scene["dataset"]), 1)
    view = test.names[0]
    levels = [level["level"] for level in scene["methods"][0]["levels"]]
    rows = [
        (
            result["label"],
            [
                _over_white(
                    read_rgba_png(Path(result["render_dir"]) / f"level_{level}" / f"{view}.png")
                )
                for level in levels
            ],
        )
        for result in scene["methods"]
    ]
    return SheetBlock(scene["name"], _over_white(test.rgba[0]), levels, rows)


def _over_white(straight_rgba: np.ndarray) -> np.ndarray:
    return over_white(premultiply(straight_rgba))
