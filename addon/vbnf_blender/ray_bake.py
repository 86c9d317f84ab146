"""``batch.py bake FILES -o OUT_DIR --ray [ADDRESS]``: one Ray task per .blend file.

Ray (``ray`` on the package index) runs the same code on one machine or on a cluster, so the
batch schedules nothing itself: each file is a task asking for ``--threads`` CPUs (default
:data:`DEFAULT_TASK_CPUS`), or for one GPU with ``--device cuda``, and Ray places as many as the
cluster holds. Without an ADDRESS Ray's own rule applies: ``RAY_ADDRESS``, else a cluster
started on this machine with ``ray start``, else a new local instance for this batch.

What travels and where results land is ``remote_bake.py``: the .blend's bytes and the kept work
go to the node, the asset, its report or the work kept for a resume come back into OUT_DIR on
this machine; no folder is shared. The project's code travels with the job (Ray's
``runtime_env`` ``py_modules``: this package and the engine); bpy, torch and the rest must be
installed on every node (a pre-built environment, as ``requirements.txt`` pins it). As the
batch starts each node is checked for them (while the first bakes start), and a node that lacks
one ends the batch in one line.

Faults: a task that crashes, or whose node or worker dies, is sent again (``--retries`` times,
from the work this machine holds) while the others go on; a bake that fails in its own words
(a scene with nothing to capture) is reported at once, as a rerun would fail alike. Ctrl-C
asks every running bake to stop as Cancel does and waits up to :data:`STOP_GRACE_S` for the
work each kept (a second Ctrl-C, or the end of the wait, cancels what is left); the next run
resumes it. A rerun skips the files whose asset is finished (``remote_bake.finished_report``).

Only this module imports Ray, and only ``batch.py bake --ray`` imports this module.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .engine import ENGINE_ROOT, VbnfError

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as _error:
    raise VbnfError(
        "--ray needs Ray on this machine: python -m pip install ray (see requirements.txt)"
    ) from _error

if TYPE_CHECKING:
    from .bake_job import BakeProgress, BakeSettings
    from .remote_bake import BatchFile, FileBake, FileResult

# CPUs a CPU bake asks for unless --threads says: Cycles and torch share them.
DEFAULT_TASK_CPUS = 2
DEFAULT_RETRIES = 2
# A node's first check imports bpy and torch and may unpack the project: minutes, at worst.
NODE_CHECK_TIMEOUT_S = 600.0
# How long Ctrl-C waits for the running bakes to stop and send back their work: the trainer
# takes up to its stop grace (10 s) to write its checkpoint.
STOP_GRACE_S = 30.0
POLL_INTERVAL_S = 0.5
REPORT_INTERVAL_S = 1.0


class RayBatchError(VbnfError):
    """The batch cannot run on the cluster (unreachable, or a node that cannot bake)."""


def bake_on_ray(
    blends: Sequence[Path],
    output_dir: Path,
    settings: BakeSettings,
    options: RayOptions,
    show: Callable[[str], None],
) -> BatchReport:
    """Bake ``blends`` as Ray tasks into ``output_dir``; ``show`` draws the batch's progress
    line. Returns every file's row, also after Ctrl-C (``stopped`` is then True)."""
    settings = dataclasses.replace(settings, cpu_threads=options.cpus)
    report = BatchReport(levels=list(range(settings.min_level, settings.max_level + 1)))
    files = _read_files(blends, output_dir, settings, report)
    if not options.restart:
        files = [file for file in files if not _skip_finished(file, report)]
    if not files:
        return report
    try:
        where = "a local Ray instance" if options.address is None else options.address
        show(f"ray bake: connecting to {where}")
        _connect(options.address)
        try:
            _Batch(files, options, report, show, _NodeChecks(options, show)).run()
        except ray.exceptions.RayError as error:  # the cluster itself failed
            raise RayBatchError(f"the Ray cluster failed ({_one_line(error)})") from error
        finally:
            ray.shutdown()
    except KeyboardInterrupt:  # before any bake started: nothing to take back
        report.stopped = True
        named = {row.name for row in report.rows}
        report.rows += [
            FileRow(f.blend.name, "not started") for f in files if f.blend.name not in named
        ]
    order = {blend.name: index for index, blend in enumerate(blends)}
    report.rows.sort(key=lambda row: order[row.name])
    return report


@dataclass(frozen=True)
class RayOptions:
    """``--ray ADDRESS`` and what goes with it on the command line."""

    address: str | None  # None: Ray's own rule (module docstring)
    device: str
    cpus: int
    python: str = ""
    restart: bool = False
    retries: int = DEFAULT_RETRIES

    @property
    def gpus(self) -> int:
        return 1 if self.device == "cuda" else 0


