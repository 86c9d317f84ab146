"""Where cameras go around a target, and what intrinsics a Blender camera has.

Pure math on numpy arrays, no bpy: the Cycles capture, the built-in synthetic scene and the
decoder's view averaging share it, and it can be tested without rendering anything.
Conventions match ``core.data.dataset``: a pose is a 4x4 camera-to-world matrix of a Blender camera
(looks down its -Z axis, +Y up), the world's up axis is +Z, and lengths are in scene units
(called metres in names).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import dataset

WORLD_UP = np.array([0.0, 0.0, 1.0])
GOLDEN_ANGLE_RAD = math.pi * (3.0 - math.sqrt(5.0))
# Near and far clipping planes as fractions of the gap in front of / extent behind the target:
# near stays well clear of the surface, far leaves room for the world behind the target.
NEAR_CLIP_FRACTION = 0.1
FAR_CLIP_FACTOR = 2.0
TEST_ROTATION_CANDIDATES = 64
# Fraction of the image's shorter side the bounding sphere spans: as large as possible, with a
# margin that keeps the pixel filter's blur of the silhouette off the image border.
FRAME_FILL = 0.9

# One set of points to bound: points in an object's local space and its object-to-world matrix.
# Instances of one object share the local array, so a scatter of 100k blades of grass costs one
# vertex array, not 100k copies in world space.
LocalPoints = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class BoundingSphere:
    """A sphere enclosing the capture target, in world space."""

    center_m: np.ndarray  # [3]
    radius_m: float


@dataclass(frozen=True)
class ViewPlan:
    """Camera poses of both splits plus the lens and clipping that frame the target."""

    target: BoundingSphere  # the sphere around the geometry the cameras frame
    train_poses: np.ndarray  # [N, 4, 4] camera-to-world
    test_poses: np.ndarray  # [M, 4, 4] camera-to-world
    fov_rad: float  # full angle of the image's shorter side
    distance_m: float  # from each camera to the sphere's centre
    clip_start_m: float
    clip_end_m: float


def bounding_sphere(parts: Sequence[LocalPoints]) -> BoundingSphere:
    """Sphere around the centre of the points' world-space box, just large enough to hold them.

    Two streaming passes (box, then farthest point) keep memory at one object's vertices. The
    box centre is not the smallest enclosing sphere's centre, but within a few percent of it for
    the compact objects a radiance field is baked from, and it is exact for symmetric ones.
    """
    if not parts or all(len(local) == 0 for local, _ in parts):
        raise ValueError("no points to bound")
    lower = np.full(3, np.inf)
    upper = np.full(3, -np.inf)
    for world in _world_points(parts):
        lower = np.minimum(lower, world.min(axis=0))
        upper = np.maximum(upper, world.max(axis=0))
    center = 0.5 * (lower + upper)
    radius_sq = max(float(np.max(np.sum((w - center) ** 2, axis=1))) for w in _world_points(parts))
    if radius_sq <= 0.0:
        raise ValueError("all points coincide, so there is nothing to frame")
    return BoundingSphere(center, math.sqrt(radius_sq))


def _world_points(parts: Sequence[LocalPoints]) -> Iterator[np.ndarray]:
    """Each part's points in world space, one part at a time (a generator, so a pass holds one
    object's vertices, not all of them)."""
    return (
        local @ matrix[:3, :3].T + matrix[:3, 3]
        for local, matrix in parts
        if len(local)  # an empty mesh contributes nothing
    )


