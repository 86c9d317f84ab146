"""Rendering a field: differentiable ray batches for training, images for evaluation.

Training renders every sample of every hit voxel (the loss needs them all). Inference adds early
ray termination, the optimisation the paper names as missing (section 7.2): a ray's voxels are
processed in rounds, front to back, and a ray stops once its transmittance falls below
``termination_threshold``; what it skips can change its colour by at most that much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ...data.dataset import Intrinsics, camera_rays
from ..field import TORCH_GATHER, FeatureGather, RadianceField
from .gpu.backend import Backend, torch_backend
from .raymarch import OctreeTracer, PackedSamples, VoxelHits, composite, normalize_rays, sample_hits

DEFAULT_TERMINATION = 1e-4


@dataclass
class RayBatch:
    origins: torch.Tensor  # [R, 3] normalised
    directions: torch.Tensor  # [R, 3] normalised (unit world direction times scale)
    view_directions: torch.Tensor  # [R, 3] unit, world space

    def __len__(self) -> int:
        return int(self.origins.shape[0])

    def subset(self, rows: torch.Tensor) -> RayBatch:
        return RayBatch(self.origins[rows], self.directions[rows], self.view_directions[rows])

    def to(self, device: torch.device) -> RayBatch:
        return RayBatch(
            *(a.to(device) for a in (self.origins, self.directions, self.view_directions))
        )


def rays_for_camera(
    field: RadianceField, camera_to_world: np.ndarray, intrinsics: Intrinsics
) -> RayBatch:
    origins, directions = camera_rays(camera_to_world, intrinsics)
    return make_ray_batch(field, origins, directions)


def make_ray_batch(
    field: RadianceField, origins_world: np.ndarray, directions_world: np.ndarray
) -> RayBatch:
    origins, directions, unit = normalize_rays(
        origins_world, directions_world, field.scale, field.offset
    )
    return RayBatch(*(torch.from_numpy(a).float() for a in (origins, directions, unit)))


def shade(
    field: RadianceField,
    samples: PackedSamples,
    rays: RayBatch,
    lod: int,
    gather: FeatureGather = TORCH_GATHER,
) -> tuple[torch.Tensor, torch.Tensor]:
    return field(samples.points, rays.view_directions[samples.ray_index], lod, gather)


def render_rays(
    field: RadianceField,
    tracer: OctreeTracer,
    rays: RayBatch,
    lod: int,
    generator: torch.Generator | None,
    backend: Backend | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied RGB [R, 3] and alpha [R] of a ray batch, differentiable (training).
    ``backend`` supplies traversal, sampling, the feature gather and compositing (the torch
    reference when None)."""
    backend = backend or torch_backend()
    hits = backend.trace(tracer, rays.origins, rays.directions)
    samples = backend.sample(hits, rays.origins, rays.directions, generator)
    density, rgb = shade(field, samples, rays, lod, backend.gather)
    return backend.composite(density, rgb, samples, len(rays))


@torch.no_grad()
def render_rays_early_exit(
    field: RadianceField,
    tracer: OctreeTracer,
    rays: RayBatch,
    lod: int,
    termination_threshold: float = DEFAULT_TERMINATION,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inference rendering with early ray termination; samples sit at bin centres, so images
    are deterministic."""
    hits = tracer(rays.origins, rays.directions)
    num_rays = len(rays)
    colour = rays.origins.new_zeros(num_rays, 3)
    transmittance = rays.origins.new_ones(num_rays)
    counts = torch.bincount(hits.ray_index, minlength=num_rays)
    first_hit = torch.cumsum(counts, 0) - counts
    rank = torch.arange(hits.ray_index.numel(), device=hits.ray_index.device)
    rank = rank - first_hit[hits.ray_index]
    for round_index in range(int(counts.max()) if num_rays and counts.numel() else 0):
        selected = torch.nonzero(
            (rank == round_index) & (transmittance[hits.ray_index] > termination_threshold)
        ).squeeze(1)
        if selected.numel() == 0:
            break
        round_hits = VoxelHits(
            *(a[selected] for a in (hits.ray_index, hits.cell_index, hits.t_in, hits.t_out))
        )
        samples = sample_hits(round_hits, rays.origins, rays.directions, None)
        density, rgb = shade(field, samples, rays, lod)
        round_colour, round_alpha = composite(density, rgb, samples, num_rays)
        colour += transmittance[:, None] * round_colour
        transmittance = transmittance * (1.0 - round_alpha)
    return colour, 1.0 - transmittance


@torch.no_grad()
def render_image(
    field: RadianceField,
    camera_to_world: np.ndarray,
    intrinsics: Intrinsics,
    lod: int,
    rays_per_chunk: int = 16384,
    termination_threshold: float = DEFAULT_TERMINATION,
    backend: Backend | None = None,
) -> np.ndarray:
    """Premultiplied RGBA image [H, W, 4] in [0, 1] (sRGB) of one camera at one level, rendered
    on the field's device with ``backend`` (the torch reference when None)."""
    render = (backend or torch_backend()).render_early_exit
    device = next(field.parameters()).device
    tracer = OctreeTracer(field.octree, field.config.min_level).to(device)
    rays = rays_for_camera(field, camera_to_world, intrinsics).to(device)
    pixels = []
    for start in range(0, len(rays), rays_per_chunk):
        rows = torch.arange(start, min(start + rays_per_chunk, len(rays)), device=device)
        colour, alpha = render(field, tracer, rays.subset(rows), lod, termination_threshold)
        pixels.append(torch.cat([colour, alpha[:, None]], dim=1))
    image = torch.cat(pixels).clamp(0.0, 1.0).cpu().numpy()
    return image.reshape(intrinsics.height, intrinsics.width, 4)