@dataclass
class FileRow:
    """One line of the summary table."""

    name: str
    outcome: str  # done, skipped, failed, cancelled, not started
    tries: int = 0
    seconds: float = 0.0
    host: str = ""
    level_psnr: dict[int, float] = field(default_factory=dict)
    message: str = ""


@dataclass
class BatchReport:
    """Every file's row, in the order given, and whether Ctrl-C stopped the batch."""

    levels: list[int]
    rows: list[FileRow] = field(default_factory=list)
    stopped: bool = False

    @property
    def failed(self) -> list[str]:
        return [row.name for row in self.rows if row.outcome == "failed"]

    def table(self) -> str:
        """The summary: outcome, tries, time, node and held-out PSNR (dB) per level."""
        header = ["file", "outcome", "tries", "time", "node", *(f"L{n} dB" for n in self.levels)]
        lines = [header]
        for row in self.rows:
            psnr = [f"{row.level_psnr[n]:.2f}" if n in row.level_psnr else "-" for n in self.levels]
            time_s = f"{row.seconds:.0f} s" if row.tries else "-"
            tries = str(row.tries) if row.tries else "-"
            lines.append([row.name, row.outcome, tries, time_s, row.host or "-", *psnr])
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )

    def notes(self) -> list[str]:
        """What the finished bakes made of earlier work ("resumed from 3/8 views")."""
        return [
            f"{row.name}: {row.message}"
            for row in self.rows
            if row.outcome == "done" and row.message
        ]

    def problems(self) -> list[str]:
        """One line for each file that did not finish, saying why and what was kept."""
        return [
            f"error: {row.name}: {row.message}"
            for row in self.rows
            if row.outcome in ("failed", "cancelled") and row.message
        ]

    def verdict(self) -> str:
        """The last line of a batch that did not bake everything ("" when it did)."""
        failed = self.failed
        if self.stopped:
            return "stopped: run the same command again to resume the unfinished files"
        if failed:
            return f"{len(failed)} of {len(self.rows)} files failed: {', '.join(failed)}"
        return ""


def _read_files(
    blends: Sequence[Path], output_dir: Path, settings: BakeSettings, report: BatchReport
) -> list[BatchFile]:
    """The files to bake; one that cannot be read is a failed row. Two files that would write
    the same asset end the batch before anything runs."""
    from .remote_bake import BatchFile

    files: list[BatchFile] = []
    for blend in blends:
        if not blend.is_file():
            report.rows.append(FileRow(blend.name, "failed", message="no such .blend file"))
            continue
        try:
            file = BatchFile.read(blend, output_dir, settings)
        except VbnfError as error:
            report.rows.append(FileRow(blend.name, "failed", message=str(error)))
            continue
        twin = next((other for other in files if other.asset == file.asset), None)
        if twin is not None:
            raise RayBatchError(f"{twin.blend} and {blend} would both write {file.asset}")
        files.append(file)
    return files


def _skip_finished(file: BatchFile, report: BatchReport) -> bool:
    finished = file.finished_report()
    if finished is None:
        return False
    psnr = {int(level): float(value) for level, value in finished["level_psnr"].items()}
    report.rows.append(FileRow(file.blend.name, "skipped", level_psnr=psnr, message="finished"))
    return True


def _connect(address: str | None) -> None:
    """Join the cluster (or start a local instance), shipping the project's code with the job:
    this package, and the engine beside it unless the package vendors it."""
    package_dir = Path(__file__).resolve().parent
    modules = [str(package_dir)]
    if package_dir != ENGINE_ROOT:
        modules.append(str(ENGINE_ROOT / "core"))
    local = address is None
    try:
        ray.init(
            address=address,
            runtime_env={"py_modules": modules},
            log_to_driver=False,  # Blender's render log stays in the workers' log files
            logging_level=logging.WARNING,
            include_dashboard=False,  # only read when a local instance starts
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        where = "a local Ray instance" if local else f"the Ray cluster at {address}"
        raise RayBatchError(f"cannot reach {where} ({_one_line(error)})") from error


class _NodeChecks:
    """Every node asked, once, whether it can bake (bpy of this machine's version, the engine,
    a Python that trains). The checks run while the first bakes start (a cold node takes
    seconds to import bpy and torch); a node that cannot bake ends the batch as soon as its
    answer comes. Raises at once when no node has the CPUs (and GPU) a bake asks for."""

    def __init__(self, options: RayOptions, show: Callable[[str], None]) -> None:
        import bpy

        nodes = [node for node in ray.nodes() if node.get("Alive")]
        if not any(_fits(node["Resources"], options) for node in nodes):
            gpu = " and a GPU" if options.gpus else ""
            raise RayBatchError(
                f"no node of the cluster has {options.cpus} CPUs{gpu} for a bake; lower --threads"
            )
        show(f"ray bake: checking what {len(nodes)} node(s) can import")
        self.pending = {
            _node_problem.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(options.python, options.device, bpy.app.version_string): node[
                "NodeManagerAddress"
            ]
            for node in nodes
        }
        self.deadline_s = time.monotonic() + NODE_CHECK_TIMEOUT_S

    def raise_problem(self, wait_s: float = 0.0) -> None:
        """Raise :class:`RayBatchError` for the first node that answered that it cannot bake,
        or that has not answered in time; waits up to ``wait_s`` for the answers."""
        if not self.pending:
            return
        ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=wait_s)
        for check in ready:
            host = self.pending.pop(check)
            try:
                problem = ray.get(check)
            except ray.exceptions.RayError as error:
                problem = _one_line(error)
            if problem:
                raise RayBatchError(f"node {host} cannot bake: {problem}")
        if self.pending and time.monotonic() > self.deadline_s:
            host = next(iter(self.pending.values()))
            raise RayBatchError(
                f"node {host} cannot bake: its check gave no answer in {NODE_CHECK_TIMEOUT_S:.0f} s"
            )


