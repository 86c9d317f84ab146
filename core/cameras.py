"""Camera placement shared by the Cycles capture and the built-in synthetic scene (numpy).

Views are spread evenly over a sphere (or its upper half) with a Fibonacci lattice; test views
use the same lattice rotated by half the golden angle, so they fall between training views.
Cameras follow Blender's convention: they look down their local -Z axis with +Y up; world up
is +Z.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def fibonacci_directions(count: int, hemisphere: bool = False, phase: float = 0.0) -> np.ndarray:
    """``count`` unit vectors spread evenly over the sphere (z >= 0 only with ``hemisphere``).
    ``phase`` in [0, 1) rotates the lattice by that fraction of the golden angle."""
    index = np.arange(count, dtype=np.float64) + 0.5
    z_low = 0.05 if hemisphere else -1.0  # keep hemisphere views just above the horizon
    z = 1.0 - (1.0 - z_low) * index / count
    radius = np.sqrt(np.clip(1.0 - z * z, 0.0, 1.0))
    azimuth = GOLDEN_ANGLE * (index + phase)
    return np.stack([radius * np.cos(azimuth), radius * np.sin(azimuth), z], axis=-1)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world matrix [4, 4] of a camera at ``eye`` looking at ``target``, +Z world up
    (falling back to +Y when looking straight up or down)."""
    eye, target = np.asarray(eye, dtype=np.float64), np.asarray(target, dtype=np.float64)
    backward = eye - target
    backward /= np.linalg.norm(backward)
    up = np.array([0.0, 0.0, 1.0])
    if abs(float(backward @ up)) > 0.999:
        up = np.array([0.0, 1.0, 0.0])
    right = np.cross(up, backward)
    right /= np.linalg.norm(right)
    camera_up = np.cross(backward, right)
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2], matrix[:3, 3] = right, camera_up, backward, eye
    return matrix


def framing_distance(radius: float, fov_rad: float, margin: float = 1.1) -> float:
    """Distance at which a sphere of ``radius`` just fills a view of angle ``fov_rad``."""
    return margin * radius / math.sin(0.5 * fov_rad)


def orbit_cameras(
    center: np.ndarray,
    distance: float,
    count: int,
    hemisphere: bool = False,
    phase: float = 0.0,
) -> np.ndarray:
    """Camera-to-world matrices [count, 4, 4] on a sphere around ``center``, all facing it."""
    directions = fibonacci_directions(count, hemisphere, phase)
    return np.stack([look_at(center + distance * d, center) for d in directions])
