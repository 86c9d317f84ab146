"""Showing a ``.vbnf`` asset in Blender: one level decoded into OpenVDB grids in a Volume.

Blender has no Python API to fill a volume in memory, so each level of detail is decoded with
the numpy decoder into a ``.vdb`` file (a ``density`` float grid and a ``color`` vector grid)
that the Volume datablock loads; the LOD slider swaps ``Volume.filepath`` between these files.
They are a cache, derived from the asset alone: kept per level under a folder next to the .blend
(or in the add-on's user folder while the .blend is unsaved), named by a hash of the asset's
bytes so a re-baked asset never shows stale grids, and rewritten whenever one is missing.

Grid layout: level ``L`` gets ``VOXELS_PER_CELL`` voxels per octree cell of that level along
each axis, so ``VOXELS_PER_CELL * 2**L`` across the octree's cube, and only voxels inside the
occupied cells of level ``L`` are evaluated: finer levels show finer detail and cost more
voxels. Values are the decoder's view-averaged density (per scene unit) and colour.

The material reproduces the field's emission-absorption model in Cycles: Principled Volume with
no scattering (black Color and Absorption Color, so extinction is pure absorption at the grid's
density) and emission ``density * color`` (Emission Strength from the density attribute; the
node does not scale emission by density itself). The colour grid is stored linear, since the
field was trained on sRGB-encoded pixels and Cycles works in linear light.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import numpy as np

from .engine import AssetError, NumpyField, VbnfError, asset_info, atomic_path, read_asset

VOXELS_PER_CELL = 2
DENSITY_GRID = "density"
COLOR_GRID = "color"
CACHE_FOLDER = "vbnf_cache"
MATERIAL_NAME = "VBNF Radiance Field"
MATERIAL_MARKER = "vbnf_material"  # custom property telling our material from a user's
# Voxels whose optical depth is below this are left inactive: they change a pixel by less
# than 0.01 %, and leaving them out keeps the grids sparse.
MIN_OPTICAL_DEPTH = 1e-4
# Dense blocks handed to openvdb are at most this many voxels, bounding memory at fine levels.
BLOCK_VOXELS = 1 << 22
_DECODER_CACHE_SIZE = 2
_DIGEST_CACHE_SIZE = 8

_decoders: dict[str, NumpyField] = {}
# (path, inode, mtime, size) -> digest: a file is hashed again only once it was rewritten.
_FileKey = tuple[str, int, int, int]
_digests: dict[_FileKey, str] = {}


def load_openvdb() -> ModuleType:
    """Blender's bundled OpenVDB bindings: ``openvdb`` since 4.4, ``pyopenvdb`` before.

    Under the bpy module they sit outside ``sys.path`` until ``expose_bundled_modules``.
    """
    expose = getattr(bpy.utils, "expose_bundled_modules", None)
    if expose is not None:
        expose()
    try:
        import openvdb

        return openvdb
    except ImportError:
        pass
    try:
        import pyopenvdb

        return pyopenvdb
    except ImportError as error:
        raise VbnfError("this Blender has no OpenVDB Python module (openvdb)") from error


def asset_digest(path: Path) -> str:
    """Content hash naming the asset's grid cache. Remembered for the last few versions of
    files (path, inode, date and size), so that moving the LOD slider over levels not cached
    yet does not hash the whole file each time."""
    path = Path(path).resolve()
    digest = _digests.get(_file_key(path, path.stat()))
    if digest is not None:
        return digest
    data, stat = _read_file(path)
    return _remember_digest(path, stat, data)


def _file_key(path: Path, stat: os.stat_result) -> _FileKey:
    return str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size


def _remember_digest(path: Path, stat: os.stat_result, data: bytes) -> str:
    """The digest of ``data``, which ``path`` held when it had ``stat``, remembered."""
    digest = hashlib.sha1(data).hexdigest()[:16]
    _digests[_file_key(path, stat)] = digest
    while len(_digests) > _DIGEST_CACHE_SIZE:  # the oldest go first
        _digests.pop(next(iter(_digests)))
    return digest


def _read_file(path: Path) -> tuple[bytes, os.stat_result]:
    """The file's bytes and the stat of the file they were read from (taken from the open
    file, so that they belong together even if the path is replaced meanwhile)."""
    with open(path, "rb") as stream:
        return stream.read(), os.fstat(stream.fileno())


def decoder_for(path: Path, digest: str) -> NumpyField:
    """A decoder of the asset, kept for the last few assets so moving the slider over levels
    that are not cached yet reads and prepares the asset once."""
    decoder = _decoders.pop(digest, None)
    if decoder is None:
        decoder = NumpyField(read_asset(path).field)
    _decoders[digest] = decoder
    while len(_decoders) > _DECODER_CACHE_SIZE:
        _decoders.pop(next(iter(_decoders)))
    return decoder


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4).astype(np.float32)


def level_voxels(
    decoder: NumpyField, level: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """Decode level ``level`` on its voxel grid.

    Returns the integer voxel coordinates [N, 3] of voxels that matter, their density [N] and
    linear colour [N, 3], the voxels across the cube and the voxel size in scene units.
    """
    field = decoder.field
    across = VOXELS_PER_CELL << level
    voxel_size_m = 2.0 / (across * field.scale)
    cells = field.octree.cells[level]
    sub = np.stack(np.meshgrid(*[np.arange(VOXELS_PER_CELL)] * 3, indexing="ij"), axis=-1).reshape(
        -1, 3
    )
    ijk = (cells[:, None, :] * VOXELS_PER_CELL + sub[None]).reshape(-1, 3)
    centres = field.to_world((ijk + 0.5) * (2.0 / across) - 1.0)
    density, rgb = decoder.query(centres, level)
    keep = density * voxel_size_m >= MIN_OPTICAL_DEPTH
    return ijk[keep], density[keep], srgb_to_linear(rgb[keep]), across, voxel_size_m


def write_level_vdb(decoder: NumpyField, level: int, path: Path) -> int:
    """Decode ``level`` and write its grids to ``path``; returns the active voxel count.

    Written atomically: a reader never sees half a file, and an interrupted write leaves no
    file behind that the cache would trust."""
    openvdb = load_openvdb()
    field = decoder.field
    ijk, density, rgb, across, voxel_size_m = level_voxels(decoder, level)
    # Voxel i's centre is at normalised -1 + (i + 0.5) * 2 / across; VDB puts it at index i.
    origin = field.to_world(np.full(3, -1.0 + 1.0 / across))
    grids = []
    for name, values in ((DENSITY_GRID, density), (COLOR_GRID, rgb)):
        grid = openvdb.FloatGrid() if values.ndim == 1 else openvdb.Vec3SGrid()
        grid.name = name
        if values.ndim == 1:
            grid.gridClass = openvdb.GridClass.FOG_VOLUME
        transform = openvdb.createLinearTransform(voxelSize=voxel_size_m)
        transform.postTranslate(tuple(float(x) for x in origin))
        grid.transform = transform
        _fill_grid(grid, ijk, values)
        grids.append(grid)
    voxel_count = int(grids[0].activeVoxelCount())
    with atomic_path(path) as temporary:
        openvdb.write(str(temporary), grids=grids)
    return voxel_count


def _fill_grid(grid: Any, ijk: np.ndarray, values: np.ndarray) -> None:
    """Activate ``values`` at voxels ``ijk`` through dense blocks along x (openvdb's Python API
    fills grids from dense arrays only); voxels left at zero stay inactive."""
    if ijk.shape[0] == 0:
        return
    low = ijk.min(axis=0)
    extent = ijk.max(axis=0) - low + 1
    slab = max(1, BLOCK_VOXELS // int(extent[1] * extent[2]))
    for x0 in range(int(low[0]), int(low[0] + extent[0]), slab):
        inside = (ijk[:, 0] >= x0) & (ijk[:, 0] < x0 + slab)
        local = ijk[inside] - np.array([x0, low[1], low[2]])
        block = np.zeros((slab, extent[1], extent[2], *values.shape[1:]), dtype=np.float32)
        block[local[:, 0], local[:, 1], local[:, 2]] = values[inside]
        grid.copyFromArray(block, ijk=(x0, int(low[1]), int(low[2])))


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
    """A new Volume object showing the asset (see :func:`attach_asset`)."""
    path = Path(path).resolve()
    data = bpy.data.volumes.new(path.stem)
    data.materials.append(radiance_material())
    obj = bpy.data.objects.new(path.stem, data)
    collection.objects.link(obj)
    try:
        attach_asset(obj, path, level)
    except BaseException:
        bpy.data.objects.remove(obj)
        bpy.data.volumes.remove(data)
        raise
    return obj


def attach_asset(obj: bpy.types.Object, path: Path, level: int | None = None) -> None:
    """Make a Volume object show the asset at ``level`` (default: its finest complete level),
    storing the asset's per-level byte sizes on it for the panel. Also refreshes an object
    whose asset file was rewritten (a re-bake)."""
    path = Path(path).resolve()
    try:
        data, stat = _read_file(path)  # read once, for the summary and the digest
    except OSError as error:  # in the words of the engine's reader
        raise AssetError(f"cannot open ({error.strerror})", path) from error
    try:
        info = asset_info(data)
    except AssetError as error:  # name the file, as reading it by its path would
        if error.path is not None:
            raise
        raise AssetError(str(error), path) from error
    if not any(entry["present"] for entry in info["levels"]):
        raise AssetError("the file holds no complete level", path)
    settings = obj.vbnf  # type: ignore[attr-defined]
    settings.asset_path = stored_path(path)
    settings.asset_digest = _remember_digest(path, stat, data)
    settings.fill_from_info(info)
    settings.lod = settings.max_level if level is None else level  # loads the grids
    if settings.lod_error:
        raise VbnfError(settings.lod_error)


def is_preview(obj: bpy.types.Object) -> bool:
    """Whether the object shows a neural field, told by its material's marker, which is a
    plain custom property, so this works even where the add-on is not registered (batch)."""
    materials = obj.data.materials if obj.type == "VOLUME" else []  # type: ignore[union-attr]
    return any(m is not None and m.get(MATERIAL_MARKER) for m in materials)


def level_file(obj: bpy.types.Object, level: int) -> Path:
    settings = obj.vbnf  # type: ignore[attr-defined]
    asset = Path(bpy.path.abspath(settings.asset_path))
    return cache_root() / f"{asset.stem}-{settings.asset_digest}" / f"level_{level}.vdb"


def show_level(obj: bpy.types.Object, level: int) -> None:
    """Point the object's Volume at the grids of ``level``, writing them first if missing."""
    settings = obj.vbnf  # type: ignore[attr-defined]
    path = level_file(obj, level)
    voxel_count = None
    if not path.is_file():
        asset = Path(bpy.path.abspath(settings.asset_path))
        if not asset.is_file():
            raise VbnfError("the asset file is missing", asset)
        if asset_digest(asset) != settings.asset_digest:  # levels would not match each other
            raise VbnfError("the file changed since it was imported: import it again", asset)
        voxel_count = write_level_vdb(decoder_for(asset, settings.asset_digest), level, path)
    volume: Any = obj.data
    volume.filepath = stored_path(path)
    volume.grids.load()
    if volume.grids.error_message:
        raise VbnfError(f"Blender cannot load the grids ({volume.grids.error_message})", path)
    settings.voxel_count = count_voxels(path) if voxel_count is None else voxel_count


