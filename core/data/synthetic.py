"""A built-in synthetic RGB-D scene, rendered by a small analytic ray caster (numpy).

Tests and the engine-only demo need a dataset without Blender; this writes one in the standard
folder layout: a few opaque coloured shapes (spheres and boxes, one striped and one checkered so
there is texture to learn), Lambert-shaded under a fixed light, with alpha edges from 2x2
supersampling and planar depth of the pixel centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import interop
from .cameras import BoundingSphere, plan_views
from .dataset import FrameRecord, Intrinsics, camera_rays, write_depth_exr, write_rgba_png

LIGHT_DIRECTION = np.array([0.4, -0.5, 0.75]) / np.linalg.norm([0.4, -0.5, 0.75])
AMBIENT = 0.35
SCENE_RADIUS = 1.2
FOV_DEG = 40.0


@dataclass(frozen=True)
class Shape:
    kind: str  # "sphere" or "box"
    center: tuple[float, float, float]
    size: float  # sphere radius or box half-extent
    colour: tuple[float, float, float]
    pattern: str = "plain"  # "plain", "stripes" or "checker"


SHAPES = (
    Shape("sphere", (0.0, 0.0, 0.0), 0.55, (0.85, 0.25, 0.2), "stripes"),
    Shape("box", (0.75, 0.35, -0.15), 0.3, (0.2, 0.45, 0.9), "checker"),
    Shape("sphere", (-0.55, 0.6, 0.25), 0.28, (0.3, 0.8, 0.35)),
    Shape("box", (-0.3, -0.7, -0.35), 0.22, (0.95, 0.8, 0.2)),
)


def _intersect(
    shape: Shape, origins: np.ndarray, directions: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distance to the first hit along each ray (inf on a miss) and the surface normal there."""
    centre = np.asarray(shape.center)
    if shape.kind == "sphere":
        offset = origins - centre
        a = np.sum(directions * directions, axis=-1)
        b = np.sum(offset * directions, axis=-1)
        c = np.sum(offset * offset, axis=-1) - shape.size**2
        disc = b * b - a * c
        t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0.0))) / a, np.inf)
        t = np.where(t > 1e-6, t, np.inf)
        normals = origins + directions * np.where(np.isfinite(t), t, 0.0)[:, None] - centre
        return t, normals / np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-12)
    safe = np.where(np.abs(directions) < 1e-12, 1e-12, directions)
    near = (centre - shape.size - origins) / safe
    far = (centre + shape.size - origins) / safe
    t_near = np.minimum(near, far)
    t_enter, t_exit = t_near.max(-1), np.maximum(near, far).min(-1)
    t = np.where((t_exit >= t_enter) & (t_enter > 1e-6), t_enter, np.inf)
    axis = t_near.argmax(-1)
    normals = np.zeros_like(origins)
    normals[np.arange(len(axis)), axis] = -np.sign(safe[np.arange(len(axis)), axis])
    return t, normals


def _albedo(shape: Shape, points: np.ndarray) -> np.ndarray:
    base = np.broadcast_to(np.asarray(shape.colour), points.shape).copy()
    local = points - np.asarray(shape.center)
    if shape.pattern == "stripes":
        stripe = (np.sin(local[:, 2] * 18.0) > 0)[:, None]
        return np.where(stripe, base, base * 0.35 + 0.6)
    if shape.pattern == "checker":
        cells = np.floor(local * 6.0).astype(int).sum(-1) % 2
        return np.where(cells[:, None] == 1, base, 1.0 - base * 0.5)
    return base


def _shade(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Colour [N, 3] and hit distance [N] (inf on a miss) of rays against all shapes."""
    best_t = np.full(origins.shape[0], np.inf)
    colour = np.zeros_like(origins)
    for shape in SHAPES:
        t, normals = _intersect(shape, origins, directions)
        closer = t < best_t
        if not closer.any():
            continue
        points = origins[closer] + directions[closer] * t[closer, None]
        lambert = np.clip(normals[closer] @ LIGHT_DIRECTION, 0.0, 1.0)
        colour[closer] = _albedo(shape, points) * (AMBIENT + (1 - AMBIENT) * lambert)[:, None]
        best_t[closer] = t[closer]
    return colour, best_t


def render_view(
    camera_to_world: np.ndarray, intrinsics: Intrinsics
) -> tuple[np.ndarray, np.ndarray]:
    """Straight-alpha RGBA [H, W, 4] (2x2 supersampled) and planar depth [H, W] (0 on a miss)."""
    origins, directions = camera_rays(camera_to_world, intrinsics)
    _, depth = _shade(origins, directions)  # directions have unit -Z extent: t is planar depth
    colour_sum = np.zeros_like(origins)
    coverage = np.zeros(origins.shape[0])
    for dx in (-0.25, 0.25):
        for dy in (-0.25, 0.25):
            shifted = Intrinsics(
                intrinsics.width,
                intrinsics.height,
                intrinsics.fx,
                intrinsics.fy,
                intrinsics.cx - dx,
                intrinsics.cy - dy,
            )
            sub_origins, sub_directions = camera_rays(camera_to_world, shifted)
            colour, t = _shade(sub_origins, sub_directions)
            hit = np.isfinite(t)
            colour_sum += colour * hit[:, None]
            coverage += hit
    alpha = coverage / 4.0
    rgb = np.where(alpha[:, None] > 0, colour_sum / np.maximum(coverage, 1)[:, None], 0.0)
    rgba = np.concatenate([rgb, alpha[:, None]], axis=-1)
    shape = (intrinsics.height, intrinsics.width)
    depth = np.where(np.isfinite(depth), depth, 0.0)
    return rgba.reshape(*shape, 4).astype(np.float32), depth.reshape(shape).astype(np.float32)


def write_synthetic_dataset(
    out_dir: Path, train_views: int = 40, test_views: int = 8, resolution_px: int = 64
) -> Path:
    """Render the scene from cameras on a sphere and write a dataset folder; returns it."""
    if min(train_views, test_views, resolution_px) < 1:
        raise ValueError(
            f"views, test views and resolution must be at least 1, got {train_views}, "
            f"{test_views} and {resolution_px}"
        )
    out_dir = Path(out_dir)
    plan = plan_views(
        BoundingSphere(np.zeros(3), SCENE_RADIUS),
        train_views=train_views,
        test_views=test_views,
        hemisphere=False,
        fov_deg=FOV_DEG,
    )
    focal_px = 0.5 * resolution_px / math.tan(0.5 * plan.fov_rad)
    intrinsics = Intrinsics(
        resolution_px, resolution_px, focal_px, focal_px, 0.5 * resolution_px, 0.5 * resolution_px
    )
    fields = interop.ToolFields.for_plan(plan)
    frames_by_split: dict[str, list[FrameRecord]] = {}
    for split, poses in (("train", plan.train_poses), ("test", plan.test_poses)):
        records = frames_by_split.setdefault(split, [])
        for index, pose in enumerate(poses):
            rgba, depth = render_view(pose, intrinsics)
            record = FrameRecord(f"{split}/r_{index:03d}", f"{split}/r_{index:03d}_depth.exr", pose)
            write_rgba_png(out_dir / f"{record.file_path}.png", rgba)
            write_depth_exr(out_dir / record.depth_file_path, depth)
            interop.write_view_depth(out_dir, record, depth, fields.depth_png)
            records.append(record)
    interop.write_dataset_index(out_dir, intrinsics, frames_by_split, fields)
    return out_dir
