"""The Bake Neural Field button (``vbnf.bake``), its Cancel button (``vbnf.bake_cancel``) and
the Discard button (``vbnf.bake_discard``) for the work an interrupted bake kept.

Invoked from the interface the operator is modal: a window-manager timer calls
``BakeJob.advance()`` and every other event passes through, so Blender stays usable while the
capture renders view by view and the subprocess trains. Progress goes to the cursor progress
bar, the status bar and the panel (through ``WindowManager.vbnf_bake_status``). Esc or the
panel's Cancel button stop the bake between views or by signalling the trainer; what was done is
kept beside the asset, and the next Bake of the same asset resumes it (``work_folder.py``).
When the next Bake cannot reuse kept work (the scene or the settings changed), it says what it
would drop and why, and bakes only once the user confirms ("Bake Anew"); Blender then calls
``execute``, which goes on with the job ``invoke`` planned.

Called from Python (``bpy.ops.vbnf.bake()``), including under ``blender -b`` where timers never
fire, ``execute`` runs the same job to the end in the call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy

from .bake_job import (
    BakeError,
    BakeJob,
    BakeProgress,
    asset_path_for,
    bake_settings,
    level_psnr_line,
)
from .engine import VbnfError
from .preferences import python_preference
from .work_folder import ResumePlan, discard, kept_description, lock_holder, work_dir_for

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems, WmReportItems

TIMER_INTERVAL_S = 0.1


def scene_asset_path(scene: Any) -> Path:
    """Where the Bake button writes the scene's asset (raises :class:`BakeError` while that is
    not known: an unsaved .blend and no output folder)."""
    return asset_path_for(bpy.data.filepath, scene.vbnf_bake.output_dir, scene.name)


def make_job(context: bpy.types.Context) -> BakeJob:
    scene: Any = context.scene
    props = scene.vbnf_bake
    objects = None
    if props.target == "SELECTION":
        objects = list(context.selected_objects)
        if not objects:
            raise BakeError("nothing is selected: select objects or set Target to Scene")
    return BakeJob(
        scene,
        bake_settings(props),
        scene_asset_path(scene),
        python=python_preference(context),
        objects=objects,
        import_into=scene.collection,
    )


def estimate_fingerprint(context: bpy.types.Context) -> str:
    """What an estimate was made for: the bake settings, target and interpreter. The panel
    shows an estimate only while these are unchanged."""
    props: Any = context.scene.vbnf_bake  # type: ignore[union-attr]
    return repr((bake_settings(props), props.target, python_preference(context)))


def kept_work_dir(scene: Any) -> Path | None:
    """The work folder an interrupted bake of the scene's asset left, if there is one."""
    try:
        work_dir = work_dir_for(scene_asset_path(scene))
    except BakeError:
        return None
    return work_dir if work_dir.is_dir() else None


def status_line(progress: BakeProgress) -> str:
    """One line for the status bar: stage, epoch, PSNR and time left as far as known."""
    parts = [progress.message, *progress.details()]
    return f"VBNF {progress.fraction:.0%}: " + ", ".join(parts) + " (Esc to cancel)"


def show_progress(context: bpy.types.Context, progress: BakeProgress) -> None:
    window_manager: Any = context.window_manager
    status = window_manager.vbnf_bake_status
    status.stage = progress.stage
    status.message = progress.message
    status.fraction = progress.fraction
    status.epoch = progress.epoch or 0
    status.psnr = progress.psnr or 0.0
    status.seconds_left = -1.0 if progress.seconds_left is None else progress.seconds_left
    window_manager.progress_update(progress.fraction)
    if context.workspace is not None:
        context.workspace.status_text_set(status_line(progress))
    for area in context.screen.areas if context.screen is not None else []:
        if area.type == "VIEW_3D":
            area.tag_redraw()


def outcome_report(job: BakeJob) -> tuple[set[WmReportItems], str]:
    """The report type and text for how a finished bake ended: what it resumed from, and after
    a cancel or failure what it kept for the next Bake."""
    resumed = f", {job.resume_note}" if job.resume_note else ""
    kept = f". Kept {job.kept}: press Bake again to resume" if job.kept else ""
    if job.stage == "failed":
        return {"ERROR"}, f"Bake failed: {job.error}{kept}"
    if job.stage == "cancelled":
        return {"WARNING"}, f"Bake {job.progress.message}{kept}"
    scores = level_psnr_line(job.progress.level_psnr)
    size = job.asset_path.stat().st_size
    text = f"Baked {job.asset_path} ({size} bytes{f', {scores}' if scores else ''}{resumed})"
    warnings = [note for note in (job.quality_warning, job.preview_note) if note]
    if warnings:
        return {"WARNING"}, f"{text}. Warning: {'; '.join(warnings)}"
    return {"INFO"}, text