def _fits(resources: dict[str, float], options: RayOptions) -> bool:
    cpus_ok = resources.get("CPU", 0.0) >= options.cpus
    return cpus_ok and resources.get("GPU", 0.0) >= options.gpus


@ray.remote(num_cpus=0, max_retries=0)
def _node_problem(python: str, device: str, blender_version: str) -> str:
    """What this node lacks to bake ("" when nothing): run on each node as the batch starts."""
    try:
        import bpy
    except ImportError as error:
        return f"cannot import bpy ({error})"
    if bpy.app.version_string != blender_version:
        return f"it has Blender {bpy.app.version_string}, this machine {blender_version}"
    try:
        from .interpreter import interpreter_problem
    except ImportError as error:
        return f"cannot import the engine ({error})"
    return interpreter_problem(python or sys.executable, device) or ""


@ray.remote(num_cpus=0)
class _Monitor:
    """Where the tasks report progress and learn that the batch is stopping."""

    def __init__(self) -> None:
        self._progress: dict[str, float] = {}
        self._stopping = False

    def report(self, name: str, fraction: float) -> bool:
        """Note a bake's progress; True asks it to stop."""
        self._progress[name] = fraction
        return self._stopping

    def forget(self, name: str) -> None:
        self._progress.pop(name, None)

    def progress(self) -> dict[str, float]:
        return dict(self._progress)

    def stop(self) -> None:
        self._stopping = True


@ray.remote(max_retries=0)
def _bake_task(request: FileBake, monitor: Any) -> FileResult:
    """One file on whichever node Ray chose; progress goes to ``monitor`` once a second."""
    from .remote_bake import bake_file

    last_report_s = -REPORT_INTERVAL_S
    stopping = ray.get(monitor.report.remote(request.blend_name, 0.0))

    def should_stop(progress: BakeProgress) -> bool:
        nonlocal last_report_s, stopping
        now = time.monotonic()
        if not stopping and now - last_report_s >= REPORT_INTERVAL_S:
            last_report_s = now
            stopping = ray.get(monitor.report.remote(request.blend_name, progress.fraction))
        return stopping

    return bake_file(request, should_stop)


@dataclass
class _InFlight:
    file: BatchFile
    request: FileBake
    tries: int
    row: FileRow


