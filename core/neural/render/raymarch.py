"""Per-voxel stratified sampling and volumetric compositing (torch).

Rays are traced (:class:`.accel.OctreeAccel`) against the occupied cells of the coarsest
feature level, front to back; each cell a ray crosses gets 16 stratified samples (paper
section 7.2). Samples of all rays are kept
*packed*: one flat array sorted by ray, then by distance, with ``ray_index`` saying which ray a
sample belongs to. Compositing is two steps, as in nerfacc: per-sample weights from the
transmittance (an exclusive cumulative sum of ``density * step`` within each ray), then any
per-sample value accumulated with them (colour, opacity, expected depth), against a
transparent background.

This is the reference the CUDA kernels in ``cuda/`` are checked against, so it favours plain,
vectorised tensor code over cleverness.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...limits import SAMPLES_PER_VOXEL


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

    def select(self, rows: torch.Tensor) -> PackedSamples:
        """The samples at ``rows`` (increasing, so the pack stays sorted by ray)."""
        return PackedSamples(self.ray_index[rows], self.t[rows], self.step[rows], self.points[rows])


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


def sample_weights(
    density: torch.Tensor, step: torch.Tensor, ray_index: torch.Tensor, num_rays: int
) -> torch.Tensor:
    """Compositing weight [P] of each packed sample (``ray_index`` non-decreasing).

    ``T_i = exp(-sum_{j<i} sigma_j * step_j)`` within the ray, ``w_i = T_i (1 - exp(-sigma_i *
    step_i))``. The exclusive sum is taken as a global cumulative sum minus the value at each
    ray's first sample, in float64 so long packs do not lose precision.
    """
    optical_depth = density * step
    inclusive = torch.cumsum(optical_depth.double(), dim=0)
    exclusive = inclusive - optical_depth.double()
    counts = torch.bincount(ray_index, minlength=num_rays)
    first_sample = torch.cumsum(counts, dim=0) - counts
    exclusive = exclusive - exclusive[first_sample[ray_index]]
    transmittance = torch.exp(-exclusive).float()
    return transmittance * -torch.expm1(-optical_depth)  # exact for thin media


def accumulate(
    weights: torch.Tensor, values: torch.Tensor | None, ray_index: torch.Tensor, num_rays: int
) -> torch.Tensor:
    """Per-ray sum of ``weights * values`` ([R, C] for values [P, C], [R] for values [P]);
    ``values=None`` sums the weights alone (the ray's opacity)."""
    if values is None:
        return weights.new_zeros(num_rays).index_add(0, ray_index, weights)
    weighted = weights[:, None] * values if values.dim() == 2 else weights * values
    return values.new_zeros(num_rays, *values.shape[1:]).index_add(0, ray_index, weighted)


def composite(
    density: torch.Tensor,
    rgb: torch.Tensor,
    samples: PackedSamples,
    num_rays: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied colour [R, 3] and alpha [R] of packed samples."""
    weights = sample_weights(density, samples.step, samples.ray_index, num_rays)
    colour = accumulate(weights, rgb, samples.ray_index, num_rays)
    return colour, accumulate(weights, None, samples.ray_index, num_rays)


def composite_round(
    density: torch.Tensor,
    rgb: torch.Tensor,
    step: torch.Tensor,
    voxel_offsets: torch.Tensor,
    samples_per_voxel: int,
    termination_threshold: float,
    colour: torch.Tensor,
    transmittance: torch.Tensor,
) -> None:
    """Blend one early-exit round into ``colour`` [R, 3] and ``transmittance`` [R] in place;
    ray r's voxels of the round are ``voxel_offsets[r]:voxel_offsets[r + 1]``, front to back,
    ``samples_per_voxel`` samples each. Voxel by voxel, a ray stops before the first voxel it
    reaches with transmittance at or below the threshold, so the result does not depend on
    how voxels are grouped into rounds."""
    num_rays = int(transmittance.numel())
    counts = voxel_offsets[1:] - voxel_offsets[:-1]
    num_voxels = int(voxel_offsets[-1]) if num_rays else 0
    if num_voxels == 0:
        return
    voxel_of_sample = torch.arange(num_voxels, device=density.device).repeat_interleave(
        samples_per_voxel
    )
    weights = sample_weights(density, step, voxel_of_sample, num_voxels)
    voxel_colour = accumulate(weights, rgb, voxel_of_sample, num_voxels)
    voxel_alpha = accumulate(weights, None, voxel_of_sample, num_voxels)
    ray_of_voxel = torch.repeat_interleave(
        torch.arange(num_rays, device=density.device), counts, output_size=num_voxels
    )
    rank = torch.arange(num_voxels, device=density.device) - voxel_offsets[ray_of_voxel]
    by_rank = torch.argsort(rank, stable=True)  # rank 0 of every ray, then rank 1, ...
    rank_starts = torch.bincount(rank, minlength=int(counts.max())).cumsum(0).tolist()
    begin = 0
    for end in rank_starts:
        voxels = by_rank[begin:end]
        begin = end
        rays = ray_of_voxel[voxels]
        live = transmittance[rays] > termination_threshold
        if not bool(live.any()):
            break
        voxels, rays = voxels[live], rays[live]
        colour[rays] += transmittance[rays, None] * voxel_colour[voxels]
        transmittance[rays] = transmittance[rays] * (1.0 - voxel_alpha[voxels])


def normalize_rays(
    origins_world: np.ndarray, directions_world: np.ndarray, scale: float, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map world rays into the octree cube. Directions become unit length in world space, then
    scaled with the points, so ``t`` stays a world-space distance and density is per world unit.
    Returns normalised origins, normalised directions and the unit world directions (for the
    view encoding)."""
    unit = directions_world / np.linalg.norm(directions_world, axis=-1, keepdims=True)
    return (origins_world - offset) * scale, unit * scale, unit
