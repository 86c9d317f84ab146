"""Headless VBNF commands, for scripts, render farms and CI.

With the bpy module::

    python addon/vbnf_blender/batch.py capture SCENE.blend -o DATASET_DIR [--views N] ...

Under a Blender binary (the scene is already loaded, so SCENE.blend is optional)::

    blender -b SCENE.blend --python addon/vbnf_blender/batch.py -- capture -o DATASET_DIR ...

``bake`` runs the whole pipeline of the Bake button (capture, training in a subprocess, asset)
for one or more .blend files, writing ``OUT_DIR/<file name>.vbnf`` for each (named as the button
names it)::

    python addon/vbnf_blender/batch.py bake A.blend B.blend -o OUT_DIR [--epochs E] ...
    blender -b A.blend --python addon/vbnf_blender/batch.py -- bake -o OUT_DIR --python PY

A file that fails is reported and the others still bake; the exit code is 1 if any failed.
What a cancelled (Ctrl-C) or failed bake rendered and trained is kept in
``OUT_DIR/<file name>.vbnf.bake`` and the next ``bake`` of that file resumes it, dropping (and
saying so) what the scene or settings no longer allow; ``--restart`` throws it away first.

Each command is one argparse sub-parser whose ``run`` default is the function that carries it
out, so a new command (``bake``) is one more ``_add_*_command`` call and one function. User
errors end with a one-line message and exit code 1, not a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn, TextIO

# Run as a script, this file's package is not importable until addon/ is on the path.
ADDON_DIR = Path(__file__).resolve().parents[1]
if str(ADDON_DIR) not in sys.path:
    sys.path.insert(0, str(ADDON_DIR))

import bpy  # noqa: E402

from vbnf_blender.bake_job import (  # noqa: E402
    BakeJob,
    BakeProgress,
    BakeSettings,
    asset_path_for,
    bake_settings,
    level_psnr_line,
)
from vbnf_blender.capture import CaptureProgress, CaptureSettings, capture_dataset  # noqa: E402
from vbnf_blender.engine import VbnfError  # noqa: E402

PROGRESS_BAR_CHARS = 30


class UsageError(Exception):
    """A bad command line or input file, reported in one line like a ``VbnfError``."""


class _Parser(argparse.ArgumentParser):
    """Reports errors by raising, so they exit with 1 and one line like every other failure."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="batch.py", description="Headless VBNF commands.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_capture_command(commands)
    _add_bake_command(commands)
    return parser


def _add_capture_command(commands: argparse._SubParsersAction) -> None:
    defaults = CaptureSettings()
    command = commands.add_parser(
        "capture",
        help="render RGB-D training views of a scene into a dataset folder",
        description="Render RGB-D training views of a scene with Cycles into a dataset folder.",
    )
    command.add_argument(
        "scene", nargs="?", type=Path, help=".blend file (optional under blender -b FILE)"
    )
    command.add_argument("-o", "--output", required=True, type=Path, help="dataset folder")
    command.add_argument("--views", type=int, default=defaults.train_views, help="training views")
    command.add_argument("--test-views", type=int, default=defaults.test_views)
    command.add_argument(
        "--resolution", type=int, default=defaults.resolution_px, help="image side in pixels"
    )
    command.add_argument("--samples", type=int, default=defaults.samples, help="Cycles samples")
    command.add_argument("--seed", type=int, default=defaults.seed, help="Cycles noise seed")
    command.add_argument("--no-denoise", action="store_true", help="skip Cycles denoising")
    command.add_argument(
        "--hemisphere", action="store_true", help="cameras only above the target's centre"
    )
    command.add_argument(
        "--selection",
        nargs="*",
        metavar="OBJECT",
        help="capture only these objects (others are hidden from render meanwhile)",
    )
    command.set_defaults(run=run_capture)


def run_capture(args: argparse.Namespace) -> None:
    scene = _load_scene(args.scene)
    objects = None if args.selection is None else _find_objects(scene, args.selection)
    settings = CaptureSettings(
        train_views=args.views,
        test_views=args.test_views,
        resolution_px=args.resolution,
        samples=args.samples,
        denoise=not args.no_denoise,
        seed=args.seed,
        hemisphere=args.hemisphere,
    )
    started = time.monotonic()
    with _stdout_silenced() as terminal, _ProgressLine(terminal) as show_progress:
        out_dir = capture_dataset(scene, args.output, settings, objects, progress=show_progress)
    print(
        f"dataset written to {out_dir} ({settings.train_views} train + {settings.test_views} "
        f"test views, {time.monotonic() - started:.1f} s)"
    )


