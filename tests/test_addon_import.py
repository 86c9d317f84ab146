"""Importing assets with the installed extension, in real bpy: damaged and truncated files,
several files at once, drag and drop, a .blend that travels (relative paths, the asset packed
into it, Pack Resources), an asset rewritten on disk, and the bounded grid cache.

The assets are random but well-formed fields (``core.asset.vbnf.example``): the format and the
import are exercised in seconds, without training. Rendering fidelity is bench/preview.py's and
test_addon_preview.py's business.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
for _path in (TESTS_DIR, REPO_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import addon_extension  # noqa: E402
import bpy  # noqa: E402

from core.asset.vbnf import encode_asset  # noqa: E402
from core.asset.vbnf.example import random_field  # noqa: E402
from core.asset.vbnf.header import header_size  # noqa: E402

pytestmark = pytest.mark.blender

LEVELS = (2, 3, 4, 5)


@pytest.fixture(scope="module")
def extension() -> ModuleType:
    return addon_extension.ensure_extension()


def _asset_bytes(seed: int = 0) -> bytes:
    return encode_asset(random_field("codebook", min_level=2, max_level=5, seed=seed))


def _write_asset(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_asset_bytes(seed))
    return path


def _fields() -> list[Any]:
    return [obj for obj in bpy.data.objects if obj.type == "VOLUME"]


def _chunk_starts(data: bytes) -> list[int]:
    """Byte offset of each level's chunk (the header's chunk table gives the sizes)."""
    from core.asset.vbnf.header import unpack_header

    header = unpack_header(data[: header_size(data)])
    offsets, offset = [], header.header_bytes
    for entry in header.chunks:
        offsets.append(offset)
        offset += entry.stored_bytes
    return offsets


def test_a_truncated_file_imports_its_complete_levels_and_says_what_is_missing(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    data = _asset_bytes()
    cut = tmp_path / "cut.vbnf"
    cut.write_bytes(data[: _chunk_starts(data)[3] + 10])  # level 5's chunk cut short
    assert bpy.ops.import_scene.vbnf(filepath=str(cut)) == {"FINISHED"}
    settings = _fields()[0].vbnf
    assert (settings.min_level, settings.max_level, settings.lod) == (2, 4, 4)
    assert "level 5 missing" in settings.import_warning
    assert "truncated" in settings.import_warning


def test_a_corrupted_level_keeps_the_levels_before_it(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    data = bytearray(_asset_bytes())
    data[_chunk_starts(bytes(data))[2] + 5] ^= 0xFF  # a bit flip inside level 4's chunk
    damaged = tmp_path / "damaged.vbnf"
    damaged.write_bytes(bytes(data))
    assert bpy.ops.import_scene.vbnf(filepath=str(damaged)) == {"FINISHED"}
    settings = _fields()[0].vbnf
    assert (settings.min_level, settings.max_level) == (2, 3)
    assert "level 4 chunk is corrupted" in settings.import_warning
    assert "levels 4..5 left out" in settings.import_warning
    assert [level.present for level in settings.levels] == [True, True, False, False]


@pytest.mark.parametrize("content", [b"", b"VBNF", b"not an asset at all"])
def test_a_failed_import_leaves_nothing_behind(
    extension: ModuleType, tmp_path: Path, content: bytes
) -> None:
    addon_extension.reset_file()
    bad = tmp_path / "bad.vbnf"
    bad.write_bytes(content)
    with pytest.raises(RuntimeError, match=r"bad\.vbnf"):
        bpy.ops.import_scene.vbnf(filepath=str(bad))
    assert len(bpy.data.objects) == len(bpy.data.volumes) == len(bpy.data.materials) == 0


def test_several_files_import_at_once_and_a_bad_one_does_not_stop_the_others(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    for name, seed in (("one.vbnf", 1), ("two.vbnf", 2)):
        _write_asset(tmp_path / name, seed)
    (tmp_path / "broken.vbnf").write_bytes(b"broken")
    files = [{"name": name} for name in ("one.vbnf", "broken.vbnf", "two.vbnf")]
    result = bpy.ops.import_scene.vbnf(directory=str(tmp_path), files=files)
    assert result == {"FINISHED"}
    assert sorted(obj.name for obj in _fields()) == ["one", "two"]
    assert all(obj.select_get() for obj in _fields())
    assert len(bpy.data.materials) == 1  # shared


def test_vbnf_files_can_be_dropped_on_the_viewport(extension: ModuleType) -> None:
    handler = bpy.types.FileHandler.bl_rna_get_subclass_py("IO_FH_vbnf")
    assert handler is not None
    assert handler.bl_import_operator == "import_scene.vbnf"
    assert handler.bl_file_extensions == ".vbnf"
    operator = bpy.ops.import_scene.vbnf.get_rna_type()
    # what a FileHandler fills in for the dropped files
    assert {"filepath", "directory", "files"} <= {p.identifier for p in operator.properties}


def _import(path: Path, **options: Any) -> Any:
    assert bpy.ops.import_scene.vbnf(filepath=str(path), **options) == {"FINISHED"}
    return bpy.context.view_layer.objects.active


def _check_every_level(obj: Any) -> None:
    settings = obj.vbnf
    files = set()
    for level in LEVELS:
        settings.lod = level
        assert settings.lod_error == "", settings.lod_error
        assert (settings.lod, settings.shown_level) == (level, level)
        files.add(Path(bpy.path.abspath(obj.data.filepath)))
        assert settings.voxel_count > 0
    assert len(files) == len(LEVELS) and all(path.is_file() for path in files)


def test_a_packed_blend_opens_anywhere_with_every_level(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    asset = _write_asset(tmp_path / "project" / "assets" / "thing.vbnf")
    blend = tmp_path / "project" / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    obj = _import(asset, pack=True)
    assert obj.vbnf.asset_path == "//assets/thing.vbnf"  # relative to the .blend
    bpy.ops.wm.save_mainfile()
    travelled = tmp_path / "elsewhere" / "scene.blend"  # the .blend alone: no asset, no cache
    travelled.parent.mkdir()
    shutil.copy(blend, travelled)
    shutil.rmtree(tmp_path / "project")
    bpy.ops.wm.open_mainfile(filepath=str(travelled))
    obj = _fields()[0]
    assert extension.volume.asset_state(obj) == ""  # the packed copy stands in
    _check_every_level(obj)
    exported = tmp_path / "exported.vbnf"
    assert bpy.ops.export_scene.vbnf(filepath=str(exported)) == {"FINISHED"}
    assert exported.read_bytes() == _asset_bytes()  # from the packed copy
    assert bpy.ops.vbnf.unpack_asset() == {"FINISHED"}  # writes the asset back out
    assert (tmp_path / "elsewhere" / "assets" / "thing.vbnf").read_bytes() == _asset_bytes()


def test_pack_resources_packs_the_whole_asset_and_the_slider_still_works(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    asset = _write_asset(tmp_path / "a" / "thing.vbnf")
    blend = tmp_path / "a" / "scene.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    _import(asset)
    bpy.ops.file.pack_all()  # File > External Data > Pack Resources: one level's grids
    bpy.ops.wm.save_mainfile()  # the save packs the asset beside them
    shutil.rmtree(tmp_path / "a" / "vbnf_cache")
    asset.unlink()
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    obj = _fields()[0]
    assert obj.data.packed_file is not None
    _check_every_level(obj)
    assert obj.data.packed_file is None  # the packed level gave way to the slider's level
    assert len(bpy.data.volumes) == 1


def test_an_asset_rewritten_on_disk_is_reported_and_never_mixed_in(
    extension: ModuleType, tmp_path: Path
) -> None:
    addon_extension.reset_file()
    asset = _write_asset(tmp_path / "thing.vbnf", seed=0)
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    obj = _import(asset)
    old_version = Path(bpy.path.abspath(obj.data.filepath)).parent
    _write_asset(asset, seed=5)  # a re-bake elsewhere replaced the file
    volume = extension.volume
    assert volume.asset_state(obj) == "asset changed on disk: reload"
    obj.vbnf.lod = 4  # decoded from the imported version, still held in memory
    assert obj.vbnf.lod_error == "" and obj.vbnf.shown_level == 4
    volume._decoders.clear()  # as after reopening the file
    obj.vbnf.lod = 3  # not cached: its grids would have to come from the new file
    assert "changed on disk" in obj.vbnf.lod_error
    assert obj.vbnf.lod == obj.vbnf.shown_level == 4  # the slider says what is shown
    assert bpy.ops.vbnf.reload_asset() == {"FINISHED"}
    assert volume.asset_state(obj) == "" and obj.vbnf.lod_error == ""
    assert obj.vbnf.asset_digest == volume.bytes_digest(asset.read_bytes())
    obj.vbnf.lod = 3
    assert obj.vbnf.lod_error == "" and obj.vbnf.shown_level == 3
    assert not old_version.exists()  # the old version's grids were pruned


def test_the_cache_keeps_only_what_the_file_uses_within_its_bound(
    extension: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    addon_extension.reset_file()
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "scene.blend"))
    obj = _import(_write_asset(tmp_path / "thing.vbnf"))
    volume = extension.volume
    cache = tmp_path / "vbnf_cache"
    old_version = cache / "thing-0123456789abcdef"  # the same asset before a re-bake
    other_asset = cache / "other-0123456789abcdef"  # another .blend's, maybe
    for folder in (old_version, other_asset):
        folder.mkdir()
        (folder / "level_2-x.vdb").write_bytes(b"old")
    user_file = cache / "notes.txt"  # not ours: left alone
    user_file.write_text("keep")
    for level in LEVELS:
        obj.vbnf.lod = level
    assert not old_version.exists() and other_asset.is_dir() and user_file.is_file()
    files = sorted(Path(bpy.path.abspath(obj.data.filepath)).parent.glob("*.vdb"))
    assert len(files) == len(LEVELS)
    monkeypatch.setattr(volume, "CACHE_LIMIT_BYTES", 1)
    monkeypatch.setattr(volume, "RECENT_WRITE_S", 0.0)
    volume.prune_cache()
    shown = Path(bpy.path.abspath(obj.data.filepath))
    assert [path for path in files if path.exists()] == [shown]  # over the bound: all but it
    assert not (other_asset / "level_2-x.vdb").exists()
    obj.vbnf.lod = 2
    assert obj.vbnf.lod_error == "" and obj.vbnf.voxel_count > 0  # decoded again
