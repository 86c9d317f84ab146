"""The bake pipeline: capture views with Cycles, train in a subprocess, write and import the asset.

One implementation serves every entry point. The Bake button's modal operator calls
``advance()`` from a timer, one small piece of work per call (one rendered view, or one
non-blocking read of the training events), so Blender stays responsive. ``batch.py bake``, the
demo and the tests call ``run()``, which loops over the same ``advance()``: under the bpy
module and ``blender -b`` timers and modal operators never run, so that loop is the only way.

Before the first view renders, a background thread checks that the training interpreter can
import everything training needs and, for Device = CUDA, sees a GPU (``interpreter.py``;
seconds the first time, remembered after), so a missing package is reported before the capture
rather than after it; Blender stays responsive meanwhile.

The dataset and the training run live in a work folder beside the asset (``work_folder.py``).
A cancelled or failed bake keeps it, and the next bake of the same asset resumes: views already
rendered are not rendered again, and training continues from its checkpoint (``--resume``) when
the settings allow. What a bake keeps is decided by ``plan()`` without changing anything, and
applied by ``start()``: the Bake button shows the plan and asks before it drops kept work;
headless callers start at once and read what was dropped in ``resume_note``. A finished bake
removes the folder, unless the caller named it (the demo and tests read the dataset afterwards;
only the state file is removed then, so that the next bake there starts afresh). A bake holds
the folder's lock from ``start()`` to ``close()``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import shutil
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import bpy

from . import compat, volume
from .capture import CaptureJob, CapturePlan, CaptureSettings, plan_capture
from .engine import (
    CHECKPOINT_NAME,
    DEFAULT_BITWIDTH,
    DEFAULT_MAX_LEVEL,
    DEFAULT_MIN_LEVEL,
    EXIT_CANCELLED,
    MAX_LEVEL,
    MAX_TRAIN_BITWIDTH,
    METRICS_NAME,
    SSIM_WINDOW,
    VbnfError,
    atomic_write_bytes,
)
from .estimate import Estimate, StepSettings, estimate, step_cost
from .interpreter import find_interpreter
from .training_process import TrainingProcess, train_command
from .work_folder import (
    DATASET_NAME,
    RUN_NAME,
    STATE_NAME,
    BakeState,
    BakeStateError,
    ResumePlan,
    acquire_lock,
    apply_plan,
    check_free,
    discard,
    plan_resume,
    read_state,
    release_lock,
    save_state,
    start_over,
    views_line,
    work_dir_for,
)

ASSET_SUFFIX = ".vbnf"
REPORT_SUFFIX = ".report.json"  # <asset>.vbnf.report.json: what the bake measured and cost
DATASET_SUFFIX = ".dataset"  # <name>.dataset: the views a Keep Dataset bake leaves
# A finest level below this, or not clearly above a flat colour, is reported as a poor result.
POOR_PSNR_DB = 20.0
FLAT_COLOUR_MARGIN_DB = 3.0
# How long a bake that Blender ends mid-training waits for the trainer's checkpoint (Blender
# is blocked meanwhile; the tests' trainers take well under a second).
RELEASE_GRACE_S = 5.0
TRAIN_POLL_INTERVAL_S = 0.2
INTERPRETER_WAIT_S = 0.1
# Shares of the overall progress bar.
CAPTURE_SHARE, TRAIN_SHARE = 0.3, 0.65
# The Bake button's capture: half the capture's default resolution, a quarter of the pixels.
DEFAULT_CAPTURE = CaptureSettings(resolution_px=128)
# Characters no file name may hold on Windows, macOS or Linux (and control characters).
INVALID_FILE_NAME_CHARS = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')


class BakeError(VbnfError):
    """The bake failed; the message is the cause in the words of the part that failed."""


class BakeCancelled(VbnfError):
    """The bake was stopped by the user."""


@dataclass(frozen=True)
class BakeSettings:
    """Capture and training settings of one bake (the panel's fields, plus engine options the
    panel leaves at their defaults). ``capture.seed`` seeds training too. ``batch_rays=None``
    keeps the engine's default; ``cpu_threads`` caps torch's threads (``OMP_NUM_THREADS``) in
    the training process, which matters on a shared CPU: on 2 cores with one other busy
    process, a step took 1.9 s with torch's default 2 threads and 0.34 s with 1."""

    capture: CaptureSettings = DEFAULT_CAPTURE
    bitwidth: int = DEFAULT_BITWIDTH
    min_level: int = DEFAULT_MIN_LEVEL
    max_level: int = DEFAULT_MAX_LEVEL
    epochs: int = 10
    device: str = "cpu"
    batch_rays: int | None = None
    cpu_threads: int | None = None
    keep_dataset: bool = False  # move the rendered views beside the asset after a bake

    def validate(self) -> None:
        """Fail before the capture on what training would only reject minutes later."""
        if not 0 <= self.min_level <= self.max_level <= MAX_LEVEL:
            raise BakeError(
                f"levels must satisfy 0 <= coarsest <= finest <= {MAX_LEVEL}, "
                f"got {self.min_level}..{self.max_level}"
            )
        if not 1 <= self.bitwidth <= MAX_TRAIN_BITWIDTH["codebook"]:
            raise BakeError(
                f"bitwidth must be in 1..{MAX_TRAIN_BITWIDTH['codebook']}, got {self.bitwidth}"
            )
        if self.epochs < 1:
            raise BakeError(f"epochs must be at least 1, got {self.epochs}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise BakeError(f"cpu_threads must be at least 1, got {self.cpu_threads}")
        if self.batch_rays is not None and self.batch_rays < 1:
            raise BakeError(f"batch rays must be at least 1, got {self.batch_rays}")
        if self.capture.resolution_px < SSIM_WINDOW:
            raise BakeError(
                f"resolution must be at least {SSIM_WINDOW} px (the held-out views are scored "
                f"with SSIM's {SSIM_WINDOW}x{SSIM_WINDOW} window), got {self.capture.resolution_px}"
            )
        self.capture.validate()

    def train_options(self) -> list[str]:
        """The ``python -m core train`` options these settings stand for."""
        options = [
            f"--bitwidth={self.bitwidth}",
            f"--min-level={self.min_level}",
            f"--max-level={self.max_level}",
            f"--epochs={self.epochs}",
            f"--device={self.device}",
            f"--seed={self.capture.seed}",
        ]
        if self.batch_rays is not None:
            options.append(f"--batch-rays={self.batch_rays}")
        return options

    def checkpoint_fingerprint(self) -> dict[str, Any]:
        """The settings a training checkpoint is bound to: ``--resume`` keeps the checkpoint's
        own levels, bitwidth, batch size and seed, and takes only epochs and device from the
        command line."""
        return {
            "bitwidth": self.bitwidth,
            "min_level": self.min_level,
            "max_level": self.max_level,
            "batch_rays": self.batch_rays,
            "seed": self.capture.seed,
        }


def held_out_views_for(train_views: int) -> int:
    """Held-out views scored after training: a tenth of the training views, at least one."""
    return max(1, train_views // 10)


def bake_settings(options: Any, **engine_options: Any) -> BakeSettings:
    """Job settings from the panel's properties or the batch command's arguments, which use the
    same names (``views``, ``resolution``, ``samples``, ``hemisphere``, ``fov_deg``,
    ``bitwidth``, levels, ``epochs``, ``device``, ``keep_dataset``); what one of them lacks
    keeps its default. ``engine_options`` adds what only the command line sets."""
    defaults = BakeSettings()

    def option(name: str, default: Any) -> Any:
        return getattr(options, name, default)

    return BakeSettings(
        capture=CaptureSettings(
            train_views=options.views,
            test_views=held_out_views_for(options.views),
            resolution_px=options.resolution,
            samples=options.samples,
            hemisphere=bool(option("hemisphere", defaults.capture.hemisphere)),
            fov_deg=float(option("fov_deg", defaults.capture.fov_deg)),
        ),
        bitwidth=options.bitwidth,
        min_level=options.min_level,
        max_level=options.max_level,
        epochs=options.epochs,
        device=options.device,
        keep_dataset=bool(option("keep_dataset", defaults.keep_dataset)),
        **engine_options,
    )


def file_name_for(name: str) -> str:
    """``name`` as a file name valid on Windows, macOS and Linux: characters they forbid become
    ``_`` and trailing dots and spaces go, while letters of any script stay, so that
    "My Scene ä" and "My Scene ö" keep apart (``bpy.path.clean_name`` makes both
    ``My_Scene__``). NFC, so that a name read back from macOS (which stores NFD) is the same."""
    cleaned = INVALID_FILE_NAME_CHARS.sub("_", unicodedata.normalize("NFC", name)).rstrip(". ")
    return cleaned or "untitled"


def asset_path_for(blend_path: str, output_dir: str, fallback_name: str) -> Path:
    """``<output_dir or the .blend's folder>/<.blend name>.vbnf``: the one rule for the Bake
    button and ``batch.py bake``, which therefore find each other's work folders.

    ``output_dir`` may be Blender-relative (``//``) only once the .blend is saved; without a
    saved .blend it must be given, and the asset is named after ``fallback_name``.
    """
    if not blend_path:
        if not output_dir:
            raise BakeError("save the .blend file first, or choose an output folder")
        if output_dir.startswith("//"):
            raise BakeError(
                f"save the .blend file first: the output folder {output_dir} is relative to it"
            )
    name = Path(blend_path).stem if blend_path else fallback_name
    folder = Path(bpy.path.abspath(output_dir)) if output_dir else Path(blend_path).parent
    return folder / f"{file_name_for(name)}{ASSET_SUFFIX}"


def report_path_for(asset_path: Path) -> Path:
    """``<asset>.vbnf.report.json`` beside the asset."""
    return asset_path.with_name(asset_path.name + REPORT_SUFFIX)


def dataset_path_for(asset_path: Path) -> Path:
    """``<name>.dataset`` beside ``<name>.vbnf``."""
    return asset_path.with_suffix(DATASET_SUFFIX)


def level_psnr_line(level_psnr: dict[int, float]) -> str:
    """``PSNR 18.1 / 21.3 / 23.0 dB at levels 2 / 3 / 4``: the final line's scores."""
    if not level_psnr:
        return ""
    levels = sorted(level_psnr)
    scores = " / ".join(f"{level_psnr[level]:.1f}" for level in levels)
    return f"PSNR {scores} dB at levels {' / '.join(str(level) for level in levels)}"


def quality_warning(level_psnr: dict[int, float], flat_colour_psnr: float | None) -> str:
    """A warning when the finest level scores poorly on the held-out views ("" otherwise):
    below :data:`POOR_PSNR_DB`, or hardly better than painting every pixel one colour."""
    if not level_psnr:
        return ""
    finest = max(level_psnr)
    psnr = level_psnr[finest]
    flat = flat_colour_psnr if flat_colour_psnr is not None else float("-inf")
    if psnr >= POOR_PSNR_DB and psnr >= flat + FLAT_COLOUR_MARGIN_DB:
        return ""
    baseline = f" (one flat colour scores {flat:.1f} dB)" if flat_colour_psnr is not None else ""
    return (
        f"poor result: PSNR {psnr:.1f} dB at level {finest}{baseline}; "
        "bake with more views, a higher resolution or more epochs"
    )


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

    def details(self) -> list[str]:
        """``epoch 3``, ``21.4 dB``, ``1:15 left``, as far as known: for the status bar, the
        panel and the batch command's progress line alike."""
        parts = []
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.psnr is not None:
            parts.append(f"{self.psnr:.1f} dB")
        if self.seconds_left is not None:
            parts.append(f"{format_seconds(self.seconds_left)} left")
        return parts


def format_seconds(seconds: float) -> str:
    """``1:15``: a time left, in minutes and seconds."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


class BakeJob:
    """One bake; ``start()``, then ``advance()`` until ``finished``, then ``close()``.

    ``work_dir`` defaults to ``<asset>.vbnf.bake`` beside the asset; ``resume=False`` starts
    over whatever an earlier bake kept there (``batch.py bake --restart``).
    """

    def __init__(
        self,
        scene: bpy.types.Scene,
        settings: BakeSettings,
        asset_path: Path,
        python: str = "",
        objects: Sequence[bpy.types.Object] | None = None,
        work_dir: Path | None = None,
        import_into: bpy.types.Collection | None = None,
        resume: bool = True,
    ) -> None:
        settings.validate()
        self.scene = scene
        self.settings = settings
        self.asset_path = Path(asset_path)
        # Absolute: the trainer runs in the engine's folder, not in the caller's.
        self.work_dir = (work_dir_for(self.asset_path) if work_dir is None else work_dir).absolute()
        self.imported: bpy.types.Object | None = None
        self.error: str | None = None
        # What became of an earlier bake's work ("resumed from 37/100 views"), for reports.
        self.resume_note = ""
        self.release_grace_s = RELEASE_GRACE_S  # a loaded machine may need longer
        # Set by close() when the work folder is kept for the next bake: what it holds.
        self.kept: str | None = None
        # Set when the asset is written: the report beside it, and a poor result's warning.
        self.report_path: Path | None = None
        self.quality_warning = ""
        self.dataset_kept: Path | None = None  # set by close() for a Keep Dataset bake
        self.preview_note = ""  # why the finished bake imported no preview, if it did not
        self._times_s: dict[str, float] = {}  # capture, train: seconds this bake spent
        self._stage_started = time.monotonic()
        self.progress = BakeProgress("capture", 0.0, "preparing the capture")
        self._python_preference = python
        self._objects = None if objects is None else list(objects)
        self._owns_work_dir = work_dir is None
        self._resume = resume
        self._import_into = import_into
        self._stack = contextlib.ExitStack()
        self._capture: CaptureJob | None = None
        self._capture_plan: CapturePlan | None = None  # the last plan()'s, for start()
        self._interpreter: concurrent.futures.Future[str] | None = None
        self._training: TrainingProcess | None = None
        self._state: BakeState | None = None
        self._resume_training = False  # continue the kept checkpoint (``--resume``)
        self._locked = False  # holds the work folder's lock: the folder is this bake's
        self._state_warning = ""  # the last failed write of the state, reported once
        self._cancel_requested = False

    @property
    def stage(self) -> str:
        return self.progress.stage

    @property
    def finished(self) -> bool:
        return self.stage in ("done", "failed", "cancelled")

    @property
    def dataset_dir(self) -> Path:
        return self.work_dir / DATASET_NAME

    @property
    def run_dir(self) -> Path:
        return self.work_dir / RUN_NAME

    def plan(self) -> ResumePlan:
        """What this bake would keep of the work folder, and what it would drop and why,
        decided without changing the folder or the scene. Raises :class:`WorkFolderBusy`
        while another bake holds the folder, :class:`VbnfError` when the scene cannot be
        captured."""
        self._capture_plan = None
        check_free(self.work_dir)
        try:
            kept = read_state(self.work_dir)
        except BakeStateError:
            return start_over("the kept bake", "it is from another version")
        if kept is None or not kept.has_work:
            return ResumePlan()
        if not self._resume:
            return start_over(f"the kept {kept.summary()}", "a restart was asked for")
        self._capture_plan = plan_capture(
            self.scene, self.settings.capture, self._capture_objects()
        )
        views = self._capture_plan.kept_views(self.dataset_dir)
        return plan_resume(
            kept,
            self._new_state(ResumePlan()),  # this bake's settings, nothing done yet
            views_kept=views.count,
            views_change=views.change,
            checkpoint_exists=(self.run_dir / CHECKPOINT_NAME).is_file(),
        )

    def start(self, plan: ResumePlan | None = None, *, just_planned: bool = False) -> None:
        """Take the work folder, apply ``plan`` to it (by default :meth:`plan`'s), set the scene
        up for the capture, and start checking the interpreter.

        The capture reuses the cameras and record :meth:`plan` worked out only when nothing
        can have changed the scene since: when ``plan`` is None (planned here), or when the
        caller says so with ``just_planned`` (it called :meth:`plan` in the same call, with no
        confirmation asked in between); otherwise the capture plans again."""
        self._stage_started = time.monotonic()
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        self._interpreter = executor.submit(
            find_interpreter, self._python_preference, self.settings.device
        )
        executor.shutdown(wait=False)
        try:
            if plan is None:
                plan, just_planned = self.plan(), True
            capture_plan = self._capture_plan if just_planned else None
            self._capture_plan = None  # the scene may change before another start
            acquire_lock(self.work_dir)
            self._locked = True
            self._state = self._new_state(plan)
            self._resume_training = plan.resume_training
            self._warn(apply_plan(self.work_dir, plan, self._state))
            self.resume_note = plan.note(self._state)
            self._capture = self._stack.enter_context(
                CaptureJob(
                    self.scene,
                    self.dataset_dir,
                    self.settings.capture,
                    self._capture_objects(),
                    resume=plan.keep_views,
                    plan=capture_plan,
                )
            )
        except (VbnfError, OSError) as error:
            self._fail(str(error))
            return
        self.progress = BakeProgress(
            "capture",
            CAPTURE_SHARE * self._state.views_done / self._capture.total_views,
            self.resume_note or "preparing the capture",
        )

    def estimate(self, fresh: bool = False) -> Estimate:
        """What this bake will cost on this machine, before it starts: a training step timed
        in the training interpreter at these settings (remembered per machine and settings;
        ``fresh`` measures again) and two views of this scene rendered at these settings into
        a throw-away folder. Raises :class:`InterpreterError` when the interpreter cannot
        train, :class:`VbnfError` when the scene cannot be captured or measured."""
        settings = self.settings
        python = find_interpreter(self._python_preference, settings.device)
        step = step_cost(
            StepSettings(
                python,
                settings.device,
                settings.min_level,
                settings.max_level,
                settings.bitwidth,
                settings.batch_rays,
                settings.cpu_threads,
            ),
            fresh,
        )
        first_s, next_s = _view_seconds(self.scene, settings.capture, self._capture_objects())
        capture = settings.capture
        return estimate(
            step,
            next_s,
            capture_setup_s=max(0.0, first_s - next_s),
            epochs=settings.epochs,
            train_views=capture.train_views,
            test_views=capture.test_views,
            resolution_px=capture.resolution_px,
            levels=settings.max_level - settings.min_level + 1,
        )

    def _capture_objects(self) -> list[bpy.types.Object] | None:
        """What the capture frames: the caller's objects, or the scene less imported fields."""
        return self._objects if self._objects is not None else _scene_objects(self.scene)

    def _new_state(self, plan: ResumePlan) -> BakeState:
        """This bake's state, starting from what ``plan`` keeps."""
        capture = self.settings.capture
        return BakeState(
            training=self.settings.checkpoint_fingerprint(),
            epochs=self.settings.epochs,
            train_views=capture.train_views,
            test_views=capture.test_views,
            views_done=plan.views_kept,
            checkpoint_step=plan.checkpoint_step,
            steps_per_epoch=plan.steps_per_epoch,
        )

    def _save_state(self) -> None:
        assert self._state is not None
        self._warn(save_state(self.work_dir, self._state))

    def _warn(self, warning: str) -> None:
        """Report a failed write of the state once, not after every view."""
        if warning and warning != self._state_warning:
            print(f"VBNF warning: {warning}", file=sys.stderr)
        self._state_warning = warning

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
        assert self._interpreter is not None and self._state is not None
        if self._cancel_requested:
            self._finish("cancelled", "cancelled during the capture")
            return
        # Nothing renders before the interpreter is known to train: a missing package or GPU
        # must not cost a whole capture. A passed check is remembered: later bakes do not wait.
        concurrent.futures.wait([self._interpreter], timeout=INTERPRETER_WAIT_S)
        if not self._interpreter.done():
            self.progress.message = "checking the training interpreter"
            return
        python = self._interpreter.result()  # raises InterpreterError
        if self._capture is not None:
            if not self._capture.finished:  # a resumed capture may have nothing left to render
                report = self._capture.step()
                state = self._state
                state.views_done = report.views_done
                self._save_state()
                views = views_line(state.views_done, state.train_views, state.test_views)
                self.progress = BakeProgress(
                    "capture", CAPTURE_SHARE * report.fraction, f"capturing: {views}"
                )
            if self._capture.finished:
                self._stack.close()  # restores the scene
                self._capture = None
            return
        options = self.settings.train_options()
        if self._resume_training:
            options.append("--resume")
        command = train_command(python, self.dataset_dir, self.run_dir, options)
        self._time_stage("capture")
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
        self._record_checkpoint(status.checkpoint_step, status.steps_per_epoch)
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
        if self._cancel_requested:  # also when Ctrl-C reached the child before our signal
            self._finish("cancelled", "cancelled during training")
        elif code == 0 and status.asset is not None:
            atomic_write_bytes(self.asset_path, Path(status.asset).read_bytes())
            self._time_stage("train")
            self._write_report(status.level_psnr)
            self.progress.stage = "import" if self._import_into is not None else "done"
            self.progress.message = f"wrote {self.asset_path}"
            if self._import_into is None:
                self.progress.fraction = 1.0
        elif code == EXIT_CANCELLED:
            self._finish("cancelled", "interrupted during training")
        else:
            self._fail(training.failure_message())

    def _time_stage(self, stage: str) -> None:
        now = time.monotonic()
        self._times_s[stage] = round(now - self._stage_started, 2)
        self._stage_started = now

    def _write_report(self, level_psnr: dict[int, float]) -> None:
        """Keep what the trainer measured (its ``metrics.json``), the settings and the times
        beside the asset: the work folder, which holds ``metrics.json``, goes once the bake
        succeeds. A report that cannot be written is a warning: the asset is what counts."""
        try:
            metrics = json.loads((self.run_dir / METRICS_NAME).read_text())
        except (OSError, ValueError):
            metrics = {}
        self.quality_warning = quality_warning(level_psnr, metrics.get("constant_colour_psnr"))
        report = {
            "asset": self.asset_path.name,
            "settings": asdict(self.settings),
            "seconds": self._times_s,
            "resumed": self.resume_note,
            "warning": self.quality_warning,
            "metrics": metrics,
        }
        path = report_path_for(self.asset_path)
        try:
            atomic_write_bytes(path, json.dumps(report, indent=2).encode())
        except OSError as error:
            print(f"VBNF warning: cannot write {path} ({error.strerror})", file=sys.stderr)
            return
        self.report_path = path

    def _record_checkpoint(self, step: int | None, steps_per_epoch: int | None) -> None:
        """Note a checkpoint the trainer reported in the state, for the next bake to resume."""
        state = self._state
        assert state is not None
        if step is None or step == state.checkpoint_step:
            return
        state.checkpoint_step = step
        state.steps_per_epoch = steps_per_epoch
        self._save_state()

    def _import(self) -> None:
        assert self._import_into is not None
        if not compat.has_openvdb():  # Blender 4.2: the asset is the product, the preview waits
            self.preview_note = compat.NO_OPENVDB_LINE
            self.progress.stage, self.progress.fraction = "done", 1.0
            self.progress.message = f"baked {self.asset_path.name} (no preview)"
            return
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
        """Restore the scene and end the child, letting it write its checkpoint first (which
        the state then names); idempotent."""
        self._stack.close()
        self._capture = None
        training = self._training
        if training is not None and training.returncode is None:
            training.end(self.release_grace_s)
            status = training.status
            self._record_checkpoint(status.checkpoint_step, status.steps_per_epoch)

    def close(self) -> None:
        """Release everything, whatever state the bake is in; then keep the work folder for
        the next bake if the bake did not finish and the folder holds views or a checkpoint
        (``kept`` says what, as the state written now says), else remove it: the asset is the
        product. A folder the caller named keeps its dataset and run (the demo reads them) and
        loses only its state. A bake that never took the folder's lock leaves it alone."""
        self._release()
        if not self._locked:
            return
        state = self._state
        if self.stage != "done" and state is not None and state.has_work:
            self._save_state()
            self.kept = state.summary()
        release_lock(self.work_dir)
        self._locked = False
        if self.kept is not None:
            return
        if self.stage == "done" and self.settings.keep_dataset:
            self._keep_dataset()
        # A leftover folder costs disk space, not correctness: its state goes first.
        with contextlib.suppress(VbnfError, OSError):
            if self._owns_work_dir:
                discard(self.work_dir)
            else:
                (self.work_dir / STATE_NAME).unlink(missing_ok=True)

    def _keep_dataset(self) -> None:
        """Move the finished capture to ``<name>.dataset`` beside the asset, replacing the one
        an earlier bake kept there (a copy when the caller named the work folder)."""
        target = dataset_path_for(self.asset_path)
        try:
            shutil.rmtree(target, ignore_errors=True)
            if self._owns_work_dir:
                self.dataset_dir.replace(target)
            else:
                shutil.copytree(self.dataset_dir, target)
        except OSError as error:
            print(f"VBNF warning: cannot keep the dataset at {target} ({error})", file=sys.stderr)
            return
        self.dataset_kept = target

    def drive(self, on_progress: Callable[[BakeProgress], None] | None = None) -> None:
        """Bake to the end in this call (headless use); ``stage``, ``error`` and ``kept`` say
        how it ended. ``on_progress`` may call ``cancel()``; so does Ctrl-C, after which the
        trainer (which gets the same SIGINT) still writes its checkpoint."""
        try:
            self.start()
            while not self.finished:
                try:
                    progress = self.advance()
                    if on_progress is not None:
                        on_progress(progress)
                    if self.stage == "train":
                        time.sleep(TRAIN_POLL_INTERVAL_S)
                except KeyboardInterrupt:  # Ctrl-C: stop as Cancel does, so the work is kept
                    self.cancel()
        finally:
            self.close()

    def run(self, on_progress: Callable[[BakeProgress], None] | None = None) -> Path:
        """:meth:`drive`, then the asset path; raises :class:`BakeError` or
        :class:`BakeCancelled` if the bake did not succeed."""
        self.drive(on_progress)
        if self.stage == "cancelled":
            raise BakeCancelled(self.progress.message)
        if self.stage == "failed":
            raise BakeError(self.error or "the bake failed")
        return self.asset_path


def _view_seconds(
    scene: bpy.types.Scene,
    settings: CaptureSettings,
    objects: Sequence[bpy.types.Object] | None,
) -> tuple[float, float]:
    """Seconds the first and the second view of a capture take to render: the first also
    builds what later views reuse (the BVH is kept between views)."""
    probe = replace(settings, train_views=1, test_views=1)
    seconds = []
    with (
        tempfile.TemporaryDirectory(prefix="vbnf-estimate-") as folder,
        CaptureJob(scene, folder, probe, objects) as job,
    ):
        while not job.finished:
            started = time.monotonic()
            job.step()
            seconds.append(time.monotonic() - started)
    return seconds[0], seconds[1]


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
