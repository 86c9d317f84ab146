"""The bake's work folder, kept after a cancelled or failed bake so that the next Bake resumes.

A bake renders its views into ``<asset>.vbnf.bake/dataset`` and trains into
``<asset>.vbnf.bake/run``, next to the asset it writes: beside the user's own files it survives a
Blender restart (the system's temporary folder may be wiped at boot), and the asset path alone
finds it again. ``bake.json`` says what the folder holds and what it was made with:

- the training fingerprint (what a checkpoint is bound to: ``--resume`` takes levels, bitwidth,
  batch size and seed from the checkpoint, only epochs and device from the command line): if it
  differs, training starts over on the kept views;
- progress: views rendered, and the step and steps per epoch of the last checkpoint, so the
  panel can say "37/100 views, epoch 3/10" without reading anything else.

Whether the kept views still show the scene is the capture's to say (``capture.kept_views``:
the dataset records what its views depend on, see ``capture_record.py``); :func:`plan_resume`
combines the two into one decision, without changing anything, so that the Bake button can ask
before it drops work.

The file is rewritten atomically after every view and checkpoint. It is a summary, not the
proof: the capture checks each view's files and the plan they were rendered from, and training
resumes only if the checkpoint file is there. So a failed write of it is a warning, not a
failed bake.

``bake.lock`` marks a folder a bake is using, so that two bakes of the same asset, or a Discard
during a bake in another Blender, cannot delete each other's files. It is an operating-system
lock (``core/locks.py``): exactly one of two bakes started at once gets it, and it ends with the
process that held it, however that process ends.

No bpy here, so all of it is testable directly.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .engine import VbnfError, atomic_write_bytes, locks

WORK_SUFFIX = ".bake"
STATE_NAME = "bake.json"
STATE_VERSION = 2
LOCK_NAME = "bake.lock"
DATASET_NAME, RUN_NAME = "dataset", "run"
# The panel's lines for the last few state files it drew (one per scene the user switches to).
RESUME_LINE_CACHE_SIZE = 8


class BakeStateError(VbnfError):
    """``bake.json`` cannot be read; the folder cannot resume."""


class BakeStateVersionError(BakeStateError):
    """``bake.json`` was written by another version of the add-on."""


WorkFolderBusy = locks.FolderBusy  # another running bake holds the work folder's lock
LockHolder = locks.LockHolder
BUSY_WHAT = "another bake of this asset"


def views_line(views_done: int, train_views: int, test_views: int) -> str:
    """Views rendered, counted as the panel's Views field counts them (training views); the
    held-out views, rendered last, are named only while they are still missing."""
    if views_done < train_views:
        return f"{views_done}/{train_views} views"
    held_out_done = views_done - train_views
    if held_out_done < test_views:
        return f"{train_views}/{train_views} views + {held_out_done}/{test_views} held-out"
    return f"{train_views}/{train_views} views"


@dataclass
class BakeState:
    """What one bake's work folder was made with and how far it got (``bake.json``)."""

    training: dict[str, Any]  # the settings a checkpoint is bound to
    epochs: int  # asked for; a resumed bake may ask for more (or fewer) than the checkpoint's
    train_views: int
    test_views: int  # held out for scoring, rendered after the training views
    views_done: int = 0
    checkpoint_step: int | None = None  # optimisation steps the last checkpoint holds
    steps_per_epoch: int | None = None

    @property
    def has_work(self) -> bool:
        """Whether anything here would save time in the next bake."""
        return self.views_done > 0 or self.checkpoint_step is not None

    def training_summary(self) -> str:
        """``epoch 3/10``: the epoch the checkpoint is in, counted as the status bar counted it
        while training ("" without a checkpoint of known size)."""
        if not self.checkpoint_step or not self.steps_per_epoch:
            return ""
        epoch = min(math.ceil(self.checkpoint_step / self.steps_per_epoch), self.epochs)
        return f"epoch {epoch}/{self.epochs}"

    def summary(self) -> str:
        """``37/100 views, epoch 3/10``."""
        views = views_line(self.views_done, self.train_views, self.test_views)
        training = self.training_summary()
        return f"{views}, {training}" if training else views


