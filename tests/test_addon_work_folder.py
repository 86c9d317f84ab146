"""What an interrupted bake keeps, and what the next bake may reuse of it (``work_folder.py``),
and where a bake puts its asset (``bake_job.asset_path_for``).

The decisions are pure functions of the kept state, the capture's verdict on the kept views and
the new settings, so they are checked here case by case in milliseconds; ``test_addon_bake.py``
runs them end to end with Cycles and the real trainer.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

ADDON_DIR = Path(__file__).resolve().parents[1] / "addon"
if str(ADDON_DIR) not in sys.path:
    sys.path.insert(0, str(ADDON_DIR))

import blender_scenes as scenes  # noqa: E402
from vbnf_blender import capture_record  # noqa: E402
from vbnf_blender import work_folder as wf  # noqa: E402
from vbnf_blender.bake_job import BakeError, BakeSettings, asset_path_for  # noqa: E402
from vbnf_blender.engine import dataset  # noqa: E402

SETTINGS = BakeSettings(epochs=10)


def _state(**progress: int | None) -> wf.BakeState:
    state = wf.BakeState(
        training=SETTINGS.checkpoint_fingerprint(),
        epochs=SETTINGS.epochs,
        train_views=100,
        test_views=10,
    )
    return replace(state, **progress)


CHECKPOINTED = _state(views_done=110, checkpoint_step=90, steps_per_epoch=40)  # in epoch 3


def _plan(
    wanted: wf.BakeState,
    kept: wf.BakeState = CHECKPOINTED,
    views_kept: int = 110,
    views_change: str = "",
    checkpoint_exists: bool = True,
) -> wf.ResumePlan:
    return wf.plan_resume(
        kept,
        wanted,
        views_kept=views_kept,
        views_change=views_change,
        checkpoint_exists=checkpoint_exists,
    )


def test_summary_counts_the_views_the_panel_asks_for_and_the_checkpoints_epoch() -> None:
    assert _state().summary() == "0/100 views"
    assert _state(views_done=37).summary() == "37/100 views"
    assert _state(views_done=103).summary() == "100/100 views + 3/10 held-out"
    assert CHECKPOINTED.summary() == "100/100 views, epoch 3/10"
    at_an_epoch_end = replace(CHECKPOINTED, checkpoint_step=80)  # as the status bar counts it
    assert at_an_epoch_end.summary() == "100/100 views, epoch 2/10"
    assert not _state().has_work and _state(views_done=1).has_work


def test_views_that_show_another_scene_drop_everything() -> None:
    plan = _plan(_state(), views_kept=0, views_change="Cube's materials changed")
    assert plan == wf.ResumePlan(
        reason="Cube's materials changed", dropped="the kept 100/100 views, epoch 3/10"
    )
    assert not plan.keep_views and not plan.resume_training
    note = plan.note(_state())
    assert note == (
        "started over, dropping the kept 100/100 views, epoch 3/10: Cube's materials changed"
    )


RESUMED = wf.ResumePlan(views_kept=110, checkpoint_step=90, steps_per_epoch=40)


@pytest.mark.parametrize(
    ("kept", "wanted", "views_kept", "reason"),
    [
        (CHECKPOINTED, _state(), 110, ""),
        (CHECKPOINTED, _state(epochs=40), 110, ""),  # more epochs continue the checkpoint
        (replace(CHECKPOINTED, checkpoint_step=80), _state(epochs=2), 110, ""),  # all trained
        (CHECKPOINTED, _state(epochs=3), 110, ""),  # epoch 3 is under way
        (CHECKPOINTED, _state(epochs=2), 110, "it trained past the 2 epochs now asked for"),
        (CHECKPOINTED, _state(), 109, "some views must be rendered again"),
        (
            CHECKPOINTED,
            replace(_state(), training=BakeSettings(bitwidth=6).checkpoint_fingerprint()),
            110,
            "the training settings changed",
        ),
        (
            CHECKPOINTED,
            replace(_state(), training=BakeSettings(batch_rays=512).checkpoint_fingerprint()),
            110,
            "the training settings changed",
        ),
        (
            replace(CHECKPOINTED, steps_per_epoch=None),
            _state(),
            110,
            "how far the checkpoint trained is not known",
        ),
    ],
    ids=[
        "same",
        "more-epochs",
        "as-many-epochs",
        "within-the-last-epoch",
        "partial-epoch-beyond",
        "a-view-missing",
        "bitwidth",
        "batch",
        "unknown-progress",
    ],
)
def test_training_resumes_only_a_checkpoint_it_can_continue(
    kept: wf.BakeState, wanted: wf.BakeState, views_kept: int, reason: str
) -> None:
    plan = _plan(wanted, kept, views_kept=views_kept)
    assert plan.views_kept == views_kept and plan.reason == reason
    assert plan.resume_training == (not reason)
    if reason:
        assert plan.dropped.startswith("the training so far")
    else:
        assert (plan.checkpoint_step, plan.steps_per_epoch) == (
            kept.checkpoint_step,
            kept.steps_per_epoch,
        )


def test_a_missing_checkpoint_file_keeps_the_views_and_drops_nothing_it_could_use() -> None:
    assert _plan(_state(), checkpoint_exists=False) == wf.ResumePlan(views_kept=110)


def test_the_note_says_what_was_reused_and_what_was_dropped() -> None:
    assert RESUMED.note(CHECKPOINTED) == "resumed from 100/100 views, epoch 3/10"
    retrain = _plan(replace(_state(), training={"bitwidth": 6}))
    assert retrain.note(_state(views_done=110)) == (
        "resumed from 100/100 views, dropping the training so far (epoch 3/10): "
        "the training settings changed"
    )
    assert wf.ResumePlan().note(_state()) == ""


def test_device_and_threads_do_not_bind_a_checkpoint() -> None:
    moved = BakeSettings(epochs=10, device="cuda", cpu_threads=1)
    assert moved.checkpoint_fingerprint() == SETTINGS.checkpoint_fingerprint()


def test_the_state_round_trips_and_damage_is_named(tmp_path: Path) -> None:
    assert wf.read_state(tmp_path) is None
    wf.write_state(tmp_path, CHECKPOINTED)
    assert wf.read_state(tmp_path) == CHECKPOINTED
    path = tmp_path / wf.STATE_NAME
    for damage in ("{not json", "[]", '{"format_version": 2}'):
        path.write_text(damage)
        with pytest.raises(wf.BakeStateError, match=r"bake\.json"):
            wf.read_state(tmp_path)
    path.write_text(json.dumps({"format_version": 1}))
    with pytest.raises(wf.BakeStateVersionError, match=r"bake\.json"):
        wf.read_state(tmp_path)


def test_a_failed_state_write_is_a_warning_not_an_error(tmp_path: Path) -> None:
    assert wf.save_state(tmp_path, CHECKPOINTED) == ""
    (tmp_path / wf.STATE_NAME).unlink()
    (tmp_path / wf.STATE_NAME).mkdir()  # cannot be replaced by a file
    warning = wf.save_state(tmp_path, CHECKPOINTED)
    assert warning.startswith(f"cannot update {tmp_path / wf.STATE_NAME} (")
    assert "may not resume" in warning


def test_applying_a_plan_records_the_state_as_soon_as_it_clears(tmp_path: Path) -> None:
    work_dir = tmp_path / "scene.vbnf.bake"
    for name in (wf.DATASET_NAME, wf.RUN_NAME):
        (work_dir / name).mkdir(parents=True)
    wf.write_state(work_dir, CHECKPOINTED)
    plan = _plan(replace(_state(), training={"bitwidth": 6}))
    new_state = _state(views_done=plan.views_kept)
    assert wf.apply_plan(work_dir, plan, new_state) == ""
    assert sorted(p.name for p in work_dir.iterdir()) == ["bake.json", "dataset"]
    assert wf.read_state(work_dir) == new_state  # no checkpoint step left behind
    wf.apply_plan(work_dir, wf.ResumePlan(), _state())
    assert sorted(p.name for p in work_dir.iterdir()) == ["bake.json"]
    assert wf.read_state(work_dir) == _state()


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


def test_a_resumed_capture_keeps_the_views_it_said_it_would(tmp_path: Path) -> None:
    """``kept_views_of`` (what the Bake button promises) and ``views_to_render`` (what the
    capture then does) judge the kept record by the same test, even one with parts this
    version does not know."""
    parts = dict.fromkeys(capture_record.SCENE_PARTS, "digest")
    record = parts | {"objects": {"Cube": dict.fromkeys(capture_record.OBJECT_PARTS, "digest")}}
    stored = parts | {
        "future part": "digest",
        "objects": {"Cube": dict.fromkeys([*capture_record.OBJECT_PARTS, "future"], "digest")},
    }
    (tmp_path / capture_record.PLAN_RECORD_NAME).write_text(json.dumps(stored))
    frame = dataset.FrameRecord("train/r_000", "train/r_000_depth.exr", np.eye(4))
    views = [capture_record.View("train", frame)]
    (tmp_path / "train").mkdir()
    for path in capture_record.view_files(tmp_path, frame):
        path.write_bytes(b"rendered")
    assert capture_record.kept_views_of(tmp_path, views, record) == capture_record.KeptViews(1)
    assert capture_record.views_to_render(tmp_path, views, record, resume=True) == []
    assert all(path.is_file() for path in capture_record.view_files(tmp_path, frame))
    assert capture_record.views_to_render(tmp_path, views, record, resume=False) == views
    assert not any(path.exists() for path in capture_record.view_files(tmp_path, frame))


def test_the_lock_keeps_a_second_bake_out_until_released(tmp_path: Path) -> None:
    work_dir = tmp_path / "scene.vbnf.bake"
    assert wf.lock_holder(work_dir) is None
    wf.acquire_lock(work_dir)  # makes the folder
    assert wf.lock_holder(work_dir) == wf.LockHolder(os.getpid(), socket.gethostname())
    expected = rf"another bake of this asset is running \(process {os.getpid()}\)"
    with pytest.raises(wf.WorkFolderBusy, match=expected):
        wf.acquire_lock(work_dir)
    with pytest.raises(wf.WorkFolderBusy, match=expected):
        wf.discard(work_dir)
    assert work_dir.is_dir()
    wf.release_lock(work_dir)
    assert wf.lock_holder(work_dir) is None and not (work_dir / wf.LOCK_NAME).exists()
    wf.discard(work_dir)
    assert not work_dir.exists()


def test_a_lock_whose_process_ended_is_taken_over(tmp_path: Path) -> None:
    """A lock file left by a process that ended (here: one that wrote it and died) is free: the
    operating system held the lock, not the file."""
    lock = tmp_path / wf.LOCK_NAME
    lock.write_text(json.dumps({"pid": scenes.ended_process_id(), "host": socket.gethostname()}))
    assert wf.lock_holder(tmp_path) is None
    wf.acquire_lock(tmp_path)
    assert json.loads(lock.read_text())["pid"] == os.getpid()
    wf.release_lock(tmp_path)
    assert not lock.exists()


def test_the_panel_line_is_reparsed_only_when_the_state_is_replaced(tmp_path: Path) -> None:
    assert wf.resume_line(tmp_path) is None
    wf.write_state(tmp_path, _state(views_done=37))
    assert wf.resume_line(tmp_path) == "Resumable: 37/100 views"
    path = tmp_path / wf.STATE_NAME
    stat = path.stat()
    path.write_text("{not json")  # in place: same inode; and the same time stamp:
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert wf.resume_line(tmp_path) == "Resumable: 37/100 views"  # from the cache
    wf.write_state(tmp_path, CHECKPOINTED)  # atomic: a new file
    assert wf.resume_line(tmp_path) == "Resumable: 100/100 views, epoch 3/10"
    path.write_text("{not json")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert wf.resume_line(tmp_path) == "Kept bake is damaged; Bake will start over"
    path.write_text(json.dumps({"format_version": 1}))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2))
    assert wf.resume_line(tmp_path) == "Kept bake is from another version; Bake will start over"
    assert wf.kept_description(tmp_path) == "the kept bake"
    wf.write_state(tmp_path, CHECKPOINTED)
    assert wf.kept_description(tmp_path) == "the kept 100/100 views, epoch 3/10"


def test_asset_names_keep_unicode_and_lose_only_what_file_systems_forbid() -> None:
    umlaut_a = asset_path_for("/work/My Scene ä.blend", "", "Scene")
    umlaut_o = asset_path_for("/work/My Scene ö.blend", "", "Scene")
    assert (umlaut_a, umlaut_o) == (Path("/work/My Scene ä.vbnf"), Path("/work/My Scene ö.vbnf"))
    assert wf.work_dir_for(umlaut_a) != wf.work_dir_for(umlaut_o)
    forbidden = asset_path_for("", "/out", 'a<b>c:d"e/f\\g|h?i*j\x01k. .')
    assert forbidden == Path("/out/a_b_c_d_e_f_g_h_i_j_k.vbnf")
    decomposed = asset_path_for("/work/Sce\u0301ne.blend", "", "")  # as macOS stores names
    assert decomposed == Path("/work/Sc\u00e9ne.vbnf")


def test_settings_that_training_would_refuse_fail_before_the_capture() -> None:
    settings = BakeSettings()
    with pytest.raises(BakeError, match="batch rays must be at least 1, got 0"):
        replace(settings, batch_rays=0).validate()
    too_small = replace(settings, capture=replace(settings.capture, resolution_px=8))
    with pytest.raises(BakeError, match="resolution must be at least 11 px"):
        too_small.validate()


def test_an_unsaved_file_needs_an_absolute_output_folder() -> None:
    with pytest.raises(BakeError, match=r"save the \.blend file first, or choose an output"):
        asset_path_for("", "", "Scene")
    relative = r"save the \.blend file first: the output folder //out/ is relative to it"
    with pytest.raises(BakeError, match=relative):
        asset_path_for("", "//out/", "Scene")
    assert asset_path_for("", "/out", "Scene") == Path("/out/Scene.vbnf")
