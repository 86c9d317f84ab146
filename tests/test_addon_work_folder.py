"""What an interrupted bake keeps, and what the next bake may reuse of it (``work_folder.py``).

The decisions are pure functions of the kept state and the new settings, so they are checked
here case by case in milliseconds; ``test_addon_bake.py`` runs them end to end with Cycles and
the real trainer.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ADDON_DIR = Path(__file__).resolve().parents[1] / "addon"
if str(ADDON_DIR) not in sys.path:
    sys.path.insert(0, str(ADDON_DIR))

from vbnf_blender import work_folder as wf  # noqa: E402
from vbnf_blender.bake_job import BakeSettings  # noqa: E402

SETTINGS = BakeSettings(epochs=10)


def _state(**progress: int | None) -> wf.BakeState:
    state = wf.BakeState(
        capture={"train_views": 100, "test_views": 10, "target": "scene", "objects": ["Cube"]},
        training=SETTINGS.checkpoint_fingerprint(),
        epochs=SETTINGS.epochs,
        total_views=110,
    )
    return replace(state, **progress)


CHECKPOINTED = _state(views_done=110, checkpoint_step=90, steps_per_epoch=40)  # in epoch 3


def test_summary_counts_views_and_the_epoch_the_checkpoint_is_in() -> None:
    assert _state().summary() == "0/110 views"
    assert _state(views_done=37).summary() == "37/110 views"
    assert CHECKPOINTED.summary() == "110/110 views, epoch 3/10"
    at_an_epoch_end = replace(CHECKPOINTED, checkpoint_step=80)  # as the status bar counts it
    assert at_an_epoch_end.summary() == "110/110 views, epoch 2/10"
    assert (at_an_epoch_end.epochs_completed, CHECKPOINTED.epochs_completed) == (2, 2)
    assert not _state().has_work and _state(views_done=1).has_work


def test_a_fresh_folder_or_changed_capture_starts_over() -> None:
    assert wf.plan_resume(None, _state(), checkpoint_exists=False) == wf.ResumePlan(False, False)
    other_capture = replace(_state(), capture={**_state().capture, "resolution_px": 64})
    plan = wf.plan_resume(CHECKPOINTED, other_capture, checkpoint_exists=True)
    assert plan == wf.ResumePlan(False, False, "the capture settings or the objects changed")
    other_objects = replace(_state(), capture={**_state().capture, "objects": ["Cube", "Lamp"]})
    assert not wf.plan_resume(CHECKPOINTED, other_objects, checkpoint_exists=True).keep_views


@pytest.mark.parametrize(
    ("wanted", "checkpoint_exists", "resumes", "reason"),
    [
        (_state(), True, True, ""),
        (_state(epochs=40), True, True, ""),  # more epochs continue the checkpoint
        (_state(epochs=2), True, True, ""),  # 2 epochs trained: nothing left to train
        (_state(epochs=1), True, False, "2 epochs are trained, more than the 1 asked"),
        (_state(), False, False, ""),  # the state says checkpoint, but the file is gone
        (
            replace(_state(), training=BakeSettings(bitwidth=6).checkpoint_fingerprint()),
            True,
            False,
            "the training settings changed",
        ),
        (
            replace(_state(), training=BakeSettings(batch_rays=512).checkpoint_fingerprint()),
            True,
            False,
            "the training settings changed",
        ),
    ],
    ids=["same", "more-epochs", "as-many-epochs", "fewer-epochs", "no-file", "bitwidth", "batch"],
)
def test_training_resumes_only_a_checkpoint_it_can_continue(
    wanted: wf.BakeState, checkpoint_exists: bool, resumes: bool, reason: str
) -> None:
    plan = wf.plan_resume(CHECKPOINTED, wanted, checkpoint_exists)
    assert plan == wf.ResumePlan(keep_views=True, resume_training=resumes, reason=reason)


def test_a_checkpoint_of_unknown_progress_is_not_resumed() -> None:
    unknown = replace(CHECKPOINTED, steps_per_epoch=None)
    plan = wf.plan_resume(unknown, _state(), checkpoint_exists=True)
    assert plan == wf.ResumePlan(True, False, "how far the checkpoint trained is not known")


def test_device_and_threads_do_not_bind_a_checkpoint() -> None:
    moved = BakeSettings(epochs=10, device="cuda", cpu_threads=1)
    assert moved.checkpoint_fingerprint() == SETTINGS.checkpoint_fingerprint()


def test_the_state_round_trips_and_damage_is_named(tmp_path: Path) -> None:
    assert wf.read_state(tmp_path) is None
    wf.write_state(tmp_path, CHECKPOINTED)
    assert wf.read_state(tmp_path) == CHECKPOINTED
    path = tmp_path / wf.STATE_NAME
    for damage in ("{not json", json.dumps({"format_version": 99}), '{"format_version": 1}'):
        path.write_text(damage)
        with pytest.raises(wf.BakeStateError, match=r"bake\.json"):
            wf.read_state(tmp_path)


def test_clear_and_discard_remove_what_a_bake_wrote(tmp_path: Path) -> None:
    work_dir = wf.work_dir_for(tmp_path / "scene.vbnf")
    assert work_dir == tmp_path / "scene.vbnf.bake"
    for name in (wf.DATASET_NAME, wf.RUN_NAME):
        (work_dir / name).mkdir(parents=True)
    wf.write_state(work_dir, CHECKPOINTED)
    (work_dir / "notes.txt").write_text("the caller's")
    wf.clear(work_dir, keep_views=True)
    assert sorted(p.name for p in work_dir.iterdir()) == ["bake.json", "dataset", "notes.txt"]
    wf.clear(work_dir)
    assert sorted(p.name for p in work_dir.iterdir()) == ["notes.txt"]
    wf.discard(work_dir)
    assert not work_dir.exists()
    wf.discard(work_dir)  # nothing to discard is not an error


def test_the_panel_line_is_reparsed_only_when_the_state_is_replaced(tmp_path: Path) -> None:
    assert wf.resume_line(tmp_path) is None
    wf.write_state(tmp_path, _state(views_done=37))
    assert wf.resume_line(tmp_path) == "Resumable: 37/110 views"
    path = tmp_path / wf.STATE_NAME
    stat = path.stat()
    path.write_text("{not json")  # in place: same inode; and the same time stamp:
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert wf.resume_line(tmp_path) == "Resumable: 37/110 views"  # from the cache
    wf.write_state(tmp_path, CHECKPOINTED)  # atomic: a new file
    assert wf.resume_line(tmp_path) == "Resumable: 110/110 views, epoch 3/10"
    path.write_text("{not json")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert wf.resume_line(tmp_path) == "Kept bake cannot resume (unreadable state)"