@dataclass(frozen=True)
class ResumePlan:
    """What the next bake keeps of a work folder: ``views_kept`` complete views, and the
    checkpoint training continues from (None: training starts over). ``dropped`` names the
    kept work it throws away ("" when none) and ``reason`` says why."""

    views_kept: int = 0
    checkpoint_step: int | None = None
    steps_per_epoch: int | None = None
    reason: str = ""
    dropped: str = ""

    @property
    def keep_views(self) -> bool:
        return self.views_kept > 0

    @property
    def resume_training(self) -> bool:
        return self.checkpoint_step is not None

    def note(self, state: BakeState) -> str:
        """What became of the earlier bake, for reports: ``resumed from 100/100 views, dropping
        the training so far (epoch 3/10): the training settings changed``."""
        reused = f"resumed from {state.summary()}" if state.has_work else ""
        if not self.dropped:
            return reused
        return f"{reused or 'started over'}, dropping {self.dropped}: {self.reason}"


def start_over(dropped: str, reason: str) -> ResumePlan:
    """A plan that keeps nothing of the work named by ``dropped``."""
    return ResumePlan(reason=reason, dropped=dropped)


def plan_resume(
    kept: BakeState,
    wanted: BakeState,
    *,
    views_kept: int,
    views_change: str,
    checkpoint_exists: bool,
) -> ResumePlan:
    """Decide what a bake with the settings of ``wanted`` can reuse of the ``kept`` state.

    ``views_kept`` and ``views_change`` are the capture's verdict on the dataset folder:
    complete views of the same plan, or why its views show something else. A checkpoint is
    continued only on a complete dataset of the same plan (it learnt those views), with the
    settings it is bound to, and when it has not trained past the steps now asked for:
    trained steps cannot be undone and the asset must be what the settings say.
    """
    if views_change:
        return start_over(f"the kept {kept.summary()}", views_change)
    if kept.checkpoint_step is None or not checkpoint_exists:
        return ResumePlan(views_kept=views_kept)
    reason = _checkpoint_obstacle(kept, wanted, views_kept)
    if reason:
        training = kept.training_summary()
        dropped = f"the training so far ({training})" if training else "the training so far"
        return ResumePlan(views_kept=views_kept, reason=reason, dropped=dropped)
    return ResumePlan(views_kept, kept.checkpoint_step, kept.steps_per_epoch)


def _checkpoint_obstacle(kept: BakeState, wanted: BakeState, views_kept: int) -> str:
    """Why the kept checkpoint cannot be continued ("" when it can)."""
    assert kept.checkpoint_step is not None
    if kept.training != wanted.training:
        return "the training settings changed"
    if views_kept < wanted.train_views + wanted.test_views:
        return "some views must be rendered again"
    if not kept.steps_per_epoch:
        return "how far the checkpoint trained is not known"
    if kept.checkpoint_step > wanted.epochs * kept.steps_per_epoch:
        return f"it trained past the {wanted.epochs} epochs now asked for"
    return ""


def work_dir_for(asset_path: Path) -> Path:
    """``<asset>.vbnf.bake``, beside the asset."""
    return asset_path.with_name(asset_path.name + WORK_SUFFIX)


def read_state(work_dir: Path) -> BakeState | None:
    """The folder's state, or None where there is none."""
    path = work_dir / STATE_NAME
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BakeStateError(f"unreadable bake state ({error})", path) from error
    if not isinstance(document, dict):
        raise BakeStateError("not a bake state", path)
    if document.get("format_version") != STATE_VERSION:
        raise BakeStateVersionError(f"not a bake state of format {STATE_VERSION}", path)
    fields = {key: value for key, value in document.items() if key != "format_version"}
    try:
        return BakeState(**fields)
    except TypeError as error:  # missing or unknown fields
        raise BakeStateError(f"malformed bake state ({error})", path) from error


def write_state(work_dir: Path, state: BakeState) -> None:
    document = {"format_version": STATE_VERSION, **asdict(state)}
    atomic_write_bytes(work_dir / STATE_NAME, json.dumps(document, indent=2).encode())


