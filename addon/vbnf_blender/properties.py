"""The add-on's data: bake settings per scene, bake status per session, asset state per object.

- ``Scene.vbnf_bake`` (:class:`BakeSettingsProperties`): what the Bake button does; saved with
  the .blend like any render setting.
- ``WindowManager.vbnf_bake_status`` (:class:`BakeStatusProperties`): the running bake's
  progress for the panel; window-manager data is never saved, so a reopened file cannot show a
  bake that is not running.
- ``Object.vbnf`` (:class:`AssetProperties`): on an imported Volume, the asset it shows, its
  per-level byte sizes (read once from the asset header, so the panel draws without decoding)
  and ``lod``, the level-of-detail slider whose update swaps the grids.
"""

from __future__ import annotations

import traceback
from typing import Any

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import compat, volume
from .bake_job import BakeSettings
from .engine import MAX_LEVEL, MAX_TRAIN_BITWIDTH, VbnfError

_DEFAULTS = BakeSettings()


class BakeSettingsProperties(bpy.types.PropertyGroup):
    target: EnumProperty(  # type: ignore[valid-type]
        name="Target",
        items=[
            ("SCENE", "Scene", "Bake every rendered object of the scene"),
            ("SELECTION", "Selection", "Bake the selected objects only"),
        ],
        default="SCENE",
    )
    views: IntProperty(  # type: ignore[valid-type]
        name="Views",
        description="Training views rendered around the target",
        default=_DEFAULTS.capture.train_views,
        min=4,
        soft_max=400,
    )
    resolution: IntProperty(  # type: ignore[valid-type]
        name="Resolution",
        description="Side of the square training images in pixels",
        default=_DEFAULTS.capture.resolution_px,
        min=16,
        soft_max=1024,
        subtype="PIXEL",
    )
    samples: IntProperty(  # type: ignore[valid-type]
        name="Samples",
        description="Cycles samples per training view",
        default=_DEFAULTS.capture.samples,
        min=1,
        soft_max=1024,
    )
    hemisphere: BoolProperty(  # type: ignore[valid-type]
        name="Upper Hemisphere",
        description="Cameras only above the target's centre, for objects standing on a floor",
        default=_DEFAULTS.capture.hemisphere,
    )
    fov_deg: FloatProperty(  # type: ignore[valid-type]
        name="Field of View",
        description="Full angle the capture cameras see, in degrees: narrower comes closer",
        default=_DEFAULTS.capture.fov_deg,
        min=1.0,
        max=170.0,
        soft_min=10.0,
        soft_max=90.0,
        precision=1,
    )
    bitwidth: IntProperty(  # type: ignore[valid-type]
        name="Bitwidth",
        description="Bits per codebook index: the codebook has 2^b entries",
        default=_DEFAULTS.bitwidth,
        min=1,
        max=MAX_TRAIN_BITWIDTH["codebook"],
    )
    min_level: IntProperty(  # type: ignore[valid-type]
        name="Coarsest Level",
        description="Coarsest octree level with features",
        default=_DEFAULTS.min_level,
        min=0,
        max=MAX_LEVEL,
    )
    max_level: IntProperty(  # type: ignore[valid-type]
        name="Finest Level",
        description="Finest octree level with features",
        default=_DEFAULTS.max_level,
        min=0,
        max=MAX_LEVEL,
    )
    epochs: IntProperty(  # type: ignore[valid-type]
        name="Epochs",
        description="Passes over all training rays",
        default=_DEFAULTS.epochs,
        min=1,
        soft_max=200,
    )
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device",
        items=[
            ("cpu", "CPU", "Train on the CPU"),
            ("cuda", "CUDA", "Train on an NVIDIA GPU (PyTorch with CUDA)"),
        ],
        default=_DEFAULTS.device,
    )
    keep_dataset: BoolProperty(  # type: ignore[valid-type]
        name="Keep Dataset",
        description=(
            "After a successful bake, keep the rendered views (a NeRF-style dataset folder "
            "that other tools read) beside the asset as <name>.dataset"
        ),
        default=_DEFAULTS.keep_dataset,
    )
    output_dir: StringProperty(  # type: ignore[valid-type]
        name="Output Folder",
        description="Folder for the .vbnf file; empty: next to the .blend file",
        default="",
        subtype="DIR_PATH",
        options=compat.PATH_OPTIONS,
    )


