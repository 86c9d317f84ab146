"""``make demo``: bake the built-in demo scene end to end and show what every level costs and gives.

Run ``python -m bench.demo --out out/demo`` (small settings, a few minutes), or with
``--panel-defaults`` for the bake a new user gets from the Bake button. Steps, each timed:

1. build the demo scene in code (``vbnf_blender.scenes.build_demo_scene``) and save it as
   ``OUT/demo.blend``;
2. bake it with the add-on's pipeline (``BakeJob``, what the Bake button runs): Cycles capture,
   training in a ``python -m core train`` subprocess, ``OUT/demo.vbnf``, import as a Volume;
3. for every level, move the LOD slider (decoding that level into OpenVDB grids) and render the
   volume with Cycles from each held-out test camera;
4. print the per-level table and write ``OUT/contact_sheet.png`` (ground truth, then each level)
   and ``OUT/demo.json``.

PSNR compares the Cycles render of the imported volume against the Cycles render of the real
scene from the same test camera (RGB over white, as ``core.metrics``): the whole chain, voxel
grids included. The engine's own PSNR (its torch renderer on the same views) is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
for _path in (REPO_DIR, REPO_DIR / "addon"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bpy  # noqa: E402
from mathutils import Matrix  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from vbnf_blender import register, scenes  # noqa: E402
from vbnf_blender.bake_job import BakeJob, BakeProgress, BakeSettings  # noqa: E402
from vbnf_blender.capture import CaptureSettings  # noqa: E402

from core.atomic import atomic_write_bytes  # noqa: E402
from core.data.dataset import Split, load_split, read_rgba_png  # noqa: E402
from core.metrics import over_white, premultiply, psnr  # noqa: E402

RENDER_SAMPLES = 16
SHEET_TILE_PX = 128
SHEET_VIEWS = 2  # rows of the contact sheet


@dataclass(frozen=True)
class LevelResult:
    level: int
    bytes: int
    cumulative_bytes: int
    voxels: int
    psnr_cycles: float  # Cycles volume render vs Cycles ground truth
    psnr_engine: float | None  # the engine's torch renderer vs the same views


class Timings:
    """Wall-clock seconds per named stage, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - started


def add_small_bake_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags :func:`small_bake_settings` reads, with their defaults."""
    parser.add_argument("--views", type=int, default=32, help="training views")
    parser.add_argument("--test-views", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--samples", type=int, default=16, help="Cycles samples of the capture")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bitwidth", type=int, default=4)
    parser.add_argument("--min-level", type=int, default=3)
    parser.add_argument("--max-level", type=int, default=6)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the trainer: 1 keeps a shared 2-core machine from thrashing",
    )


def small_bake_settings(args: argparse.Namespace) -> BakeSettings:
    """Small enough for a 2-core CPU in a few minutes, large enough to show the levels apart
    (the demo's and ``bench/preview.py``'s bakes)."""
    return BakeSettings(
        capture=CaptureSettings(
            train_views=args.views,
            test_views=args.test_views,
            resolution_px=args.resolution,
            samples=args.samples,
        ),
        bitwidth=args.bitwidth,
        min_level=args.min_level,
        max_level=args.max_level,
        epochs=args.epochs,
        batch_rays=1024,
        cpu_threads=args.threads,
    )


def bake(
    scene: bpy.types.Scene, settings: BakeSettings, out_dir: Path, timings: Timings
) -> BakeJob:
    """The Bake button's pipeline, with the time of each of its stages."""
    job = BakeJob(
        scene,
        settings,
        out_dir / "demo.vbnf",
        work_dir=out_dir / "work",
        import_into=scene.collection,
    )
    stage_started = {"capture": time.monotonic()}
    last_line = ""

    def report(progress: BakeProgress) -> None:
        """One line per stage and per training epoch: Blender's own render log lines go to the
        same terminal, so a rewritten progress line would be torn apart."""
        nonlocal last_line
        if progress.stage not in stage_started:
            stage_started[progress.stage] = time.monotonic()
        line = f"  {progress.stage}"
        if progress.stage == "train":
            line += (
                f": {progress.message}" if progress.epoch is None else f" epoch {progress.epoch}"
            )
        if line != last_line:
            elapsed = time.monotonic() - stage_started["capture"]
            scores = f", {progress.psnr:.1f} dB" if progress.psnr is not None else ""
            print(f"{line} (at {elapsed:.0f} s{scores})", flush=True)
            last_line = line

    job.run(on_progress=report)
    ends = [*list(stage_started.values())[1:], time.monotonic()]
    for (stage, started), ended in zip(stage_started.items(), ends, strict=True):
        if stage != "done":
            timings.seconds[f"bake: {stage}"] = ended - started
    metrics = json.loads((job.run_dir / "metrics.json").read_text())
    timings.seconds["  of which training steps"] = metrics["train_seconds"]
    timings.seconds["  of which engine scoring"] = metrics["eval_seconds"]
    return job