def start_over_question(plan: ResumePlan) -> dict[str, str]:
    """The confirmation the Bake button asks before it drops kept work, as
    ``WindowManager.invoke_confirm`` keywords."""
    return {
        "title": "Kept Bake Cannot Resume",
        "message": f"Baking now drops {plan.dropped}: {plan.reason}.",
        "confirm_text": "Bake Anew",
        "icon": "WARNING",
    }


def discard_question(work_dir: Path) -> dict[str, str]:
    """The Discard button's confirmation, as ``WindowManager.invoke_confirm`` keywords."""
    return {
        "title": "Discard Kept Bake",
        "message": f"Delete {kept_description(work_dir)}? The next Bake starts over.",
        "confirm_text": "Discard",
        "icon": "WARNING",
    }


def _status(context: bpy.types.Context) -> Any:
    """The running bake's status (``WindowManager.vbnf_bake_status``)."""
    return context.window_manager.vbnf_bake_status  # type: ignore[union-attr]


class VBNF_OT_bake(bpy.types.Operator):  # noqa: N801  # Blender's naming
    """Capture the scene or selection with Cycles, train a compressed neural field in a \
separate process and import it as a volume"""

    bl_idname = "vbnf.bake"
    bl_label = "Bake Neural Field"
    bl_options = {"REGISTER"}  # noqa: RUF012  # Blender reads a set

    _job: BakeJob | None = None
    _plan: ResumePlan | None = None  # what invoke decided the job keeps
    _timer: bpy.types.Timer | None = None

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _status(context).running:
            cls.poll_message_set("A bake is already running")
            return False
        return context.scene is not None

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        """After the confirmation ``invoke`` asked for: bake in the background as planned.
        Called from Python (``bpy.ops.vbnf.bake()``): bake to the end in this call, dropping
        what cannot be reused (the report says what)."""
        if self._job is not None:
            return self._begin_modal(context)
        try:
            job = make_job(context)
        except VbnfError as error:
            self.report({"ERROR"}, f"Bake failed: {error}")
            return {"CANCELLED"}
        try:
            job.drive(on_progress=lambda progress: show_progress(context, progress))
        finally:
            self._end_progress(context)
        return self._report_outcome(job)

    def invoke(
        self, context: bpy.types.Context, event: bpy.types.Event
    ) -> set[OperatorReturnItems]:
        """Plan the bake; if it would drop kept work, ask first (the work may be many minutes
        of rendering and training), else start it."""
        try:
            job = make_job(context)
            plan = job.plan()
        except VbnfError as error:
            self.report({"ERROR"}, f"Bake failed: {error}")
            return {"CANCELLED"}
        self._job, self._plan = job, plan
        if plan.dropped:
            window_manager: Any = context.window_manager
            return window_manager.invoke_confirm(self, event, **start_over_question(plan))
        return self._begin_modal(context, just_planned=True)

    def _begin_modal(
        self, context: bpy.types.Context, just_planned: bool = False
    ) -> set[OperatorReturnItems]:
        """Start the planned job and hand it to the timer. ``just_planned``: planned in this
        call, so the scene is as planned; after a confirmation it may not be, and the capture
        plans again."""
        job = self._job
        assert job is not None
        with _released_on_error(self, context):
            job.start(self._plan, just_planned=just_planned)
            if job.finished:
                return self._finish(context, job)
            window_manager: Any = context.window_manager
            status = window_manager.vbnf_bake_status
            status.running, status.cancel_requested = True, False
            window_manager.progress_begin(0.0, 1.0)
            self._timer = window_manager.event_timer_add(TIMER_INTERVAL_S, window=context.window)
            window_manager.modal_handler_add(self)
            show_progress(context, job.progress)
            return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        job = self._job
        assert job is not None
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":  # (any timer: an extra tick only polls sooner)
            return {"PASS_THROUGH"}
        if _status(context).cancel_requested:
            job.cancel()
        with _released_on_error(self, context):
            show_progress(context, job.advance())
            if job.finished:
                return self._finish(context, job)
            return {"PASS_THROUGH"}

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the operator (a file is loaded, the window closes, the confirmation
        is dismissed): stop everything; a job that never started leaves the folder alone."""
        if self._job is not None:
            self._job.close()
        self._end_progress(context)

    def _finish(self, context: bpy.types.Context, job: BakeJob) -> set[OperatorReturnItems]:
        job.close()
        self._end_progress(context)
        return self._report_outcome(job)

    def _report_outcome(self, job: BakeJob) -> set[OperatorReturnItems]:
        """Report how the finished job ended; the operator's result for it."""
        report_type, text = outcome_report(job)
        self.report(report_type, text)
        return {"FINISHED"} if job.stage == "done" else {"CANCELLED"}

    def _end_progress(self, context: bpy.types.Context) -> None:
        window_manager: Any = context.window_manager
        if self._timer is not None:
            window_manager.event_timer_remove(self._timer)
            self._timer = None
        window_manager.progress_end()
        status = window_manager.vbnf_bake_status
        status.running = status.cancel_requested = False
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        self._job = None


