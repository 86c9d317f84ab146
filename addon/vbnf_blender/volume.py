"""Showing a ``.vbnf`` asset in Blender: a Volume object whose LOD slider swaps grid files.

Each level of detail is decoded into a ``.vdb`` file (``level_grids.py``) that the Volume
datablock loads; the slider (``Object.vbnf.lod``) swaps ``Volume.filepath`` between them.

- **The grid cache** is derived from the asset alone: kept per level under ``vbnf_cache/`` next
  to the .blend (or in the add-on's user folder while the .blend is unsaved), in a folder named
  by the asset's name and a hash of its bytes, so a re-baked asset never shows stale grids.
  Missing files are decoded again. Writing a level prunes the cache (:func:`prune_cache`):
  older versions of the assets shown go, and past :data:`CACHE_LIMIT_BYTES` the least
  recently used levels that are not on screen go too.
- **Which bytes**: the version of the asset that was imported, identified by its digest. Its
  bytes come from the copy packed into the .blend when there is one (:func:`pack_asset`: a
  bytes custom property on the Volume datablock, which is saved, appended and linked with it),
  else from the file while the file still holds that version. A file rewritten since (a
  re-bake) is reported by :func:`asset_state` ("changed on disk: reload") and never mixed in:
  the slider shows levels of one version only, and when a level cannot be shown it stays on
  the level whose grids are on screen.
- **Damaged files**: imports keep every complete level before a truncated or corrupted chunk,
  and say which levels are missing and why (``Object.vbnf.import_warning``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import bpy

from . import level_grids
from .engine import (
    AssetError,
    NumpyField,
    VbnfError,
    asset_info,
    atomic_write_bytes,
    read_asset,
)
from .level_grids import count_voxels, write_level_vdb
from .preview_material import MATERIAL_MARKER, radiance_material

CACHE_FOLDER = "vbnf_cache"
# The grid cache of one folder (one .blend's, or the user folder) is kept under this size.
CACHE_LIMIT_BYTES = 2 << 30
# Cached grids written this recently are never evicted: another Blender may be loading them.
RECENT_WRITE_S = 60.0
# On the Volume datablock: the asset's bytes, when packed into the .blend.
PACKED_PROPERTY = "vbnf_packed_asset"
_DECODER_CACHE_SIZE = 2
_DIGEST_CACHE_SIZE = 8
_VERSION_FOLDER = re.compile(r".+-[0-9a-f]{16}$")  # <asset stem>-<digest>

_decoders: dict[str, NumpyField] = {}
# (path, inode, mtime, size) -> digest: a file is hashed again only once it was rewritten.
_FileKey = tuple[str, int, int, int]
_digests: dict[_FileKey, str] = {}


def asset_digest(path: Path) -> str:
    """Content hash naming the asset's grid cache. Remembered for the last few versions of
    files (path, inode, date and size), so that moving the LOD slider over levels not cached
    yet, or drawing the panel, does not hash the whole file each time."""
    path = Path(path).resolve()
    digest = _digests.get(_file_key(path, path.stat()))
    if digest is not None:
        return digest
    data, stat = read_asset_file(path)
    return _remember_digest(path, stat, data)


def _file_key(path: Path, stat: os.stat_result) -> _FileKey:
    return str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size


def _remember_digest(path: Path | None, stat: os.stat_result | None, data: bytes) -> str:
    """The digest of ``data``, remembered for ``path`` when it held them with ``stat``."""
    digest = bytes_digest(data)
    if path is not None and stat is not None:
        _digests[_file_key(path, stat)] = digest
        while len(_digests) > _DIGEST_CACHE_SIZE:  # the oldest go first
            _digests.pop(next(iter(_digests)))
    return digest


def bytes_digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def read_asset_file(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat of the file they were read from (taken from the open
    file, so that they belong together even if the path is replaced meanwhile)."""
    with open(path, "rb") as stream:
        return stream.read(), os.fstat(stream.fileno())


def asset_file(obj: bpy.types.Object) -> Path:
    return Path(bpy.path.abspath(obj.vbnf.asset_path))  # type: ignore[attr-defined]


def packed_bytes(obj: bpy.types.Object) -> bytes | None:
    packed = obj.data.get(PACKED_PROPERTY) if obj.data is not None else None
    return None if packed is None else bytes(packed)


def asset_bytes(obj: bpy.types.Object) -> bytes:
    """The bytes of the asset version the object shows: its packed copy, else the file while
    it still holds that version."""
    packed = packed_bytes(obj)
    if packed is not None:
        return packed
    path = asset_file(obj)
    if not path.is_file():
        raise VbnfError("the asset file is missing (pack it to carry it inside the .blend)", path)
    data, stat = read_asset_file(path)
    if _remember_digest(path, stat, data) != obj.vbnf.asset_digest:  # type: ignore[attr-defined]
        raise VbnfError("the asset changed on disk since it was imported: reload it", path)
    return data