def count_voxels(path: Path) -> int:
    """Active voxels of a cached level's density grid, from the statistics OpenVDB writes into
    the file's metadata (no voxel data is read)."""
    metadata = load_openvdb().readGridMetadata(str(path), DENSITY_GRID).metadata
    return int(metadata["file_voxel_count"])


def radiance_material() -> bpy.types.Material:
    """The shared volume material (see the module docstring), created on first use."""
    existing = bpy.data.materials.get(MATERIAL_NAME)
    if existing is not None and existing.get(MATERIAL_MARKER):
        return existing
    material = bpy.data.materials.new(MATERIAL_NAME)
    material[MATERIAL_MARKER] = True
    tree = material.node_tree
    if tree is None:  # Blender < 5.0 creates material node trees only on request
        material.use_nodes = True
        tree = material.node_tree
    assert tree is not None
    tree.nodes.clear()
    nodes: Any = tree.nodes
    output = nodes.new("ShaderNodeOutputMaterial")
    shader = nodes.new("ShaderNodeVolumePrincipled")
    density = nodes.new("ShaderNodeAttribute")
    color = nodes.new("ShaderNodeAttribute")
    density.attribute_name, color.attribute_name = DENSITY_GRID, COLOR_GRID
    shader.inputs["Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    shader.inputs["Absorption Color"].default_value = (0.0, 0.0, 0.0, 1.0)
    shader.inputs["Density"].default_value = 1.0
    shader.inputs["Density Attribute"].default_value = DENSITY_GRID
    tree.links.new(density.outputs["Fac"], shader.inputs["Emission Strength"])
    tree.links.new(color.outputs["Color"], shader.inputs["Emission Color"])
    tree.links.new(shader.outputs["Volume"], output.inputs["Volume"])
    for column, node in enumerate((density, shader, output)):
        node.location = (300.0 * column - 300.0, 0.0)
    color.location = (-300.0, -200.0)
    return material
