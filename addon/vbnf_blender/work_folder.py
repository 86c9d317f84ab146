"""The bake's work folder, kept after a cancelled or failed bake so that the next Bake resumes.

A bake renders its views into ``<asset>.vbnf.bake/dataset`` and trains into
``<asset>.vbnf.bake/run``, next to the asset it writes: beside the user's own files it survives a
Blender restart (the system's temporary folder may be wiped at boot), and the asset path alone
finds it again. ``bake.json`` says what the folder holds and what it was made with:

- the capture fingerprint (capture settings and the captured objects): if it differs, the views
  are of another capture and everything starts over;
- the training fingerprint (what a checkpoint is bound to: ``--resume`` takes levels, bitwidth,
  batch size and seed from the checkpoint, only epochs and device from the command line): if it
  differs, training starts over on the kept views;
- progress: views rendered, and the step and steps per epoch of the last checkpoint, so the
  panel can say "37/110 views, epoch 3/10" without reading anything else.

The file is rewritten atomically after every view and checkpoint. It is a summary, not the
proof: the capture checks each view's files and the plan they were rendered from, and training
resumes only if the checkpoint file is there. No bpy here, so all of it is testable directly.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .engine import VbnfError, atomic_write_bytes

WORK_SUFFIX = ".bake"
STATE_NAME = "bake.json"
STATE_VERSION = 1
DATASET_NAME, RUN_NAME = "dataset", "run"
# core.checkpoint.CHECKPOINT_NAME; that module imports torch, which Blender's Python lacks.
CHECKPOINT_NAME = "checkpoint.pt"


class BakeStateError(VbnfError):
    """``bake.json`` cannot be read or is from another version; the folder cannot resume."""


@dataclass
class BakeState:
    """What one bake's work folder was made with and how far it got (``bake.json``)."""

    capture: dict[str, Any]  # capture settings and the captured objects
    training: dict[str, Any]  # the settings a checkpoint is bound to
    epochs: int  # asked for; a resumed bake may ask for more (or fewer) than the checkpoint's
    total_views: int
    views_done: int = 0
    checkpoint_step: int | None = None  # optimisation steps the last checkpoint holds
    steps_per_epoch: int | None = None

    @property
    def has_work(self) -> bool:
        """Whether anything here would save time in the next bake."""
        return self.views_done > 0 or self.checkpoint_step is not None

    @property
    def epochs_completed(self) -> int | None:
        """Whole epochs the checkpoint has trained (None: no checkpoint, or its size unknown)."""
        if self.checkpoint_step is None or not self.steps_per_epoch:
            return None
        return self.checkpoint_step // self.steps_per_epoch

    def summary(self) -> str:
        """``37/110 views, epoch 3/10``: the epoch is the one the checkpoint is in, counted as
        the status bar counted it while training."""
        text = f"{self.views_done}/{self.total_views} views"
        if self.checkpoint_step and self.steps_per_epoch:
            epoch = min(math.ceil(self.checkpoint_step / self.steps_per_epoch), self.epochs)
            text += f", epoch {epoch}/{self.epochs}"
        return text


@dataclass(frozen=True)
class ResumePlan:
    """What the next bake keeps of a work folder; ``reason`` says why work is dropped."""

    keep_views: bool
    resume_training: bool
    reason: str = ""


def plan_resume(kept: BakeState | None, wanted: BakeState, checkpoint_exists: bool) -> ResumePlan:
    """Decide what a bake with the fingerprint ``wanted`` can reuse of the ``kept`` state.

    More epochs than the checkpoint has trained continue it; fewer retrain, because trained
    epochs cannot be undone and the asset must be what the settings say.
    """
    if kept is None:
        return ResumePlan(keep_views=False, resume_training=False)
    if kept.capture != wanted.capture:
        return ResumePlan(False, False, "the capture settings or the objects changed")
    if kept.checkpoint_step is None or not checkpoint_exists:
        return ResumePlan(keep_views=True, resume_training=False)
    if kept.training != wanted.training:
        return ResumePlan(True, False, "the training settings changed")
    completed = kept.epochs_completed
    if completed is None:
        return ResumePlan(True, False, "how far the checkpoint trained is not known")
    if completed > wanted.epochs:
        return ResumePlan(
            True, False, f"{completed} epochs are trained, more than the {wanted.epochs} asked"
        )
    return ResumePlan(keep_views=True, resume_training=True)


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
    if not isinstance(document, dict) or document.get("format_version") != STATE_VERSION:
        raise BakeStateError(f"not a bake state of format {STATE_VERSION}", path)
    fields = {key: value for key, value in document.items() if key != "format_version"}
    try:
        return BakeState(**fields)
    except TypeError as error:  # missing or unknown fields
        raise BakeStateError(f"malformed bake state ({error})", path) from error


def write_state(work_dir: Path, state: BakeState) -> None:
    document = {"format_version": STATE_VERSION, **asdict(state)}
    atomic_write_bytes(work_dir / STATE_NAME, json.dumps(document, indent=2).encode())


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


def discard(work_dir: Path) -> None:
    """Delete a work folder the bake owns, state first (see :func:`clear`)."""
    clear(work_dir)
    try:
        shutil.rmtree(work_dir)
    except FileNotFoundError:
        pass
    except OSError as error:
        message = f"cannot delete the bake's work folder ({error.strerror})"
        raise VbnfError(message, work_dir) from error


_lines: dict[Path, tuple[tuple[int, int], str]] = {}  # state path -> (inode, mtime), line


def resume_line(work_dir: Path) -> str | None:
    """The panel's line about a kept bake (None: nothing kept). Called on every redraw, so the
    state file is parsed again only when it was replaced (atomic writes give a new inode)."""
    path = work_dir / STATE_NAME
    try:
        stat = path.stat()
    except OSError:
        return None
    key = (stat.st_ino, stat.st_mtime_ns)
    cached = _lines.get(path)
    if cached is None or cached[0] != key:
        cached = (key, _describe(work_dir))
        _lines[path] = cached
    return cached[1]


def _describe(work_dir: Path) -> str:
    try:
        state = read_state(work_dir)
    except BakeStateError:
        return "Kept bake cannot resume (unreadable state)"
    if state is None:
        return "Kept bake cannot resume (no state)"
    return f"Resumable: {state.summary()}"