def _add_bake_command(commands: argparse._SubParsersAction) -> None:
    defaults = BakeSettings()
    capture_defaults = defaults.capture
    command = commands.add_parser(
        "bake",
        help="capture, train and write OUT_DIR/<file>.vbnf for each .blend file",
        description="Bake .blend files into .vbnf assets: Cycles capture, then training in a "
        "separate Python process (the Bake button's pipeline).",
    )
    command.add_argument(
        "scenes", nargs="*", type=Path, metavar="SCENE", help=".blend files (optional under -b)"
    )
    command.add_argument("-o", "--output", required=True, type=Path, help="folder for the assets")
    command.add_argument(
        "--views", type=int, default=capture_defaults.train_views, help="training views"
    )
    command.add_argument(
        "--resolution",
        type=int,
        default=capture_defaults.resolution_px,
        help="image side in pixels",
    )
    command.add_argument(
        "--samples", type=int, default=capture_defaults.samples, help="Cycles samples"
    )
    command.add_argument("--bitwidth", type=int, default=defaults.bitwidth)
    command.add_argument("--min-level", type=int, default=defaults.min_level)
    command.add_argument("--max-level", type=int, default=defaults.max_level)
    command.add_argument("--epochs", type=int, default=defaults.epochs)
    command.add_argument("--batch-rays", type=int, help="rays per training step (engine default)")
    command.add_argument("--device", choices=("cpu", "cuda"), default=defaults.device)
    command.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    command.add_argument(
        "--python", default="", help="Python with torch that trains (default: this one)"
    )
    command.add_argument(
        "--no-estimate",
        dest="estimate",
        action="store_false",
        help="bake without first estimating the time (a few timed training steps, remembered "
        "per machine and settings, and two rendered views)",
    )
    command.add_argument(
        "--restart",
        action="store_true",
        help="discard what an interrupted bake of the same file kept, instead of resuming it",
    )
    command.add_argument(
        "--ray",
        nargs="?",
        const="",
        type=_ray_address,
        metavar="ADDRESS",
        help="bake each file as a task on a Ray cluster (none given: a local one); "
        "put it after the files, or write --ray=ADDRESS",
    )
    command.add_argument(
        "--retries", type=int, default=2, help="with --ray: resends of a crashed task"
    )
    command.set_defaults(run=run_bake)


def _ray_address(text: str) -> str:
    """``--ray`` takes an optional value, so ``--ray a.blend b.blend`` would read a file as the
    address: refuse that rather than bake one file less."""
    if text.endswith(".blend"):
        raise argparse.ArgumentTypeError(
            f"{text} is a file, not an address: put --ray after the files, or write --ray=ADDRESS"
        )
    return text


def run_bake(args: argparse.Namespace) -> None:
    """Bake each file in turn; failures are reported and counted, not fatal to the rest. Ctrl-C
    stops the bake like the Cancel button (the work is kept) and ends the batch."""
    settings = bake_settings(args, batch_rays=args.batch_rays, cpu_threads=args.threads)
    settings.validate()
    if not args.scenes and not bpy.data.filepath:
        raise UsageError("no .blend file given and none loaded")
    if args.ray is not None:
        _bake_on_ray(args, settings)
        return
    blends: list[Path | None] = list(args.scenes) or [None]  # None: the file Blender loaded
    failed = []
    for blend in blends:
        name = blend.name if blend is not None else Path(bpy.data.filepath).name
        started = time.monotonic()
        try:
            job = _bake_file(blend, settings, args)
        except (UsageError, VbnfError) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            failed.append(name)
            continue
        if job.stage == "cancelled":
            raise UsageError(f"{name}: {_unfinished(job)}")
        if job.stage == "failed":
            print(f"error: {name}: {_unfinished(job)}", file=sys.stderr)
            failed.append(name)
            continue
        size = job.asset_path.stat().st_size
        scores = level_psnr_line(job.progress.level_psnr)
        resumed = f", {job.resume_note}" if job.resume_note else ""
        print(
            f"{job.asset_path} ({size} bytes, {time.monotonic() - started:.0f} s"
            f"{f', {scores}' if scores else ''}{resumed})"
        )
        if job.quality_warning:
            print(f"warning: {name}: {job.quality_warning}", file=sys.stderr)
        if job.report_path is not None:
            print(f"report: {job.report_path}")
    if failed:
        raise UsageError(f"{len(failed)} of {len(blends)} files failed: {', '.join(failed)}")


def _bake_on_ray(args: argparse.Namespace, settings: BakeSettings) -> None:
    """``--ray``: the same bakes as Ray tasks (``ray_bake.py``, the only importer of Ray)."""
    from vbnf_blender import ray_bake

    if args.retries < 0:
        raise UsageError(f"--retries must be at least 0, got {args.retries}")
    options = ray_bake.RayOptions(
        args.ray or None, args.device, args.threads or ray_bake.DEFAULT_TASK_CPUS,
        args.python, args.restart, args.retries,
    )  # fmt: skip
    blends = list(args.scenes) or [Path(bpy.data.filepath)]
    with _ProgressLine(sys.stderr) as progress_line:
        report = ray_bake.bake_on_ray(blends, args.output, settings, options, progress_line.draw)
    print(report.table())
    for line in report.notes():
        print(line)
    for line in report.problems():
        print(line, file=sys.stderr)
    if report.verdict():
        raise UsageError(report.verdict())