def configure_render(scene: bpy.types.Scene, split: Split, out_path: Path) -> Any:
    """Cycles settings matching the capture's (Standard view transform, transparent film),
    and a camera with the dataset's intrinsics (the capture's cameras are centred)."""
    intrinsics = split.intrinsics
    if (
        abs(intrinsics.cx - intrinsics.width / 2) > 0.5
        or abs(intrinsics.cy - intrinsics.height / 2) > 0.5
    ):
        raise SystemExit("the demo expects centred test cameras")
    render: Any = scene.render
    render.engine = "CYCLES"
    render.resolution_x, render.resolution_y = intrinsics.width, intrinsics.height
    render.resolution_percentage = 100
    render.film_transparent = True
    render.use_compositing = False
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.filepath = str(out_path)
    cycles: Any = scene.cycles  # type: ignore[attr-defined]
    cycles.device, cycles.samples, cycles.use_denoising = "CPU", RENDER_SAMPLES, False
    cycles.volume_biased = True  # ray-marched volumes: an order of magnitude faster here
    view: Any = scene.view_settings
    view.view_transform, view.look = "Standard", "None"
    data = bpy.data.cameras.new("VBNF demo camera")
    data.sensor_fit = "HORIZONTAL"
    data.lens = intrinsics.fx * data.sensor_width / intrinsics.width
    data.clip_start, data.clip_end = 0.01, 1000.0
    camera = bpy.data.objects.new(data.name, data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return camera


def render_views(scene: bpy.types.Scene, camera: Any, split: Split, folder: Path) -> list[Path]:
    paths = []
    for name, pose in zip(split.names, split.camera_to_world, strict=True):
        camera.matrix_world = Matrix(pose.tolist())
        scene.render.filepath = str(folder / f"{name}.png")
        bpy.ops.render.render(scene=scene.name, write_still=True)
        paths.append(folder / f"{name}.png")
    return paths


def mean_psnr(renders: list[Path], split: Split) -> float:
    scores = [
        psnr(over_white(premultiply(read_rgba_png(path))), over_white(premultiply(reference)))
        for path, reference in zip(renders, split.rgba, strict=True)
    ]
    return float(np.mean(scores))


def evaluate_levels(
    volume_object: Any, split: Split, engine_psnr: dict[int, float], out_dir: Path, timings: Timings
) -> tuple[list[LevelResult], dict[int, list[Path]]]:
    scene = volume_object.users_scene[0]
    camera = configure_render(scene, split, out_dir / "render.png")
    settings = volume_object.vbnf
    results, renders = [], {}
    for item in settings.levels:
        with timings("levels: decode to VDB"):
            settings.lod = item.level
        if settings.lod_error:
            raise SystemExit(f"level {item.level}: {settings.lod_error}")
        with timings("levels: Cycles renders"):
            renders[item.level] = render_views(
                scene, camera, split, out_dir / "renders" / f"level_{item.level}"
            )
        results.append(
            LevelResult(
                level=item.level,
                bytes=item.bytes,
                cumulative_bytes=item.cumulative_bytes,
                voxels=settings.voxel_count,
                psnr_cycles=mean_psnr(renders[item.level], split),
                psnr_engine=engine_psnr.get(item.level),
            )
        )
    return results, renders


def contact_sheet(split: Split, renders: dict[int, list[Path]], path: Path) -> None:
    """Ground truth, then each level, left to right; one row per test view; over white."""
    columns = [("ground truth", [_over_white_image(rgba) for rgba in split.rgba])]
    columns += [
        (f"level {level}", [_over_white_image(read_rgba_png(p)) for p in paths])
        for level, paths in sorted(renders.items())
    ]
    rows = min(SHEET_VIEWS, len(split.rgba))
    label_px = 16
    sheet = Image.new(
        "RGB", (SHEET_TILE_PX * len(columns), label_px + SHEET_TILE_PX * rows), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for column, (title, images) in enumerate(columns):
        draw.text((column * SHEET_TILE_PX + 4, 2), title, fill="black")
        for row in range(rows):
            tile = images[row].resize((SHEET_TILE_PX, SHEET_TILE_PX), Image.Resampling.NEAREST)
            sheet.paste(tile, (column * SHEET_TILE_PX, label_px + row * SHEET_TILE_PX))
    sheet.save(path)


def _over_white_image(rgba: np.ndarray) -> Image.Image:
    rgb = np.clip(over_white(premultiply(rgba)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(rgb, mode="RGB")


def print_table(results: list[LevelResult], total_bytes: int) -> None:
    print(
        f"{'level':>5} {'bytes':>9} {'cumulative':>10} {'voxels':>8} "
        f"{'PSNR Cycles':>11} {'PSNR engine':>11}"
    )
    for r in results:
        engine = f"{r.psnr_engine:11.2f}" if r.psnr_engine is not None else f"{'-':>11}"
        print(
            f"{r.level:>5} {r.bytes:>9} {r.cumulative_bytes:>10} {r.voxels:>8} "
            f"{r.psnr_cycles:11.2f} {engine}"
        )
    print(f"total {total_bytes} bytes (header included)")
    print(
        "PSNR Cycles: Cycles render of the imported volume vs Cycles render of the scene, "
        "held-out views, RGB over white; PSNR engine: the engine's renderer, same views."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    add_small_bake_arguments(parser)
    parser.add_argument(
        "--panel-defaults",
        action="store_true",
        help="bake at the Bake button's defaults (the panel's fields untouched, all CPU cores) "
        "instead of the small settings above: the bake a new user gets",
    )
    args = parser.parse_args(argv)
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out_dir / "vbnf_cache", ignore_errors=True)  # grids of an earlier run
    timings = Timings()
    started = time.monotonic()

    with timings("scene: build and save"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        register()
        built = scenes.build_demo_scene()
        bpy.data.scenes.remove(bpy.data.scenes["Scene"])  # the file then opens on the demo
        bpy.ops.wm.save_as_mainfile(filepath=str(out_dir / "demo.blend"))
    print(f"demo scene: {len(built.objects)} objects; baking into {out_dir / 'demo.vbnf'}")
    settings = BakeSettings() if args.panel_defaults else small_bake_settings(args)
    job = bake(built.scene, settings, out_dir, timings)
    volume_object: Any = job.imported
    assert volume_object is not None
    split = load_split(job.dataset_dir, "test")
    for obj in built.objects:  # render the neural field alone
        obj.hide_render = True
    results, renders = evaluate_levels(
        volume_object, split, job.progress.level_psnr, out_dir, timings
    )
    for obj in built.objects:
        obj.hide_render = False
    volume_object.vbnf.lod = volume_object.vbnf.max_level
    with timings("contact sheet and save"):
        contact_sheet(split, renders, out_dir / "contact_sheet.png")
        bpy.ops.wm.save_mainfile()
    total_bytes = volume_object.vbnf.total_bytes
    total_s = time.monotonic() - started

    print()
    print_table(results, total_bytes)
    print()
    for name, seconds in timings.seconds.items():
        print(f"{name:<28} {seconds:6.1f} s")
    print(f"{'total':<28} {total_s:6.1f} s")
    summary = {
        "levels": [asdict(r) for r in results],
        "total_bytes": total_bytes,
        "timings_s": {**timings.seconds, "total": total_s},
        "settings": asdict(settings),
    }
    atomic_write_bytes(out_dir / "demo.json", json.dumps(summary, indent=2).encode())
    written = ("demo.vbnf", "contact_sheet.png", "demo.blend", "demo.json")
    print("\nwrote " + ", ".join(str(out_dir / name) for name in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