def fibonacci_directions(
    count: int, *, hemisphere: bool, azimuth_offset_rad: float = 0.0
) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere or its upper (+Z) half.

    A Fibonacci lattice gives near-uniform coverage for any count (no clustering at the poles
    as with latitude/longitude grids) and is deterministic, so re-captures are reproducible.
    Samples sit at the centres of equal-area bands, so none lies exactly on a pole (where the
    world-up look-at would be undefined) or, for a hemisphere, on the horizon.
    """
    index = np.arange(count, dtype=np.float64) + 0.5
    z = 1.0 - index / count if hemisphere else 1.0 - 2.0 * index / count
    ring_radius = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    azimuth = GOLDEN_ANGLE_RAD * np.arange(count) + azimuth_offset_rad
    return np.stack([ring_radius * np.cos(azimuth), ring_radius * np.sin(azimuth), z], axis=-1)


def interleaved_directions(
    train_directions: np.ndarray, count: int, *, hemisphere: bool
) -> np.ndarray:
    """``count`` test directions that fall between the training directions.

    A test view that coincides with a training view measures memorisation, not novel-view
    quality. The test lattice is turned about +Z to whichever of a fixed set of angles keeps it
    farthest (in its closest pair) from every training direction.
    """
    best_directions = fibonacci_directions(count, hemisphere=hemisphere)
    if count == 0:
        return best_directions
    best_separation = -np.inf
    for step in range(TEST_ROTATION_CANDIDATES):
        offset = 2.0 * math.pi * step / TEST_ROTATION_CANDIDATES
        candidate = fibonacci_directions(count, hemisphere=hemisphere, azimuth_offset_rad=offset)
        separation = float(np.min(1.0 - candidate @ train_directions.T))
        if separation > best_separation:
            best_directions, best_separation = candidate, separation
    return best_directions


def framing_distance_m(radius_m: float, fov_rad: float, fill: float = FRAME_FILL) -> float:
    """Distance at which a sphere of ``radius_m`` spans ``fill`` of a view's shorter side, that
    side spanning the angle ``fov_rad``.

    The silhouette of a sphere at distance d is a cone of half-angle asin(r / d); its image
    spans tan of that angle, which is set to ``fill`` times tan(fov / 2).
    """
    silhouette_rad = math.atan(fill * math.tan(0.5 * fov_rad))
    return radius_m / math.sin(silhouette_rad)


def look_at(eye_m: np.ndarray, target_m: np.ndarray) -> np.ndarray:
    """Camera-to-world matrix of a Blender camera at ``eye_m`` looking at ``target_m``, +Z up.

    Looking straight up or down, world up is parallel to the view axis; +Y then stands in for it
    so the roll stays defined.
    """
    forward = np.asarray(target_m, dtype=np.float64) - np.asarray(eye_m, dtype=np.float64)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, WORLD_UP)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, up, -forward, eye_m
    return pose


def plan_views(
    sphere: BoundingSphere,
    *,
    train_views: int,
    test_views: int,
    hemisphere: bool,
    fov_deg: float,
) -> ViewPlan:
    """Cameras on a sphere around the target, all looking at its centre, framing it fully."""
    fov_rad = math.radians(fov_deg)
    distance = framing_distance_m(sphere.radius_m, fov_rad)
    train_dirs = fibonacci_directions(train_views, hemisphere=hemisphere)
    test_dirs = interleaved_directions(train_dirs, test_views, hemisphere=hemisphere)
    return ViewPlan(
        target=sphere,
        train_poses=_orbit_poses(sphere.center_m, train_dirs, distance),
        test_poses=_orbit_poses(sphere.center_m, test_dirs, distance),
        fov_rad=fov_rad,
        distance_m=distance,
        clip_start_m=NEAR_CLIP_FRACTION * (distance - sphere.radius_m),
        clip_end_m=FAR_CLIP_FACTOR * (distance + sphere.radius_m),
    )


def _orbit_poses(center_m: np.ndarray, directions: np.ndarray, distance_m: float) -> np.ndarray:
    poses = [look_at(center_m + distance_m * d, center_m) for d in directions]
    return np.stack(poses) if poses else np.zeros((0, 4, 4))


def blender_intrinsics(
    *,
    resolution_x_px: int,
    resolution_y_px: int,
    lens_mm: float,
    sensor_width_mm: float,
    sensor_height_mm: float,
    sensor_fit: str,
    shift_x: float = 0.0,
    shift_y: float = 0.0,
    pixel_aspect_x: float = 1.0,
    pixel_aspect_y: float = 1.0,
) -> dataset.Intrinsics:
    """Pinhole intrinsics of a perspective Blender camera, as Blender itself computes them.

    Mirrors ``BKE_camera_params_compute_viewplane``: the sensor size applies to the image width
    or to its (pixel-aspect-corrected) height depending on the sensor fit, lens shift is measured
    in units of that same fitted dimension, and a non-square pixel aspect makes fy differ from
    fx. Getting this wrong shifts or stretches every ray of the dataset.
    """
    aspect_x_px = pixel_aspect_x * resolution_x_px
    aspect_y_px = pixel_aspect_y * resolution_y_px
    fit_horizontal = sensor_fit == "HORIZONTAL" or (
        sensor_fit == "AUTO" and aspect_x_px >= aspect_y_px
    )
    sensor_mm = sensor_height_mm if sensor_fit == "VERTICAL" else sensor_width_mm
    y_per_x = pixel_aspect_y / pixel_aspect_x  # Blender's "ycor": height of a pixel / its width
    fitted_px = resolution_x_px if fit_horizontal else y_per_x * resolution_y_px
    fx = lens_mm * fitted_px / sensor_mm
    return dataset.Intrinsics(
        width=resolution_x_px,
        height=resolution_y_px,
        fx=fx,
        fy=fx / y_per_x,
        cx=0.5 * resolution_x_px - shift_x * fitted_px,
        cy=0.5 * resolution_y_px + shift_y * fitted_px / y_per_x,
    )
