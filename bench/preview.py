"""How faithful is the Blender preview? Cycles' render of the imported Volume against the
engine's own render of the same asset, level by level, on a scene of assets no one here wrote.

Run ``python -m bench.preview --out out/preview``. The scene (:func:`build_artist_scene`):
Blender's own Suzanne in gold metal (view-dependent colour), a cube wrapped in the photograph
matplotlib ships as sample data (fine texture) and a wire-frame icosphere (thin parts), lit by
Blender's bundled ``studio.exr`` HDRI. The first run bakes it with the add-on's pipeline and
keeps the asset and the dataset in ``OUT``; later runs reuse them, so a change of the preview
can be measured in seconds.

For every level the table gives the PSNR of the engine's render (its torch renderer, the score
the bake reports) and of Cycles' render of the imported Volume, both against the Cycles
ground truth of the held-out views, RGB over white.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_DIR = Path(__file__).resolve().parents[1]
for _path in (REPO_DIR, REPO_DIR / "addon"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import bpy  # noqa: E402
from vbnf_blender import level_grids, register, scenes  # noqa: E402
from vbnf_blender.bake_job import BakeJob, BakeSettings  # noqa: E402

from bench.demo import (  # noqa: E402
    add_small_bake_arguments,
    configure_render,
    mean_psnr,
    render_views,
    small_bake_settings,
)
from core.data.dataset import load_split  # noqa: E402

ASSET_NAME = "artist.vbnf"
DATASET_NAME = "dataset"
ENGINE_SCORES_NAME = "engine_psnr.json"
TEXTURE_PATH = Path(
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg"
)  # under site-packages: a photograph shipped in matplotlib's wheel


def texture_file() -> Path:
    """matplotlib's sample photograph (matplotlib is pinned in requirements.txt)."""
    import matplotlib

    return Path(matplotlib.__file__).parent.parent / TEXTURE_PATH