def asset_state(obj: bpy.types.Object) -> str:
    """What is wrong between the object and its asset file, for the panel ("" when nothing):
    a rewritten file ("changed on disk") or a missing one that no packed copy stands in for."""
    path = asset_file(obj)
    try:
        digest = asset_digest(path)
    except OSError:
        if packed_bytes(obj) is not None:
            return ""
        return f"asset file missing: {path}"
    if digest != obj.vbnf.asset_digest:  # type: ignore[attr-defined]
        return "asset changed on disk: reload"
    return ""


def decoder_for(obj: bpy.types.Object) -> NumpyField:
    """A decoder of the object's asset version, kept for the last few versions so moving the
    slider over levels that are not cached yet reads and prepares the asset once."""
    digest = obj.vbnf.asset_digest  # type: ignore[attr-defined]
    decoder = _decoders.pop(digest, None)
    if decoder is None:
        decoder = NumpyField(read_asset(asset_bytes(obj), keep_intact=True).field)
    _decoders[digest] = decoder
    while len(_decoders) > _DECODER_CACHE_SIZE:
        _decoders.pop(next(iter(_decoders)))
    return decoder


def cache_root() -> Path:
    """Where level grids are cached: beside the .blend, else in the add-on's user folder."""
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//")) / CACHE_FOLDER
    try:
        return Path(bpy.utils.extension_path_user(__package__, path=CACHE_FOLDER, create=True))
    except ValueError:  # running as a legacy add-on from a repository checkout
        return Path(bpy.utils.user_resource("DATAFILES", path=f"vbnf_blender/{CACHE_FOLDER}"))


def stored_path(path: str | Path, start: str | None = None) -> str:
    """A path as Blender should store it: relative (``//``) to the folder ``start``, by default
    the open .blend's when there is one; as given where it cannot be relative."""
    if start is not None or bpy.data.filepath:
        try:
            return bpy.path.relpath(str(path), start=start)
        except ValueError:  # another drive on Windows
            pass
    return str(path)


def import_asset(
    path: Path, collection: bpy.types.Collection, level: int | None = None
) -> bpy.types.Object:
    """A new Volume object showing the asset (see :func:`attach_asset`). A failed import
    leaves nothing behind: no object, no Volume, no material."""
    path = Path(path).resolve()
    data = bpy.data.volumes.new(path.stem)
    obj = bpy.data.objects.new(path.stem, data)
    collection.objects.link(obj)
    try:
        attach_asset(obj, path, level)
    except BaseException:
        bpy.data.objects.remove(obj)
        bpy.data.volumes.remove(data)
        raise
    data.materials.append(radiance_material())
    return obj


def attach_asset(
    obj: bpy.types.Object, path: Path, level: int | None = None, data: bytes | None = None
) -> None:
    """Make a Volume object show the asset at ``level`` (default: its finest complete level),
    storing the asset's per-level byte sizes on it for the panel. Also refreshes an object
    whose asset file was rewritten (a re-bake, a reload). ``data``: the asset's bytes, when
    they do not come from ``path``. Levels after a truncated or corrupted chunk are left out,
    with ``import_warning`` saying which and why."""
    path = Path(path).resolve()
    stat = None
    if data is None:
        try:
            data, stat = read_asset_file(path)  # read once, for the summary and the digest
        except OSError as error:  # in the words of the engine's reader
            raise AssetError(f"cannot open ({error.strerror})", path) from error
    try:
        info = asset_info(data, keep_intact=True)
    except AssetError as error:  # name the file, as reading it by its path would
        if error.path is not None:
            raise
        raise AssetError(str(error), path) from error
    if not any(entry["present"] for entry in info["levels"]):
        reason = "; ".join(info["warnings"]) or "the file holds no complete level"
        raise AssetError(f"no complete level: {reason}", path)
    settings = obj.vbnf  # type: ignore[attr-defined]
    if packed_bytes(obj) is not None:
        obj.data[PACKED_PROPERTY] = data  # type: ignore[index]  # the packed copy follows
    settings.asset_path = stored_path(path)
    settings.asset_digest = _remember_digest(path, stat, data)
    settings.fill_from_info(info)
    settings.import_warning = "; ".join(info["warnings"])
    settings.shown_level = -1
    wanted = settings.max_level if level is None else level
    settings.lod = min(max(wanted, settings.min_level), settings.max_level)  # loads the grids
    if settings.lod_error:
        raise VbnfError(settings.lod_error)


def reload_asset(obj: bpy.types.Object) -> None:
    """Show the asset file as it is now (after a re-bake or an edit on disk), at the level
    shown before where the new file has it; a packed copy is replaced by the new bytes."""
    settings = obj.vbnf  # type: ignore[attr-defined]
    attach_asset(obj, asset_file(obj), settings.lod)


def pack_asset(obj: bpy.types.Object) -> None:
    """Carry the asset's bytes (every level) inside the .blend, on the Volume datablock."""
    obj.data[PACKED_PROPERTY] = asset_bytes(obj)  # type: ignore[index]


