"""The bake pipeline: capture views with Cycles, train in a subprocess, write and import the asset.

One implementation serves every entry point. The Bake button's modal operator calls
``advance()`` from a timer, one small piece of work per call (one rendered view, or one
non-blocking read of the training events), so Blender stays responsive. ``batch.py bake``, the
demo and the tests call ``run()``, which loops over the same ``advance()``: under the bpy
module and ``blender -b`` timers and modal operators never run, so that loop is the only way.

While the capture renders, a background thread checks that the training interpreter can import
torch (seconds, the first time), so a missing torch is reported early rather than after the
capture. The work folder (dataset and training run) is temporary unless the caller names one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import volume
from .capture import CaptureJob, CaptureSettings
from .engine import VbnfError, atomic_write_bytes
from .training_process import (
    EXIT_CANCELLED,
    TrainingProcess,
    find_interpreter,
    train_command,
)

ASSET_SUFFIX = ".vbnf"
TRAIN_POLL_INTERVAL_S = 0.2
INTERPRETER_WAIT_S = 0.1
# Shares of the overall progress bar.
CAPTURE_SHARE, TRAIN_SHARE = 0.3, 0.65


class BakeError(VbnfError):
    """The bake failed; the message is the cause in the words of the part that failed."""


class BakeCancelled(VbnfError):
    """The bake was stopped by the user."""


@dataclass(frozen=True)
class BakeSettings:
    """Capture and training settings of one bake (the panel's fields, plus engine options the
    panel leaves at their defaults). ``batch_rays=None`` keeps the engine's default;
    ``cpu_threads`` caps torch's threads (``OMP_NUM_THREADS``) in the training process, which
    matters on a shared CPU: on 2 cores with one other busy process, a step took 1.9 s with
    torch's default 2 threads and 0.34 s with 1."""

    train_views: int = 100
    test_views: int = 10
    resolution_px: int = 128
    samples: int = 32
    denoise: bool = True
    bitwidth: int = 4
    min_level: int = 3
    max_level: int = 6
    epochs: int = 10
    device: str = "cpu"
    batch_rays: int | None = None
    cpu_threads: int | None = None
    seed: int = 0

    def validate(self) -> None:
        """Fail before the capture on what training would only reject minutes later."""
        if not 0 <= self.min_level <= self.max_level <= 12:
            raise BakeError(
                f"levels must satisfy 0 <= coarsest <= finest <= 12, "
                f"got {self.min_level}..{self.max_level}"
            )
        if not 1 <= self.bitwidth <= 8:
            raise BakeError(f"bitwidth must be in 1..8, got {self.bitwidth}")
        if self.epochs < 1:
            raise BakeError(f"epochs must be at least 1, got {self.epochs}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise BakeError(f"cpu_threads must be at least 1, got {self.cpu_threads}")
        self.capture_settings().validate()

    def capture_settings(self) -> CaptureSettings:
        return CaptureSettings(
            train_views=self.train_views,
            test_views=self.test_views,
            resolution_px=self.resolution_px,
            samples=self.samples,
            denoise=self.denoise,
            seed=self.seed,
        )

    def train_options(self) -> list[str]:
        """The ``python -m core train`` options these settings stand for."""
        options = [
            f"--bitwidth={self.bitwidth}",
            f"--min-level={self.min_level}",
            f"--max-level={self.max_level}",
            f"--epochs={self.epochs}",
            f"--device={self.device}",
            f"--seed={self.seed}",
        ]
        if self.batch_rays is not None:
            options.append(f"--batch-rays={self.batch_rays}")
        return options


def held_out_views_for(train_views: int) -> int:
    """Held-out views scored after training: a tenth of the training views, at least one."""
    return max(1, train_views // 10)


def bake_settings(options: Any, **engine_options: Any) -> BakeSettings:
    """Job settings from the panel's properties or the batch command's arguments, which use the
    same names (``views``, ``resolution``, ``samples``, ``bitwidth``, levels, ``epochs``,
    ``device``); ``engine_options`` adds what only the command line sets."""
    return BakeSettings(
        train_views=options.views,
        test_views=held_out_views_for(options.views),
        resolution_px=options.resolution,
        samples=options.samples,
        bitwidth=options.bitwidth,
        min_level=options.min_level,
        max_level=options.max_level,
        epochs=options.epochs,
        device=options.device,
        **engine_options,
    )


def asset_path_for(blend_path: str, output_dir: str, fallback_name: str) -> Path:
    """``<output_dir or the .blend's folder>/<.blend name>.vbnf``.

    ``output_dir`` may be Blender-relative (``//``); without a saved .blend it must be given.
    """
    if not output_dir and not blend_path:
        raise BakeError("save the .blend file first, or choose an output folder")
    name = Path(blend_path).stem if blend_path else fallback_name
    folder = Path(bpy.path.abspath(output_dir)) if output_dir else Path(blend_path).parent
    return folder / f"{bpy.path.clean_name(name)}{ASSET_SUFFIX}"


@dataclass
class BakeProgress:
    """A snapshot for progress bars: ``fraction`` covers the whole bake."""

    stage: str  # capture, train, import, done, failed, cancelled
    fraction: float
    message: str
    epoch: int | None = None
    psnr: float | None = None
    seconds_left: float | None = None
    level_psnr: dict[int, float] = field(default_factory=dict)


class BakeJob:
    """One bake; ``start()``, then ``advance()`` until ``finished``, then ``close()``."""

    def __init__(
        self,
        scene: bpy.types.Scene,
        settings: BakeSettings,
        asset_path: Path,
        python: str = "",
        objects: Sequence[bpy.types.Object] | None = None,
        work_dir: Path | None = None,
        import_into: bpy.types.Collection | None = None,
    ) -> None:
        settings.validate()
        self.scene = scene
        self.settings = settings
        self.asset_path = Path(asset_path)
        self.imported: bpy.types.Object | None = None
        self.error: str | None = None
        self.progress = BakeProgress("capture", 0.0, "preparing the capture")
        self._python_preference = python
        self._objects = None if objects is None else list(objects)
        self._keep_work_dir = work_dir is not None
        self._work_dir = work_dir
        self._import_into = import_into
        self._stack = contextlib.ExitStack()
        self._capture: CaptureJob | None = None
        self._interpreter: concurrent.futures.Future[str] | None = None
        self._training: TrainingProcess | None = None
        self._cancel_requested = False

    @property
    def stage(self) -> str:
        return self.progress.stage

    @property
    def finished(self) -> bool:
        return self.stage in ("done", "failed", "cancelled")

    @property
    def dataset_dir(self) -> Path:
        assert self._work_dir is not None
        return self._work_dir / "dataset"

    @property
    def run_dir(self) -> Path:
        assert self._work_dir is not None
        return self._work_dir / "run"

    def start(self) -> None:
        """Set the scene up for the capture and start checking the interpreter."""
        if self._work_dir is None:
            self._work_dir = Path(tempfile.mkdtemp(prefix="vbnf-bake-"))
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._interpreter = executor.submit(find_interpreter, self._python_preference)
        executor.shutdown(wait=False)
        try:
            objects = self._objects if self._objects is not None else _scene_objects(self.scene)
            self._capture = self._stack.enter_context(
                CaptureJob(self.scene, self.dataset_dir, self.settings.capture_settings(), objects)
            )
        except VbnfError as error:
            self._fail(str(error))

    def cancel(self) -> None:
        """Stop at the next ``advance()``: between views, or by signalling the trainer."""
        self._cancel_requested = True

    def advance(self) -> BakeProgress:
        """Do one small piece of work and return where the bake stands."""
        try:
            if self.stage == "capture":
                self._advance_capture()
            elif self.stage == "train":
                self._advance_training()
            elif self.stage == "import":
                self._import()
        except (VbnfError, OSError) as error:
            self._fail(str(error))
        return self.progress

    def _advance_capture(self) -> None:
        assert self._interpreter is not None
        if self._cancel_requested:
            self._finish("cancelled", "cancelled during the capture")
            return
        if self._interpreter.done():
            self._interpreter.result()  # raises InterpreterError now rather than later
        if self._capture is not None:
            report = self._capture.step()
            self.progress = BakeProgress(
                "capture",
                CAPTURE_SHARE * report.fraction,
                f"capturing view {report.views_done}/{report.total_views}",
            )
            if self._capture.finished:
                self._stack.close()  # restores the scene
                self._capture = None
            return
        # Captured; the interpreter check may still run: wait a tick's worth, not longer.
        concurrent.futures.wait([self._interpreter], timeout=INTERPRETER_WAIT_S)
        if not self._interpreter.done():
            self.progress.message = "checking the training interpreter"
            return
        command = train_command(
            self._interpreter.result(),
            self.dataset_dir,
            self.run_dir,
            self.settings.train_options(),
        )
        threads = self.settings.cpu_threads
        self._training = TrainingProcess(
            command,
            extra_environment=None if threads is None else {"OMP_NUM_THREADS": str(threads)},
        )
        self.progress = BakeProgress("train", CAPTURE_SHARE, "starting training")

    def _advance_training(self) -> None:
        training = self._training
        assert training is not None
        if self._cancel_requested and not training.stopping:
            training.stop()
        training.poll()
        status = training.status
        self.progress = BakeProgress(
            "train",
            CAPTURE_SHARE + TRAIN_SHARE * status.fraction,
            "stopping training" if training.stopping else status.message,
            epoch=status.epoch,
            psnr=status.psnr,
            seconds_left=status.seconds_left,
            level_psnr=dict(status.level_psnr),
        )
        if not training.finished:
            return
        code = training.returncode
        if training.stopping:
            self._finish("cancelled", "training stopped")
        elif code == 0 and status.asset is not None:
            atomic_write_bytes(self.asset_path, Path(status.asset).read_bytes())
            self.progress.stage = "import" if self._import_into is not None else "done"
            self.progress.message = f"wrote {self.asset_path}"
            if self._import_into is None:
                self.progress.fraction = 1.0
        elif code == EXIT_CANCELLED:
            self._finish("cancelled", "training was interrupted")
        else:
            self._fail(training.failure_message())

    def _import(self) -> None:
        assert self._import_into is not None
        existing = _objects_showing(self.asset_path)
        if existing:  # a re-bake refreshes the previews of the same file in place
            for obj in existing:
                volume.attach_asset(obj, self.asset_path)
            self.imported = existing[0]
        else:
            self.imported = volume.import_asset(self.asset_path, self._import_into)
        self.progress.stage, self.progress.fraction = "done", 1.0
        self.progress.message = f"baked {self.asset_path.name}"

    def _fail(self, message: str) -> None:
        self.error = message
        self._finish("failed", message)

    def _finish(self, stage: str, message: str) -> None:
        self.progress.stage, self.progress.message = stage, message
        self._release()

    def _release(self) -> None:
        """Restore the scene and end the child; idempotent."""
        self._stack.close()
        self._capture = None
        if self._training is not None and self._training.returncode is None:
            self._training.kill()

    def close(self) -> None:
        """Release everything, whatever state the bake is in, and drop the work folder unless
        the caller chose it (a demo or test that reads the dataset afterwards)."""
        self._release()
        if self._work_dir is not None and not self._keep_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)

    def run(self, on_progress: Callable[[BakeProgress], None] | None = None) -> Path:
        """Bake to the end in this call (headless use); returns the asset path.

        Raises :class:`BakeError` or :class:`BakeCancelled` (after ``cancel()`` from
        ``on_progress``)."""
        self.start()
        try:
            while not self.finished:
                progress = self.advance()
                if on_progress is not None:
                    on_progress(progress)
                if self.stage == "train":
                    time.sleep(TRAIN_POLL_INTERVAL_S)
        finally:
            self.close()
        if self.stage == "cancelled":
            raise BakeCancelled(self.progress.message)
        if self.stage == "failed":
            raise BakeError(self.error or "the bake failed")
        return self.asset_path


def _scene_objects(scene: bpy.types.Scene) -> list[bpy.types.Object] | None:
    """Everything the scene renders, less the neural fields already imported into it (a
    re-bake must not capture its own previous result). None when there are none to leave out,
    which the capture reads as the whole scene."""
    kept = [obj for obj in scene.objects if not volume.is_preview(obj)]
    return None if len(kept) == len(scene.objects) else kept


def _objects_showing(asset_path: Path) -> list[bpy.types.Object]:
    target = asset_path.resolve()
    return [
        obj
        for obj in bpy.data.objects
        if volume.is_preview(obj)
        and Path(bpy.path.abspath(obj.vbnf.asset_path)).resolve() == target  # type: ignore[attr-defined]
    ]
