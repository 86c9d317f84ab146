"""The evaluation suite: capture the procedural scenes with Cycles, then run the report on them.

Run ``python -m bench.suite --out out/suite`` (see ``docs/evaluation.md``). Each scene of
``vbnf_blender.scenes.SCENES`` is built in code and captured into ``OUT/datasets/<scene>``;
a dataset whose capture settings match an earlier one (``<scene>.capture.json``) is reused.
Then ``python -m core report`` trains and scores every method on all of them into
``OUT/report`` as a subprocess: torch and Blender stay in separate processes, and the report
reuses its own runs, so an interrupted suite resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR / "addon") not in sys.path:
    sys.path.insert(0, str(REPO_DIR / "addon"))

import bpy  # noqa: E402
from vbnf_blender.capture import CaptureSettings, capture_dataset  # noqa: E402
from vbnf_blender.engine import atomic_write_bytes  # noqa: E402
from vbnf_blender.scenes import SCENES, build_scene  # noqa: E402

# Sized for one contended core of a 2-core CPU, where a training step of 1024 rays at levels
# 3..7 takes about 0.3 s: 64 px images (level 6 is a cell per pixel, level 7 half a pixel) and
# 6 epochs of 60 views keep the five-method suite near an hour (docs/evaluation.md).
DEFAULT_CAPTURE = CaptureSettings(train_views=60, test_views=8, resolution_px=64, samples=16)
DEFAULT_REPORT_ARGS = ["--epochs", "6", "--min-level", "3", "--max-level", "7"]
DEFAULT_REPORT_ARGS += ["--batch-rays", "1024"]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The suite's own flags; anything else is passed on to ``python -m core report``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.suite",
        description="Capture the procedural scenes with Cycles, then run the report on them.",
        epilog="Other flags (--epochs, --methods, --test-views, ...) go to the report and "
        f"override the suite's {' '.join(DEFAULT_REPORT_ARGS)}.",
    )
    parser.add_argument("--out", type=Path, default=REPO_DIR / "out" / "suite")
    parser.add_argument("--scenes", default=",".join(SCENES), help="comma-separated scene names")
    parser.add_argument("--views", type=int, default=DEFAULT_CAPTURE.train_views)
    parser.add_argument("--capture-test-views", type=int, default=DEFAULT_CAPTURE.test_views)
    parser.add_argument("--resolution", type=int, default=DEFAULT_CAPTURE.resolution_px)
    parser.add_argument("--samples", type=int, default=DEFAULT_CAPTURE.samples)
    return parser.parse_known_args(argv)


def capture_scene(name: str, datasets_dir: Path, settings: CaptureSettings) -> Path:
    """Build and capture one scene, or reuse a complete capture made with the same settings."""
    dataset_dir = datasets_dir / name
    stamp = datasets_dir / f"{name}.capture.json"
    wanted = json.dumps(asdict(settings), sort_keys=True)
    complete = (dataset_dir / "transforms_test.json").is_file()  # written after the last view
    if complete and stamp.is_file() and stamp.read_text() == wanted:
        print(f"[suite] {name}: reusing {dataset_dir}", file=sys.stderr)
        return dataset_dir
    started = time.monotonic()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    built = build_scene(name)
    capture_dataset(built.scene, dataset_dir, settings, objects=built.objects)
    atomic_write_bytes(stamp, wanted.encode())
    print(f"[suite] {name}: captured in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return dataset_dir


def main(argv: list[str] | None = None) -> int:
    args, report_args = parse_args(argv)
    settings = CaptureSettings(
        train_views=args.views,
        test_views=args.capture_test_views,
        resolution_px=args.resolution,
        samples=args.samples,
    )
    names = [name.strip() for name in args.scenes.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENES))
    if unknown:
        print(f"error: unknown scenes {unknown}; choose from {list(SCENES)}", file=sys.stderr)
        return 1
    datasets = [capture_scene(name, args.out / "datasets", settings) for name in names]
    command = [sys.executable, "-m", "core", "report", *map(str, datasets)]
    command += ["-o", str(args.out / "report"), *DEFAULT_REPORT_ARGS, *report_args]
    print(f"[suite] {' '.join(command)}", file=sys.stderr)
    return subprocess.run(command, cwd=REPO_DIR, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