def unpack_asset(obj: bpy.types.Object) -> Path:
    """Drop the packed copy, first writing it to the asset path if no file is there; returns
    that path."""
    data = packed_bytes(obj)
    path = asset_file(obj)
    if data is not None and not path.is_file():
        atomic_write_bytes(path, data)
    volume: Any = obj.data
    if PACKED_PROPERTY in volume:
        del volume[PACKED_PROPERTY]
    return path


def is_preview(obj: bpy.types.Object) -> bool:
    """Whether the object shows a neural field, told by its material's marker, which is a
    plain custom property, so this works even where the add-on is not registered (batch)."""
    materials = obj.data.materials if obj.type == "VOLUME" else []  # type: ignore[union-attr]
    return any(m is not None and m.get(MATERIAL_MARKER) for m in materials)


def level_file(obj: bpy.types.Object, level: int) -> Path:
    settings = obj.vbnf  # type: ignore[attr-defined]
    folder = f"{asset_file(obj).stem}-{settings.asset_digest}"
    return cache_root() / folder / f"level_{level}-{level_grids.QUALITY.tag}.vdb"


def show_level(obj: bpy.types.Object, level: int) -> None:
    """Point the object's Volume at the grids of ``level``, writing them first if missing."""
    settings = obj.vbnf  # type: ignore[attr-defined]
    path = level_file(obj, level)
    voxel_count = None
    if path.is_file():  # used now (access time): the cache bound keeps it longest
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    else:
        voxel_count = write_level_vdb(decoder_for(obj), level, path)
        prune_cache(keep=path)
    volume = _unpacked_volume(obj)
    volume.filepath = stored_path(path)
    volume.grids.load()
    if volume.grids.error_message:
        raise VbnfError(f"Blender cannot load the grids ({volume.grids.error_message})", path)
    settings.voxel_count = count_voxels(path) if voxel_count is None else voxel_count
    settings.shown_level = level


def _unpacked_volume(obj: bpy.types.Object) -> Any:
    """The object's Volume, replaced by an unpacked twin if File > External Data > Pack
    Resources packed its grid file: a packed Volume keeps showing the packed grids whatever
    its file path says, and Blender offers no way to drop the packed data alone."""
    volume: Any = obj.data
    if volume.packed_file is None:
        return volume
    name = volume.name
    volume.name = f"{name} (packed grids)"
    twin: Any = bpy.data.volumes.new(name)
    for material in volume.materials:
        twin.materials.append(material)
    for key in volume.keys():  # noqa: SIM118  # an ID's custom properties
        twin[key] = volume[key]
    obj.data = twin
    if volume.users == 0:
        bpy.data.volumes.remove(volume)
    return twin


def prune_cache(keep: Path | None = None) -> None:
    """Remove grid caches the open file does not need: older versions of the assets its
    objects show, grids made with other settings, and past :data:`CACHE_LIMIT_BYTES` the
    least recently used levels of any asset (not those on screen, nor files written in the
    last minute, which another Blender sharing the folder may be using). Whatever another
    .blend sharing the folder then misses, it decodes again."""
    root = cache_root()
    if not root.is_dir():
        return
    shown = {keep} if keep is not None else set()
    versions = set()
    for obj in bpy.data.objects:
        settings = getattr(obj, "vbnf", None)
        if obj.type == "VOLUME" and settings is not None and settings.asset_digest:
            versions.add(f"{asset_file(obj).stem}-{settings.asset_digest}")
            shown.add(level_file(obj, settings.shown_level))
    stems = {version.rsplit("-", 1)[0] for version in versions}
    current_ending = f"-{level_grids.QUALITY.tag}.vdb"
    files = []
    for folder in root.iterdir():
        if not (folder.is_dir() and _VERSION_FOLDER.match(folder.name)):
            continue
        if folder.name not in versions and folder.name.rsplit("-", 1)[0] in stems:
            shutil.rmtree(folder, ignore_errors=True)  # an older version of a shown asset
            continue
        for path in folder.glob("level_*.vdb"):
            if folder.name in versions and not path.name.endswith(current_ending):
                path.unlink(missing_ok=True)
            else:
                files.append(path)
    _bound(files, shown)


def _bound(files: list[Path], shown: set[Path]) -> None:
    """Unlink the least recently used of ``files`` not in ``shown`` until the rest fit
    (show_level sets a file's access time when it shows it; its modification time stays the
    time it was decoded)."""
    stats = {}
    for path in files:
        with contextlib.suppress(OSError):  # another Blender may prune the same folder
            stats[path] = path.stat()
    total = sum(stat.st_size for stat in stats.values())
    recent_ns = time.time_ns() - int(RECENT_WRITE_S * 1e9)
    for path in sorted(stats, key=lambda p: stats[p].st_atime_ns):
        if total <= CACHE_LIMIT_BYTES:
            break
        if path not in shown and stats[path].st_mtime_ns < recent_ns:
            path.unlink(missing_ok=True)
            total -= stats[path].st_size
