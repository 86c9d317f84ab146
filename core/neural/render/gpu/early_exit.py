"""Inference rendering with early ray termination on the CUDA kernels.

Same result as :func:`..renderer.render_rays_early_exit` (one voxel at a time, a ray stops once
its transmittance is at or below the threshold), organised for a GPU:

- rounds take a growing number of voxels per ray (1, 2, 4, ...), so a frame needs about
  log2(hits per ray) rounds instead of one per voxel. ``composite_round`` still blends voxel by
  voxel and stops a ray exactly where the torch loop would; the price is shading a few voxels
  a finished ray will not use;
- level features come from the lookup and interpolation kernels of ``cuda/field_features.cu``
  (:class:`.ops.KernelGather`) reading each level's corner table, decoded once per
  call (for VQ-AD, one argmax per corner) instead of once per round; the decoder MLP stays in
  torch (cuBLAS).
"""

from __future__ import annotations

import torch

from ....limits import SAMPLES_PER_VOXEL
from ...field import RadianceField
from ..raymarch import OctreeTracer, VoxelHits
from ..renderer import DEFAULT_TERMINATION, RayBatch
from . import ops


@torch.no_grad()
def render_rays_early_exit(
    field: RadianceField,
    tracer: OctreeTracer,
    rays: RayBatch,
    lod: int,
    termination_threshold: float = DEFAULT_TERMINATION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied RGB [R, 3] and alpha [R]; samples at bin centres (deterministic)."""
    num_rays, device = len(rays), rays.origins.device
    hits = ops.trace(tracer, rays.origins, rays.directions)
    colour = torch.zeros(num_rays, 3, dtype=torch.float32, device=device)
    transmittance = torch.ones(num_rays, dtype=torch.float32, device=device)
    if hits.ray_index.numel() == 0:
        return colour, 1.0 - transmittance
    tables = field.corner_tables(lod)
    counts = torch.bincount(hits.ray_index, minlength=num_rays)
    first_hit = torch.cumsum(counts, 0) - counts
    ray_ids = torch.arange(num_rays, device=device)
    max_hits, done, voxels_per_round = int(counts.max()), 0, 1
    while done < max_hits:
        active = transmittance > termination_threshold
        take = torch.clamp(counts - done, 0, voxels_per_round) * active
        ends = torch.cumsum(take, 0)
        total = int(ends[-1])
        if total == 0:
            break
        ray_of = torch.repeat_interleave(ray_ids, take, output_size=total)
        rank = torch.arange(total, device=device) - (ends - take)[ray_of]
        selected = first_hit[ray_of] + done + rank
        round_hits = VoxelHits(
            *(a[selected] for a in (hits.ray_index, hits.cell_index, hits.t_in, hits.t_out))
        )
        samples = ops.sample(round_hits, rays.origins, rays.directions, None)
        view_directions = rays.view_directions[samples.ray_index]
        density, rgb = field(samples.points, view_directions, lod, ops.KERNEL_GATHER, tables)
        voxel_offsets = torch.cat([ends.new_zeros(1), ends])
        ops.composite_round(
            density,
            rgb,
            samples.step,
            voxel_offsets,
            SAMPLES_PER_VOXEL,
            termination_threshold,
            colour,
            transmittance,
        )
        done += voxels_per_round
        voxels_per_round *= 2
    return colour, 1.0 - transmittance