def _bake_file(blend: Path | None, settings: BakeSettings, args: argparse.Namespace) -> BakeJob:
    """Bake one file to ``OUT_DIR/<file name>.vbnf``, to the end however it ends."""
    scene = _load_scene(blend)
    # The Bake button's naming, so that either finds the work the other kept.
    asset_path = asset_path_for(bpy.data.filepath, str(args.output), scene.name)
    job = BakeJob(scene, settings, asset_path, python=args.python, resume=not args.restart)
    with _stdout_silenced() as terminal:
        if args.estimate:
            _print_estimate(job, terminal)
        with _ProgressLine(terminal) as show_progress:
            job.drive(on_progress=show_progress.bake)
    return job


def _print_estimate(job: BakeJob, terminal: TextIO) -> None:
    """``estimate: about 9 min (...)`` before the bake; a failed estimate does not stop it
    (the bake then reports its own error, if any)."""
    try:
        line = job.estimate().line()
    except VbnfError as error:
        line = f"unavailable ({error})"
    terminal.write(f"estimate: {line}\n")
    terminal.flush()


def _unfinished(job: BakeJob) -> str:
    """Why a bake did not finish, what it made of an earlier bake's work, and what it kept for
    the next run."""
    failed = job.stage == "failed"
    parts = [(job.error or "the bake failed") if failed else job.progress.message]
    if job.resume_note:
        parts.append(job.resume_note)
    if job.kept:
        parts.append(
            f"kept {job.kept} in {job.work_dir}: run again to resume, "
            "or with --restart to start over"
        )
    return "; ".join(parts)


def _load_scene(blend_path: Path | None) -> bpy.types.Scene:
    """Open the given .blend, or use the one Blender already loaded from its command line."""
    if blend_path is None:
        if not bpy.data.filepath:
            raise UsageError("no .blend file given and none loaded")
        return _active_scene()
    if not blend_path.is_file():
        raise UsageError(f"{blend_path}: no such .blend file")
    try:
        bpy.ops.wm.open_mainfile(filepath=str(blend_path.resolve()))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1]
        raise UsageError(f"{blend_path}: cannot open ({reason})") from error
    return _active_scene()


def _active_scene() -> bpy.types.Scene:
    scene = bpy.context.scene
    if scene is None:
        raise UsageError(f"{bpy.data.filepath}: the file has no scene")
    return scene


def _find_objects(scene: bpy.types.Scene, names: list[str]) -> list[bpy.types.Object]:
    if not names:
        raise UsageError("--selection needs at least one object name")
    missing = [name for name in names if name not in scene.objects]
    if missing:
        raise UsageError(f"no object named {', '.join(missing)} in scene '{scene.name}'")
    return [scene.objects[name] for name in names]


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[TextIO]:
    """Send Blender's per-render log lines away; yields the terminal for the progress bar.

    Blender's C code writes to file descriptor 1 directly, so ``sys.stdout`` redirection would
    not catch it. The progress bar goes to stderr, which stays as it is.
    """
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield sys.stderr
    finally:
        sys.stdout.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)


class _ProgressLine:
    """A ``\\r`` progress bar on one terminal line, ended with a newline however the run ends."""

    def __init__(self, terminal: TextIO) -> None:
        self._terminal = terminal
        self._line_open = False

    def __enter__(self) -> _ProgressLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._line_open:
            self._terminal.write("\n")
            self._terminal.flush()

    def __call__(self, progress: CaptureProgress) -> None:
        done = f"{progress.views_done}/{progress.total_views}"
        self.draw(f"capture [{self._bar(progress.fraction)}] {done} {progress.file_path}")

    def bake(self, progress: BakeProgress) -> None:
        details = "".join(f", {part}" for part in progress.details())
        bar = self._bar(progress.fraction)
        self.draw(f"bake [{bar}] {progress.stage}{details}: {progress.message}")

    @staticmethod
    def _bar(fraction: float) -> str:
        filled = round(PROGRESS_BAR_CHARS * fraction)
        return "#" * filled + "-" * (PROGRESS_BAR_CHARS - filled)

    def draw(self, line: str) -> None:
        self._terminal.write(f"\r{line[:100]:<100}")
        self._terminal.flush()
        self._line_open = True


def command_line_args(argv: list[str]) -> list[str]:
    """The arguments meant for this script: after ``--`` under Blender, else after its name."""
    return argv[argv.index("--") + 1 :] if "--" in argv else argv[1:]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(command_line_args(sys.argv) if argv is None else argv)
        args.run(args)
    except (UsageError, VbnfError, OSError) as error:  # OSError: disk full, permissions...
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
