"""Ray-octree traversal, per-voxel stratified sampling and volumetric compositing (torch).

Rays are traced against the occupied cells of the coarsest feature level, front to back; each
cell a ray crosses gets 16 stratified samples (paper section 7.2). Samples of all rays are kept
*packed*: one flat array sorted by ray, then by distance, with ``ray_index`` saying which ray a
sample belongs to. Compositing uses transmittance from an exclusive cumulative sum of
``density * step`` within each ray, and returns premultiplied colour and alpha against a
transparent background.

This is the reference the CUDA kernels in ``cuda/`` are checked against, so it favours plain,
vectorised tensor code over cleverness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...asset.octree import SparseOctree
from ...limits import SAMPLES_PER_VOXEL

_MIN_DIRECTION = 1e-9


@dataclass
class VoxelHits:
    """Cells crossed by rays at the traversal level: packed, sorted by ray then entry distance."""

    ray_index: torch.Tensor  # [H] int64
    cell_index: torch.Tensor  # [H] int64
    t_in: torch.Tensor  # [H]
    t_out: torch.Tensor  # [H]


@dataclass
class PackedSamples:
    ray_index: torch.Tensor  # [P] int64, non-decreasing
    t: torch.Tensor  # [P] distance along the (unit, world-space) ray
    step: torch.Tensor  # [P] length of the ray segment each sample stands for
    points: torch.Tensor  # [P, 3] normalised coordinates


class OctreeTracer(nn.Module):
    """Front-to-back traversal of the octree down to ``level``, as level-synchronous descent:
    (ray, cell) pairs that hit a cell's box are expanded into that cell's occupied children."""

    def __init__(self, octree: SparseOctree, level: int) -> None:
        super().__init__()
        self.level = level
        for depth in range(level + 1):
            cells = torch.from_numpy(octree.cells[depth]).double()
            self.register_buffer(f"cell_min_{depth}", cells * (2.0 / (1 << depth)) - 1.0, False)
            if depth < level:
                children = torch.from_numpy(octree.children(depth))
                self.register_buffer(f"children_{depth}", children, persistent=False)

    def _cell_min(self, depth: int) -> torch.Tensor:
        return getattr(self, f"cell_min_{depth}")

    def forward(self, origins: torch.Tensor, directions: torch.Tensor) -> VoxelHits:
        """Hits of rays (normalised origins [R, 3], directions [R, 3]) with the level's cells."""
        origins, directions = origins.double(), directions.double()
        safe = torch.where(directions.abs() < _MIN_DIRECTION, _MIN_DIRECTION, directions)
        inverse = 1.0 / safe
        ray = torch.arange(origins.shape[0], device=origins.device)
        cell = torch.zeros_like(ray)
        for depth in range(self.level + 1):
            size = 2.0 / (1 << depth)
            t_in, t_out = _slab(origins[ray], inverse[ray], self._cell_min(depth)[cell], size)
            hit = t_out > torch.clamp(t_in, min=0.0)
            ray, cell, t_in, t_out = ray[hit], cell[hit], t_in[hit], t_out[hit]
            if depth == self.level:
                break
            children = getattr(self, f"children_{depth}")[cell]  # [K, 8]
            occupied = children >= 0
            ray = ray[:, None].expand(-1, 8)[occupied]
            cell = children[occupied]
        t_in = torch.clamp(t_in, min=0.0)
        order = torch.argsort(t_in, stable=True)
        order = order[torch.argsort(ray[order], stable=True)]
        return VoxelHits(ray[order], cell[order], t_in[order].float(), t_out[order].float())


def _slab(
    origins: torch.Tensor, inverse: torch.Tensor, box_min: torch.Tensor, size: float
) -> tuple[torch.Tensor, torch.Tensor]:
    near = (box_min - origins) * inverse
    far = (box_min + size - origins) * inverse
    return torch.minimum(near, far).amax(dim=-1), torch.maximum(near, far).amin(dim=-1)


def sample_hits(
    hits: VoxelHits,
    origins: torch.Tensor,
    directions: torch.Tensor,
    generator: torch.Generator | None,
    samples_per_voxel: int = SAMPLES_PER_VOXEL,
) -> PackedSamples:
    """``samples_per_voxel`` stratified samples in each hit cell: sample k sits at a uniformly
    jittered position inside the k-th of equal bins (bin centres when ``generator`` is None)."""
    count = hits.ray_index.numel()
    if generator is None:
        jitter = torch.full((count, samples_per_voxel), 0.5, device=origins.device)
    else:
        jitter = torch.rand(count, samples_per_voxel, generator=generator).to(origins.device)
    bins = torch.arange(samples_per_voxel, device=origins.device, dtype=torch.float32)
    length = (hits.t_out - hits.t_in)[:, None]
    t = hits.t_in[:, None] + length * (bins + jitter) / samples_per_voxel
    step = (length / samples_per_voxel).expand(-1, samples_per_voxel)
    ray_index = hits.ray_index[:, None].expand(-1, samples_per_voxel).reshape(-1)
    t = t.reshape(-1)
    points = origins[ray_index] + directions[ray_index] * t[:, None]
    return PackedSamples(ray_index, t, step.reshape(-1), points)


def composite(
    density: torch.Tensor,
    rgb: torch.Tensor,
    samples: PackedSamples,
    num_rays: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied colour [R, 3] and alpha [R] of packed samples.

    ``T_i = exp(-sum_{j<i} sigma_j * step_j)`` within the ray, ``w_i = T_i (1 - exp(-sigma_i *
    step_i))``. The exclusive sum is taken as a global cumulative sum minus the value at each
    ray's first sample, in float64 so long packs do not lose precision.
    """
    optical_depth = density * samples.step
    inclusive = torch.cumsum(optical_depth.double(), dim=0)
    exclusive = inclusive - optical_depth.double()
    counts = torch.bincount(samples.ray_index, minlength=num_rays)
    first_sample = torch.cumsum(counts, dim=0) - counts
    exclusive = exclusive - exclusive[first_sample[samples.ray_index]]
    transmittance = torch.exp(-exclusive).float()
    weights = transmittance * -torch.expm1(-optical_depth)  # exact for thin media
    colour = rgb.new_zeros(num_rays, 3).index_add(0, samples.ray_index, weights[:, None] * rgb)
    alpha = weights.new_zeros(num_rays).index_add(0, samples.ray_index, weights)
    return colour, alpha


def normalize_rays(
    origins_world: np.ndarray, directions_world: np.ndarray, scale: float, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map world rays into the octree cube. Directions become unit length in world space, then
    scaled with the points, so ``t`` stays a world-space distance and density is per world unit.
    Returns normalised origins, normalised directions and the unit world directions (for the
    view encoding)."""
    unit = directions_world / np.linalg.norm(directions_world, axis=-1, keepdims=True)
    return (origins_world - offset) * scale, unit * scale, unit