@contextlib.contextmanager
def _released_on_error(operator: Any, context: bpy.types.Context) -> Iterator[None]:
    """An exception escaping ``invoke``/``modal`` ends the operator without Blender calling
    ``cancel()``: release the job (the scene, the trainer, the work folder's lock, which would
    otherwise block every later bake of the asset until Blender restarts) and the progress
    display, then let the exception reach Blender's report."""
    try:
        yield
    except BaseException:
        if operator._job is not None:
            operator._job.close()
        operator._end_progress(context)
        raise


class VBNF_OT_bake_cancel(bpy.types.Operator):  # noqa: N801
    """Stop the running bake (training writes a checkpoint before it exits)"""

    bl_idname = "vbnf.bake_cancel"
    bl_label = "Cancel Bake"
    bl_options = {"INTERNAL"}  # noqa: RUF012

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return bool(_status(context).running)

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        _status(context).cancel_requested = True
        return {"FINISHED"}


class VBNF_OT_bake_discard(bpy.types.Operator):  # noqa: N801
    """Delete the views and training checkpoint an interrupted bake kept, so that the next \
bake starts over"""

    bl_idname = "vbnf.bake_discard"
    bl_label = "Discard Kept Bake"
    bl_options = {"INTERNAL"}  # noqa: RUF012

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _status(context).running:
            cls.poll_message_set("A bake is running")
            return False
        work_dir = kept_work_dir(context.scene)
        if work_dir is None:
            return False
        holder = lock_holder(work_dir)
        if holder is not None:
            cls.poll_message_set(f"A bake in {holder} is using the kept work")
            return False
        return True

    def invoke(
        self, context: bpy.types.Context, event: bpy.types.Event
    ) -> set[OperatorReturnItems]:
        """Ask first: the kept work may be many minutes of rendering and training."""
        work_dir = kept_work_dir(context.scene)
        assert work_dir is not None  # poll
        window_manager: Any = context.window_manager
        return window_manager.invoke_confirm(self, event, **discard_question(work_dir))

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        work_dir = kept_work_dir(context.scene)
        assert work_dir is not None  # poll
        try:
            discard(work_dir)  # refused while a bake holds the folder
        except VbnfError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Discarded the kept bake in {work_dir}")
        return {"FINISHED"}


class VBNF_OT_bake_estimate(bpy.types.Operator):  # noqa: N801
    """Estimate how long the bake takes on this machine: times a few training steps at these \
settings (remembered per machine and settings) and renders two views of the scene"""

    bl_idname = "vbnf.bake_estimate"
    bl_label = "Estimate Bake Time"
    bl_options = {"INTERNAL"}  # noqa: RUF012

    fresh: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Measure Again",
        description="Time the training steps again instead of using the remembered figure",
        default=False,
    )

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        if _status(context).running:
            cls.poll_message_set("A bake is running")
            return False
        return context.scene is not None

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        window: Any = context.window
        if window is not None:
            window.cursor_modal_set("WAIT")
        try:
            estimate = make_job(context).estimate(fresh=self.fresh)
        except VbnfError as error:
            self.report({"ERROR"}, f"Estimate failed: {error}")
            return {"CANCELLED"}
        finally:
            if window is not None:
                window.cursor_modal_restore()
        status = _status(context)
        status.estimate_line = f"Bake takes {estimate.line()}"
        status.estimate_for = estimate_fingerprint(context)
        self.report({"INFO"}, status.estimate_line)
        return {"FINISHED"}


CLASSES = (VBNF_OT_bake, VBNF_OT_bake_cancel, VBNF_OT_bake_discard, VBNF_OT_bake_estimate)
register, unregister = bpy.utils.register_classes_factory(CLASSES)