class _Batch:
    """The scheduling loop: submit while the cluster has room, collect, retry, draw."""

    def __init__(
        self,
        files: list[BatchFile],
        options: RayOptions,
        report: BatchReport,
        show: Callable[[str], None],
        checks: _NodeChecks,
    ) -> None:
        self.queued = list(files)
        self.checks = checks
        self.options = options
        self.report = report
        self.show = show
        self.total = len(files)
        self.rows: list[FileRow] = []  # of the files submitted so far
        self.in_flight: dict[Any, _InFlight] = {}
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.monitor = _Monitor.options(scheduling_strategy=here).remote()  # type: ignore[attr-defined]
        self.started_s = time.monotonic()

    def run(self) -> None:
        try:
            while self.queued or self.in_flight:
                self.checks.raise_problem()
                self._submit()
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=POLL_INTERVAL_S)
                for ref in ready:
                    self._collect(ref)
                self._draw()
            if any(row.outcome == "failed" for row in self.rows):  # a node may say why
                self.checks.raise_problem(max(0.0, self.checks.deadline_s - time.monotonic()))
        except KeyboardInterrupt:
            self._stop()
        except RayBatchError:  # a node cannot bake: what runs was started in vain
            self._cancel_in_flight("cancelled: the batch ended")
            raise

    def _slots(self) -> int:
        """Bakes the cluster holds at once (it may grow or shrink while the batch runs)."""
        resources = ray.cluster_resources()
        if self.options.gpus:
            return max(1, int(resources.get("GPU", 0.0)))
        return max(1, int(resources.get("CPU", 0.0) // self.options.cpus))

    def _submit(self) -> None:
        slots = self._slots() if self.queued else 0
        while self.queued and len(self.in_flight) < slots:
            file = self.queued.pop(0)
            row = FileRow(file.blend.name, "running")
            self.report.rows.append(row)
            self.rows.append(row)
            try:
                request = file.request(self.options.python, self.options.restart)
            except VbnfError as error:  # its work folder is busy or unreadable
                row.outcome, row.message = "failed", str(error)
                continue
            self._send(_InFlight(file, request, 0, row))

    def _send(self, flight: _InFlight) -> None:
        flight.tries += 1
        flight.row.tries = flight.tries
        ref = _bake_task.options(
            name=f"bake {flight.file.blend.name}",
            num_cpus=self.options.cpus,
            num_gpus=self.options.gpus,
        ).remote(flight.request, self.monitor)
        self.in_flight[ref] = flight

    def _collect(self, ref: Any) -> None:
        flight = self.in_flight.pop(ref)
        row = flight.row
        try:
            result: FileResult = ray.get(ref)
        except ray.exceptions.RayError as error:  # a crash, a dead worker or node
            self.monitor.forget.remote(row.name)
            if flight.tries <= self.options.retries:
                self._send(flight)
                return
            row.outcome, row.message = "failed", f"{_one_line(error)} (tried {flight.tries}x)"
            flight.file.release()
            return
        row.seconds, row.host = result.seconds, result.host
        try:
            flight.file.store(result, flight.tries)
        except (VbnfError, OSError) as error:
            row.outcome, row.message = "failed", f"cannot write what came back ({error})"
            flight.file.release()
            return
        row.outcome, row.level_psnr = result.outcome, result.level_psnr
        row.message = _result_message(result, flight.file)

    def _stop(self) -> None:
        """Ctrl-C: ask the bakes to stop, take back the work they kept, cancel the rest."""
        self.report.stopped = True
        self.show(f"stopping: waiting up to {STOP_GRACE_S:.0f} s for the running bakes' work")
        self.monitor.stop.remote()
        for file in self.queued:
            self.report.rows.append(FileRow(file.blend.name, "not started"))
        self.queued = []
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            while self.in_flight and time.monotonic() < deadline:
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=POLL_INTERVAL_S)
                for ref in ready:
                    self._collect(ref)
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: cancel at once
        self._cancel_in_flight("cancelled before it sent back its work")

    def _cancel_in_flight(self, message: str) -> None:
        """End the running bakes now; this machine's copy of their work stays as it was."""
        for ref, flight in self.in_flight.items():
            ray.cancel(ref, force=True)
            flight.file.release()
            flight.row.outcome, flight.row.message = "cancelled", message
        self.in_flight = {}

    def _draw(self) -> None:
        """``ray bake  40%: 1/5 done, 2 running, 1 failed, 1 waiting, 0:52 left``:
        time left from the elapsed time and the fraction done, bakes counted by their own
        progress."""
        from .bake_job import format_seconds

        progress = ray.get(self.monitor.progress.remote())
        running = [flight.row.name for flight in self.in_flight.values()]
        started = [name for name in running if name in progress]
        settled = [row for row in self.rows if row.outcome != "running"]
        fraction = (len(settled) + sum(progress[name] for name in started)) / self.total
        elapsed_s = time.monotonic() - self.started_s
        left = f"{format_seconds(elapsed_s * (1 - fraction) / fraction)}" if fraction else "?:??"
        done = sum(row.outcome == "done" for row in settled)
        self.show(
            f"ray bake {fraction:4.0%}: {done}/{self.total} done, {len(started)} running, "
            f"{len(settled) - done} failed, {self.total - len(settled) - len(started)} waiting, "
            f"{left} left"
        )


def _result_message(result: FileResult, file: BatchFile) -> str:
    if result.outcome == "done":
        return result.resume_note
    parts = [result.message, result.resume_note]
    if result.kept:
        parts.append(f"kept {result.kept} in {file.work_dir}: run again to resume")
    return "; ".join(part for part in parts if part)


def _one_line(error: BaseException) -> str:
    """A Ray error in one line: the exception a task raised (the last line of its traceback),
    or the first line of Ray's own explanation."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if isinstance(error, ray.exceptions.RayTaskError) else lines[0]