def save_state(work_dir: Path, state: BakeState) -> str:
    """:func:`write_state`, returning a warning instead of raising when it cannot: the state is
    a summary (the next bake checks the files themselves), so a full disk or an unwritable file
    must not fail a bake that can still write its asset. Returns "" on success."""
    try:
        write_state(work_dir, state)
    except OSError as error:
        reason = error.strerror or str(error)
        return (
            f"cannot update {work_dir / STATE_NAME} ({reason}): the panel may show stale "
            "progress, and an interrupted bake may not resume"
        )
    return ""


def clear(work_dir: Path, keep_views: bool = False) -> None:
    """Remove what a bake put in the folder, or with ``keep_views`` only its training run.
    The state goes first, so a half-cleared folder never looks resumable; the folder itself
    and anything else a caller keeps there stay."""
    try:
        if not keep_views:
            (work_dir / STATE_NAME).unlink(missing_ok=True)
        for name in (RUN_NAME,) if keep_views else (DATASET_NAME, RUN_NAME):
            if (work_dir / name).exists():
                shutil.rmtree(work_dir / name)
    except OSError as error:
        message = f"cannot clear the bake's work folder ({error.strerror})"
        raise VbnfError(message, work_dir) from error


def apply_plan(work_dir: Path, plan: ResumePlan, state: BakeState) -> str:
    """Drop what ``plan`` does not keep, then record ``state`` at once, so that ``bake.json``
    never describes files that are gone. Returns :func:`save_state`'s warning."""
    if not plan.resume_training:
        clear(work_dir, keep_views=plan.keep_views)
    return save_state(work_dir, state)


def discard(work_dir: Path) -> None:
    """Delete a work folder, state first (see :func:`clear`); refused while a running bake
    holds its lock, which the deletion holds itself so that no bake starts in between."""
    if not work_dir.is_dir():
        return
    acquire_lock(work_dir)
    try:
        clear(work_dir)
        shutil.rmtree(work_dir)
    except FileNotFoundError:
        pass
    except OSError as error:
        message = f"cannot delete the bake's work folder ({error.strerror})"
        raise VbnfError(message, work_dir) from error
    finally:
        release_lock(work_dir)


def kept_description(work_dir: Path) -> str:
    """``the kept 37/100 views, epoch 3/10``, for the Discard button's question."""
    try:
        state = read_state(work_dir)
    except BakeStateError:
        state = None
    return "the kept bake" if state is None else f"the kept {state.summary()}"


def lock_holder(work_dir: Path) -> locks.LockHolder | None:
    """The running process that holds the folder's lock (None: free; a lock whose process
    ended is free, the operating system dropped it)."""
    return locks.holder(work_dir / LOCK_NAME)


def check_free(work_dir: Path) -> None:
    """Raise :class:`WorkFolderBusy` while a running bake holds the folder's lock."""
    holder = lock_holder(work_dir)
    if holder is not None:
        raise WorkFolderBusy(f"{BUSY_WHAT} is running ({holder})", work_dir)


def acquire_lock(work_dir: Path) -> None:
    """Take the folder's lock for this process (see ``core/locks.py``: exclusive, race-free,
    dropped by the system when the process ends); raises :class:`WorkFolderBusy` otherwise."""
    locks.acquire(work_dir / LOCK_NAME, BUSY_WHAT)


def release_lock(work_dir: Path) -> None:
    """Remove this process's lock (a lock this process does not hold is left alone)."""
    locks.release(work_dir / LOCK_NAME)


def resume_line(work_dir: Path) -> str | None:
    """The panel's line about a kept bake (None: nothing kept). Called on every redraw, so the
    state file is parsed again only when it was replaced (atomic writes give a new inode)."""
    try:
        stat = (work_dir / STATE_NAME).stat()
    except OSError:
        return None
    return _resume_line(work_dir, stat.st_ino, stat.st_mtime_ns)


@functools.lru_cache(maxsize=RESUME_LINE_CACHE_SIZE)
def _resume_line(work_dir: Path, inode: int, mtime_ns: int) -> str | None:
    """The line for one version of the state file; ``inode`` and ``mtime_ns`` only key the
    cache."""
    try:
        state = read_state(work_dir)
    except BakeStateVersionError:
        return "Kept bake is from another version; Bake will start over"
    except BakeStateError:
        return "Kept bake is damaged; Bake will start over"
    return None if state is None else f"Resumable: {state.summary()}"