def artist_scene(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Gold Suzanne, a photo-textured cube and a wire-frame icosphere under ``studio.exr``."""
    scenes.set_hdri_world(scene)
    gold = scenes.principled("gold", (1.0, 0.77, 0.34), {"Metallic": 1.0, "Roughness": 0.25})
    monkey = scenes.add_mesh(scene, "gold monkey", "monkey", (-0.45, 0.0, 0.1), (0.2, 0, 0.4))
    subdivision: Any = monkey.modifiers.new("Subdivision", "SUBSURF")
    subdivision.levels = subdivision.render_levels = 1
    monkey.data.shade_smooth()  # type: ignore[union-attr]
    photo = scenes.principled("photo", inputs={"Roughness": 0.6})
    tree = photo.node_tree
    assert tree is not None
    image_node: Any = tree.nodes.new("ShaderNodeTexImage")
    image_node.image = bpy.data.images.load(str(texture_file()), check_existing=True)
    tree.links.new(image_node.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    cube = scenes.add_mesh(
        scene, "photo cube", "cube", (0.75, 0.1, -0.15), (0.0, 0.0, 0.6), size=0.75, calc_uvs=True
    )
    wire = scenes.add_mesh(
        scene, "wire ball", "icosphere", (0.2, -0.75, 0.35), subdivisions=1, radius=0.4
    )
    wireframe: Any = wire.modifiers.new("Wireframe", "WIREFRAME")
    wireframe.thickness = 0.025
    steel = scenes.principled("blue steel", (0.2, 0.45, 0.9), {"Metallic": 0.7, "Roughness": 0.3})
    return [scenes.assign(monkey, gold), scenes.assign(cube, photo), scenes.assign(wire, steel)]


def build_artist_scene() -> scenes.BuiltScene:
    scene = bpy.data.scenes.new("VBNF artist")
    objects = artist_scene(scene)
    scene.view_layers[0].update()
    return scenes.BuiltScene(scene, objects)


def bake_once(out_dir: Path, settings: BakeSettings) -> tuple[Path, Path, dict[int, float]]:
    """Bake the artist scene into ``out_dir`` unless an earlier run did; the asset, the
    dataset folder and the engine's PSNR per level."""
    asset = out_dir / ASSET_NAME
    dataset_dir = out_dir / "work" / DATASET_NAME
    scores_path = out_dir / ENGINE_SCORES_NAME
    if not scores_path.is_file():
        built = build_artist_scene()
        job = BakeJob(built.scene, settings, asset, work_dir=out_dir / "work")
        started = time.monotonic()
        job.run(on_progress=lambda p: None)
        print(f"baked {asset} in {time.monotonic() - started:.0f} s")
        scores_path.write_text(json.dumps(job.progress.level_psnr))
    scores = {int(level): value for level, value in json.loads(scores_path.read_text()).items()}
    return asset, dataset_dir, scores


def preview_psnr(
    asset: Path,
    dataset_dir: Path,
    out_dir: Path,
    samples: int = 16,
    levels: list[int] | None = None,
) -> dict[int, tuple[float, int, float]]:
    """Import ``asset`` into an empty scene (with whichever VBNF add-on is registered: the
    checkout's or the installed extension) and render every level with Cycles from the
    held-out cameras: level -> (PSNR, active voxels, seconds to decode the level)."""
    bpy.ops.wm.read_homefile(use_empty=True)  # keeps the add-on registered
    importer: Any = bpy.ops.import_scene
    assert importer.vbnf(filepath=str(asset), level=0) == {"FINISHED"}
    scene: Any = bpy.context.scene
    obj: Any = bpy.context.view_layer.objects.active  # type: ignore[union-attr]
    split = load_split(dataset_dir, "test")
    camera = configure_render(scene, split, out_dir / "render.png")
    scene.cycles.samples = samples
    settings = obj.vbnf
    results = {}
    for item in settings.levels:
        if levels is not None and item.level not in levels:
            continue
        started = time.monotonic()
        settings.lod = item.level
        decode_s = time.monotonic() - started
        if settings.lod_error:
            raise SystemExit(f"level {item.level}: {settings.lod_error}")
        renders = render_views(scene, camera, split, out_dir / "renders" / f"level_{item.level}")
        results[item.level] = (mean_psnr(renders, split), settings.voxel_count, decode_s)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/preview"))
    add_small_bake_arguments(parser)
    parser.add_argument("--voxels-per-cell", type=int, default=level_grids.QUALITY.voxels_per_cell)
    parser.add_argument(
        "--voxels-per-coarsest-cell",
        type=int,
        default=level_grids.QUALITY.voxels_per_coarsest_cell,
    )
    parser.add_argument("--supersample", type=int, default=level_grids.QUALITY.supersample)
    parser.add_argument("--sh-degree", type=int, default=level_grids.QUALITY.sh_degree)
    parser.add_argument("--fit-directions", type=int, default=level_grids.QUALITY.fit_directions)
    parser.add_argument("--render-samples", type=int, default=16)
    parser.add_argument("--levels", type=int, nargs="*", help="levels to render (default: all)")
    args = parser.parse_args(argv)
    level_grids.QUALITY = level_grids.PreviewQuality(
        args.voxels_per_cell,
        args.voxels_per_coarsest_cell,
        args.supersample,
        args.sh_degree,
        args.fit_directions,
    )
    out_dir = args.out.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    register()
    asset, dataset_dir, engine = bake_once(out_dir, small_bake_settings(args))
    results = preview_psnr(asset, dataset_dir, out_dir, args.render_samples, args.levels)
    print(level_grids.QUALITY)
    columns = ("level", "voxels", "decode s", "engine dB", "Cycles dB", "gap")
    print(" ".join(f"{name:>9}" for name in columns))
    for level, (score, voxels, decode_s) in results.items():
        reference = engine.get(level, float("nan"))
        print(
            f"{level:>9} {voxels:>9} {decode_s:9.2f} {reference:9.2f} {score:9.2f} "
            f"{score - reference:9.2f}"
        )
    print(f"mean gap {np.mean([s - engine[lv] for lv, (s, _, _) in results.items()]):.2f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
