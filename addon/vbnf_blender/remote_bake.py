"""A bake of one .blend file on a machine that shares no folder with the one that asked for it.

``batch.py bake --ray`` (``ray_bake.py``) sends each file to whichever node has room, so nothing
may travel as a path: a :class:`FileBake` carries the .blend's bytes, the settings and what an
earlier run kept of the file's work folder (``<asset>.vbnf.bake``, packed as a tar); the node
bakes it with the Bake button's own :class:`BakeJob` in a temporary folder and sends back a
:class:`FileResult` with the asset's bytes and the trainer's metrics, or, when the bake did not
finish, the work folder packed again. The machine that started the batch writes what comes
back into its output folder under the names ``batch.py bake`` uses, so a run with or without
Ray, or the Bake button, resumes what another kept.

Beside each asset it writes the bake's report (``<asset>.report.json``: the node's
:class:`BakeJob` report, with settings, stage times and the trainer's metrics, plus outcome,
wall time, node, tries and PSNR per level). The report also holds a digest of the .blend and
of the settings, which is how a rerun of the batch knows an asset is finished
(:func:`finished_report`) and skips it.

No Ray here: the node's side and the caller's side are plain functions, tested without it. An
external file the .blend links (a texture, a library) must be packed into it or exist at the
same path on every node; only the .blend itself travels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import socket
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .bake_job import BakeJob, BakeProgress, BakeSettings, asset_path_for, report_path_for
from .engine import METRICS_NAME, VbnfError, atomic_write_bytes
from .work_folder import (
    LOCK_NAME,
    STATE_NAME,
    acquire_lock,
    clear,
    discard,
    release_lock,
    work_dir_for,
)

REPORT_VERSION = 1
# Settings that change how fast a bake runs, not what it makes: a rerun on other hardware
# still finds the asset finished.
SPEED_SETTINGS = ("device", "cpu_threads")


@dataclass(frozen=True)
class FileBake:
    """One .blend to bake, as it travels to a node: bytes, not paths."""

    blend_name: str
    blend_bytes: bytes
    settings: BakeSettings
    python: str = ""  # the trainer's Python on the node ("": the node's own)
    restart: bool = False
    kept_work: bytes | None = None  # an earlier run's work folder, see :func:`pack_work`


@dataclass(frozen=True)
class FileResult:
    """How one bake on a node ended, with everything the caller writes into its folder.

    ``work`` says what becomes of the caller's work folder: ``kept`` (``kept_work`` replaces
    it), ``spent`` (the bake used it up or dropped it: remove it) or ``untouched`` (the bake
    never got to it, as when the .blend cannot be opened).
    """

    blend_name: str
    outcome: str  # done, failed, cancelled
    seconds: float
    host: str
    message: str = ""  # why it did not finish; what it did of the kept work
    resume_note: str = ""
    asset: bytes | None = None
    metrics: dict[str, Any] | None = None
    bake_report: dict[str, Any] | None = None  # what the node's BakeJob wrote beside the asset
    work: str = "untouched"
    kept_work: bytes | None = None
    kept: str = ""  # what ``kept_work`` holds: "3/8 views, epoch 1/2"

    @property
    def level_psnr(self) -> dict[int, float]:
        levels = (self.metrics or {}).get("levels", [])
        return {int(level["level"]): float(level["psnr"]) for level in levels}


def bake_file(request: FileBake, should_stop: Callable[[BakeProgress], bool]) -> FileResult:
    """Bake ``request`` in a temporary folder on this machine (the node's side).

    ``should_stop`` sees every progress report and returns True to stop the bake as Cancel
    does; the work is then packed into the result.
    """
    from . import batch  # bpy's file opening with its one-line errors; not needed by callers

    started = time.monotonic()
    host = socket.gethostname()
    with tempfile.TemporaryDirectory(prefix="vbnf-bake-") as folder:
        blend = Path(folder) / request.blend_name
        blend.write_bytes(request.blend_bytes)
        asset = asset_path_for(str(blend), str(Path(folder) / "out"), "")
        work_dir = work_dir_for(asset)
        try:
            scene = batch._load_scene(blend)
            if request.kept_work is not None:
                unpack_work(request.kept_work, work_dir)
        except (batch.UsageError, VbnfError, OSError) as error:
            message = str(error).replace(str(blend), request.blend_name)
            return FileResult(
                request.blend_name, "failed", time.monotonic() - started, host, message
            )
        threads = request.settings.cpu_threads
        if threads is not None:  # Cycles takes every core unless told: share them as asked
            scene.render.threads_mode, scene.render.threads = "FIXED", threads
        # A named work folder keeps the run (and its metrics) after success.
        job = BakeJob(
            scene,
            request.settings,
            asset,
            python=request.python,
            work_dir=work_dir,
            resume=not request.restart,
        )

        def on_progress(progress: BakeProgress) -> None:
            if should_stop(progress):
                job.cancel()

        job.drive(on_progress)
        seconds = time.monotonic() - started
        if job.stage == "done":
            metrics = json.loads((job.run_dir / METRICS_NAME).read_text(encoding="utf-8"))
            bake_report = None
            if job.report_path is not None:
                bake_report = json.loads(job.report_path.read_text(encoding="utf-8"))
            return FileResult(
                request.blend_name,
                "done",
                seconds,
                host,
                resume_note=job.resume_note,
                asset=asset.read_bytes(),
                metrics=metrics,
                bake_report=bake_report,
                work="spent",
            )
        message = (
            (job.error or "the bake failed") if job.stage == "failed" else job.progress.message
        )
        return FileResult(
            request.blend_name,
            job.stage,
            seconds,
            host,
            message,
            resume_note=job.resume_note,
            work="kept" if job.kept else "spent",
            kept_work=pack_work(work_dir) if job.kept else None,
            kept=job.kept or "",
        )


def pack_work(work_dir: Path) -> bytes:
    """The work folder as an uncompressed tar (its EXR views are compressed already), without
    its lock, and with the state last, so that an unpacking cut short never looks resumable."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(work_dir.rglob("*")):
            name = path.relative_to(work_dir).as_posix()
            if path.is_file() and name not in (LOCK_NAME, STATE_NAME):
                archive.add(path, name)
        if (work_dir / STATE_NAME).is_file():
            archive.add(work_dir / STATE_NAME, STATE_NAME)
    return buffer.getvalue()


def unpack_work(data: bytes, work_dir: Path) -> None:
    """Replace what a work folder holds with :func:`pack_work`'s tar (its lock stays)."""
    clear(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
            archive.extractall(work_dir, filter="data")
    except tarfile.TarError as error:
        raise VbnfError(f"the kept work that came back is damaged ({error})", work_dir) from error


@dataclass(frozen=True)
class BatchFile:
    """One file of a batch on the side of the machine that started it: where its asset,
    report and work folder go, and what identifies this bake of it."""

    blend: Path
    asset: Path
    blend_bytes: bytes
    settings: BakeSettings

    @classmethod
    def read(cls, blend: Path, output_dir: Path, settings: BakeSettings) -> BatchFile:
        """Raises :class:`VbnfError` when the file cannot be read."""
        try:
            data = blend.read_bytes()
        except OSError as error:
            raise VbnfError(f"cannot read the .blend file ({error.strerror})", blend) from error
        return cls(
            blend, asset_path_for(str(blend.absolute()), str(output_dir), ""), data, settings
        )

    @property
    def work_dir(self) -> Path:
        return work_dir_for(self.asset)

    @property
    def report_path(self) -> Path:
        return report_path_for(self.asset)

    def fingerprint(self) -> dict[str, Any]:
        """What the asset depends on: the .blend's bytes and the settings, less those that
        only change the speed."""
        settings = dataclasses.asdict(self.settings)
        for name in SPEED_SETTINGS:
            settings.pop(name)
        return {"blend_sha256": hashlib.sha256(self.blend_bytes).hexdigest(), "settings": settings}

    def request(self, python: str, restart: bool) -> FileBake:
        """What the node needs, with the work this machine kept of an earlier run. Takes the
        work folder's lock, held until :meth:`store` (or :meth:`release`): a Bake button on
        this machine must not change the folder while a node works from a copy of it."""
        acquire_lock(self.work_dir)
        kept = None
        if not restart and (self.work_dir / STATE_NAME).is_file():
            kept = pack_work(self.work_dir)
        return FileBake(self.blend.name, self.blend_bytes, self.settings, python, restart, kept)

    def finished_report(self) -> dict[str, Any] | None:
        """The report of an earlier bake whose asset is still there and was made from this
        very .blend with these settings (None: bake it)."""
        try:
            report = json.loads(self.report_path.read_text(encoding="utf-8"))
            asset_digest = hashlib.sha256(self.asset.read_bytes()).hexdigest()
        except (OSError, ValueError):
            return None
        same = (
            isinstance(report, dict)
            and report.get("format_version") == REPORT_VERSION
            and report.get("fingerprint") == self.fingerprint()
            and report.get("asset_sha256") == asset_digest
        )
        return report if same else None

    def store(self, result: FileResult, tries: int) -> None:
        """Write what came back: the asset, then its report (a report names a whole asset);
        or the work the node kept, in place of this machine's copy; then free the folder."""
        if result.outcome == "done":
            assert result.asset is not None
            atomic_write_bytes(self.asset, result.asset)
            report = {
                **(result.bake_report or {}),
                "format_version": REPORT_VERSION,
                "blend": self.blend.name,
                "fingerprint": self.fingerprint(),
                "asset_sha256": hashlib.sha256(result.asset).hexdigest(),
                "outcome": result.outcome,
                "wall_seconds": round(result.seconds, 2),
                "host": result.host,
                "tries": tries,
                "resume_note": result.resume_note,
                "level_psnr": result.level_psnr,
                "metrics": result.metrics,
            }
            atomic_write_bytes(self.report_path, json.dumps(report, indent=2).encode())
        if result.work == "kept":
            assert result.kept_work is not None
            unpack_work(result.kept_work, self.work_dir)
        self.release()
        if result.work == "spent":
            with contextlib.suppress(VbnfError, OSError):  # leftover space, not a wrong result
                discard(self.work_dir)

    def release(self) -> None:
        """Free the work folder, and remove it when the lock was all it held."""
        release_lock(self.work_dir)
        with contextlib.suppress(OSError):
            self.work_dir.rmdir()  # fails, as it should, unless empty