class BakeStatusProperties(bpy.types.PropertyGroup):
    running: BoolProperty(default=False)  # type: ignore[valid-type]
    cancel_requested: BoolProperty(default=False)  # type: ignore[valid-type]
    stage: StringProperty(default="")  # type: ignore[valid-type]
    message: StringProperty(default="")  # type: ignore[valid-type]
    fraction: FloatProperty(default=0.0, min=0.0, max=1.0)  # type: ignore[valid-type]
    epoch: IntProperty(default=0)  # type: ignore[valid-type]  # 0: not known yet
    psnr: FloatProperty(default=0.0)  # type: ignore[valid-type]  # 0: not known yet
    seconds_left: FloatProperty(default=-1.0)  # type: ignore[valid-type]  # <0: not known
    # The last estimate ("Bake takes about 9 min ...") and the settings it was made for.
    estimate_line: StringProperty(default="")  # type: ignore[valid-type]
    estimate_for: StringProperty(default="")  # type: ignore[valid-type]


class LevelBytesProperties(bpy.types.PropertyGroup):
    level: IntProperty()  # type: ignore[valid-type]
    bytes: IntProperty()  # type: ignore[valid-type]
    cumulative_bytes: IntProperty()  # type: ignore[valid-type]
    present: BoolProperty(default=True)  # type: ignore[valid-type]


def _lod_changed(self: AssetProperties, _context: bpy.types.Context | None) -> None:
    """Clamp the slider to the levels the asset holds, then show that level's grids.

    Update callbacks cannot raise to whoever set the value (Blender prints the exception and
    carries on), so a failure, such as an asset file moved away, is kept in ``lod_error`` for
    the panel and for the importer to report.
    """
    if not self.asset_path:
        return
    clamped = min(max(self.lod, self.min_level), self.max_level)
    if clamped != self.lod:
        self.lod = clamped  # runs this callback again with the clamped value
        return
    try:
        volume.show_level(self.id_data, clamped)  # type: ignore[arg-type]  # an Object
    except Exception as error:  # anything else would vanish into the console
        if not isinstance(error, VbnfError | OSError):
            traceback.print_exc()
        self.lod_error = str(error) or type(error).__name__
    else:
        self.lod_error = ""


class AssetProperties(bpy.types.PropertyGroup):
    asset_path: StringProperty(  # type: ignore[valid-type]
        name="Asset",
        description="The .vbnf file this volume shows",
        subtype="FILE_PATH",
        options=compat.PATH_OPTIONS,
    )
    asset_digest: StringProperty()  # type: ignore[valid-type]  # names the grid cache
    lod: IntProperty(  # type: ignore[valid-type]
        name="Level of Detail",
        description="Octree level shown: finer levels need more of the file streamed",
        min=0,
        max=MAX_LEVEL,
        update=_lod_changed,
    )
    lod_error: StringProperty()  # type: ignore[valid-type]
    min_level: IntProperty()  # type: ignore[valid-type]
    max_level: IntProperty()  # type: ignore[valid-type]  # finest complete level in the file
    voxel_count: IntProperty(name="Voxels")  # type: ignore[valid-type]  # of the shown level
    total_bytes: IntProperty()  # type: ignore[valid-type]
    header_bytes: IntProperty()  # type: ignore[valid-type]
    store: StringProperty()  # type: ignore[valid-type]
    bitwidth: IntProperty()  # type: ignore[valid-type]
    feature_dim: IntProperty()  # type: ignore[valid-type]
    levels: CollectionProperty(type=LevelBytesProperties)  # type: ignore[valid-type]

    def fill_from_info(self, info: dict[str, Any]) -> None:
        """Cache what the panel shows from ``asset_info`` (the header: nothing is decoded)."""
        self.total_bytes = info["total_bytes"]
        self.header_bytes = info["header_bytes"]
        self.store = info["store"]
        self.bitwidth = info["bitwidth"]
        self.feature_dim = info["feature_dim"]
        self.levels.clear()
        for level in info["levels"]:
            item = self.levels.add()
            item.level = level["level"]
            item.bytes = level["bytes"]
            item.cumulative_bytes = level["cumulative_bytes"]
            item.present = level["present"]
        present = [level["level"] for level in info["levels"] if level["present"]]
        self.min_level, self.max_level = info["min_level"], max(present)


CLASSES = (
    BakeSettingsProperties,
    BakeStatusProperties,
    LevelBytesProperties,
    AssetProperties,
)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.vbnf_bake = PointerProperty(type=BakeSettingsProperties)  # type: ignore[attr-defined]
    bpy.types.WindowManager.vbnf_bake_status = PointerProperty(type=BakeStatusProperties)  # type: ignore[attr-defined]
    bpy.types.Object.vbnf = PointerProperty(type=AssetProperties)  # type: ignore[attr-defined]


def unregister() -> None:
    del bpy.types.Object.vbnf  # type: ignore[attr-defined]
    del bpy.types.WindowManager.vbnf_bake_status  # type: ignore[attr-defined]
    del bpy.types.Scene.vbnf_bake  # type: ignore[attr-defined]
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
