"""Torch-facing wrappers of the CUDA kernels, with the signatures of the torch reference.

``trace``, ``sample``, ``occupied_samples``, ``composite`` and ``composite_round`` take and
return exactly what ``OctreeAccel.raytrace``, ``occupancy.sample_occupied``,
``Culling.occupied_samples``, and ``composite`` and ``composite_round`` in
:mod:`core.neural.render.raymarch` do (the kernels apply the occupancy :class:`Culling`
themselves: no culled hit or sample is ever written), and :class:`KernelGather` is a
:class:`~core.neural.field.FeatureGather`, so a :class:`Backend` can swap them in; ``composite`` and
the gather's ``interpolate`` are differentiable (:class:`PackedComposite`,
:class:`CornerInterpolation`). Outputs are torch
tensors allocated here (see :mod:`core.neural.render.gpu.kernels` for the launch conventions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ....limits import SAMPLES_PER_VOXEL
from ..accel import LevelIndex, OctreeAccel
from ..occupancy import Culling
from ..raymarch import PackedSamples, VoxelHits
from .kernels import launch, pointer

_SEED_HIGH = 2**63 - 1


@dataclass
class KernelHits(VoxelHits):
    """Hits made by :func:`trace`, packed by ray with ray ids in ``0..num_rays - 1`` by
    construction (each ray writes exactly its own slots), so what is sampled from them needs no
    check on the host before compositing."""

    num_rays: int = 0


@dataclass
class KernelSamples(PackedSamples):
    """Samples :func:`sample` made from :class:`KernelHits`: packed like them."""

    num_rays: int = 0


def trace(
    accel: OctreeAccel,
    origins: torch.Tensor,
    directions: torch.Tensor,
    culling: Culling | None = None,
) -> KernelHits:
    """Cells of ``accel.trace_level`` hit by each ray that ``culling`` keeps (all when None),
    packed by ray and front to back (the same list, order and values as
    ``accel.raytrace(origins, directions, culling)``). Rays are read as float32."""
    device = origins.device
    tables = accel.trace_tables(device)
    origins = origins.float().contiguous()
    directions = directions.float().contiguous()
    num_rays = int(origins.shape[0])
    octree_args = (
        pointer(tables.cell_min, torch.float64),
        pointer(tables.children, torch.int32),
        np.int32(tables.level),
        np.int32(tables.level_start),
        np.int32(tables.num_roots),
        0 if culling is None else pointer(culling.cell_occupied, torch.bool),  # 0: nullptr
    )
    ray_args = (pointer(origins, torch.float32), pointer(directions, torch.float32))
    counts = torch.zeros(num_rays, dtype=torch.int64, device=device)
    launch("trace_count", device, num_rays, *ray_args, np.int32(num_rays), *octree_args,
           pointer(counts, torch.int64))  # fmt: skip
    ends = torch.cumsum(counts, dim=0)
    total = int(ends[-1]) if num_rays else 0
    ray_index = torch.empty(total, dtype=torch.int64, device=device)
    cell_index = torch.empty(total, dtype=torch.int64, device=device)
    t_in = torch.empty(total, dtype=torch.float32, device=device)
    t_out = torch.empty(total, dtype=torch.float32, device=device)
    if total:
        scratch_in = torch.empty(total, dtype=torch.float64, device=device)
        scratch_out = torch.empty(total, dtype=torch.float64, device=device)
        offsets = torch.cat([ends.new_zeros(1), ends])
        launch(
            "trace_write", device, num_rays, *ray_args, np.int32(num_rays), *octree_args,
            pointer(offsets, torch.int64), pointer(ray_index, torch.int64),
            pointer(cell_index, torch.int64), pointer(scratch_in, torch.float64),
            pointer(scratch_out, torch.float64), pointer(t_in, torch.float32),
            pointer(t_out, torch.float32),
        )  # fmt: skip
    return KernelHits(ray_index, cell_index, t_in, t_out, num_rays)


def sample(
    hits: VoxelHits,
    origins: torch.Tensor,
    directions: torch.Tensor,
    generator: torch.Generator | None,
    samples_per_voxel: int = SAMPLES_PER_VOXEL,
    culling: Culling | None = None,
) -> PackedSamples:
    """``samples_per_voxel`` stratified samples per hit cell, less those in sub-cells
    ``culling`` culls (none when None). Without a generator they sit at bin centres and equal
    ``occupancy.sample_occupied``'s bit for bit; with one, the jitter is hashed on the GPU from
    a seed drawn from ``generator`` (same distribution, different numbers; the kept samples are
    those of the unculled call with the same seed). Hits from :func:`trace` give
    :class:`KernelSamples`."""
    device = origins.device
    num_hits = int(hits.ray_index.numel())
    if generator is None:
        jittered, seed = 0, 0
    else:
        jittered = 1
        seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=generator, device=generator.device))
    # Converted inputs are bound to names so they outlive the launch: a temporary freed while
    # the argument list is built could hand its memory to the next temporary.
    hit_ray = hits.ray_index.contiguous()
    hit_t_in = hits.t_in.float().contiguous()
    hit_t_out = hits.t_out.float().contiguous()
    origins = origins.float().contiguous()
    directions = directions.float().contiguous()
    ray_args = (pointer(origins, torch.float32), pointer(directions, torch.float32))
    jitter_args = (np.int32(samples_per_voxel), np.int32(jittered), np.uint64(seed))
    if culling is None:
        total = num_hits * samples_per_voxel
        ray_index, t, step, points = _sample_outputs(total, device)
        launch(
            "sample_voxels", device, total,
            pointer(hit_ray, torch.int64), pointer(hit_t_in, torch.float32),
            pointer(hit_t_out, torch.float32), np.int64(num_hits), *ray_args, *jitter_args,
            pointer(ray_index, torch.int64), pointer(t, torch.float32),
            pointer(step, torch.float32), pointer(points, torch.float32),
        )  # fmt: skip
    else:
        hit_cell = hits.cell_index.contiguous()
        trace_cells = culling.trace_cells.contiguous()
        hit_args = (
            pointer(hit_ray, torch.int64), pointer(hit_cell, torch.int64),
            pointer(hit_t_in, torch.float32), pointer(hit_t_out, torch.float32),
            np.int64(num_hits), *ray_args, *jitter_args, *_culling_args(culling, trace_cells),
        )  # fmt: skip
        counts = torch.zeros(num_hits, dtype=torch.int64, device=device)
        launch("sample_occupied_count", device, num_hits, *hit_args, pointer(counts, torch.int64))
        ends = torch.cumsum(counts, dim=0)
        total = int(ends[-1]) if num_hits else 0  # the host sync that sizes the outputs
        ray_index, t, step, points = _sample_outputs(total, device)
        if total:
            offsets = torch.cat([ends.new_zeros(1), ends])
            launch(
                "sample_occupied_write", device, num_hits, *hit_args,
                pointer(offsets, torch.int64), pointer(ray_index, torch.int64),
                pointer(t, torch.float32), pointer(step, torch.float32),
                pointer(points, torch.float32),
            )  # fmt: skip
    if isinstance(hits, KernelHits):
        return KernelSamples(ray_index, t, step, points, hits.num_rays)
    return PackedSamples(ray_index, t, step, points)


def _sample_outputs(
    total: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Empty ray_index, t, step and points of ``total`` samples."""
    return (
        torch.empty(total, dtype=torch.int64, device=device),
        torch.empty(total, dtype=torch.float32, device=device),
        torch.empty(total, dtype=torch.float32, device=device),
        torch.empty(total, 3, dtype=torch.float32, device=device),
    )


def _culling_args(culling: Culling, trace_cells: torch.Tensor) -> tuple[Any, ...]:
    """The occupancy arguments of the sampling kernels (``trace_cells`` contiguous, kept
    alive by the caller)."""
    return (
        pointer(trace_cells, torch.int64),
        np.int32(culling.level),
        np.int32(culling.sub_bits),
        pointer(culling.occupied, torch.bool),
    )


def occupied_samples(
    culling: Culling,
    hits: VoxelHits,
    samples: PackedSamples,
    samples_per_voxel: int = SAMPLES_PER_VOXEL,
) -> torch.Tensor:
    """Indices of the samples of whole voxels (``samples_per_voxel`` per hit, in hit order, as
    :func:`sample` makes them without culling) that lie in occupied sub-cells: the same as
    ``Culling.occupied_samples``, decided by a kernel."""
    points = samples.points.float().contiguous()
    hit_cell = hits.cell_index.contiguous()
    trace_cells = culling.trace_cells.contiguous()
    num_samples = int(points.shape[0])
    kept = torch.empty(num_samples, dtype=torch.bool, device=points.device)
    launch(
        "mark_occupied_samples", points.device, num_samples,
        pointer(points, torch.float32), np.int64(num_samples), pointer(hit_cell, torch.int64),
        np.int32(samples_per_voxel), *_culling_args(culling, trace_cells),
        pointer(kept, torch.bool),
    )  # fmt: skip
    return torch.nonzero(kept).squeeze(1)


def check_packing(samples: PackedSamples, num_rays: int) -> None:
    """Refuse samples the compositing kernels would not cover: they read ray r's samples as
    ``offsets[r]:offsets[r + 1]`` (:func:`ray_offsets`), so a sample of an unsorted or
    out-of-range ray index would belong to no ray, or to the wrong one, and its outputs would
    be garbage. Costs one host sync, except for :class:`KernelSamples` of as many rays, packed
    by construction."""
    if isinstance(samples, KernelSamples) and samples.num_rays == num_rays:
        return
    ray_index = samples.ray_index
    if ray_index.numel() == 0:
        return
    unsorted = (ray_index[1:] < ray_index[:-1]).any()
    if bool(unsorted | (ray_index[0] < 0) | (ray_index[-1] >= num_rays)):
        raise ValueError(
            f"compositing needs samples packed by ray: ray indices sorted and in 0..{num_rays - 1}"
        )


def ray_offsets(ray_index: torch.Tensor, num_rays: int) -> torch.Tensor:
    """[num_rays + 1] int64: ray r's samples are ``offsets[r]:offsets[r + 1]`` of a packed,
    ray-sorted array."""
    boundaries = torch.arange(num_rays + 1, dtype=torch.int64, device=ray_index.device)
    return torch.searchsorted(ray_index.contiguous(), boundaries).contiguous()


class PackedComposite(torch.autograd.Function):
    """Forward: premultiplied colour and alpha per ray. Backward: the analytic gradient to
    density and colour, per ray back to front (derivation in ``cuda/composite.cu``), using the
    per-sample transmittance the forward pass saves (one float per sample)."""

    @staticmethod
    def forward(
        ctx: Any,
        density: torch.Tensor,
        rgb: torch.Tensor,
        step: torch.Tensor,
        offsets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        device, num_rays = density.device, int(offsets.numel()) - 1
        colour = torch.empty(num_rays, 3, dtype=torch.float32, device=device)
        alpha = torch.empty(num_rays, dtype=torch.float32, device=device)
        transmittance = torch.empty_like(density)
        launch(
            "composite_forward", device, num_rays,
            pointer(density, torch.float32), pointer(step, torch.float32),
            pointer(rgb, torch.float32), pointer(offsets, torch.int64), np.int32(num_rays),
            pointer(colour, torch.float32), pointer(alpha, torch.float32),
            pointer(transmittance, torch.float32),
        )  # fmt: skip
        ctx.save_for_backward(density, rgb, step, offsets, transmittance)
        return colour, alpha

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        grad_colour: torch.Tensor | None,
        grad_alpha: torch.Tensor | None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        density, rgb, step, offsets, transmittance = ctx.saved_tensors
        needs_density, needs_rgb = ctx.needs_input_grad[:2]
        if not (needs_density or needs_rgb):
            return None, None, None, None
        device, num_rays = density.device, int(offsets.numel()) - 1
        grad_colour = (
            torch.zeros(num_rays, 3, dtype=torch.float32, device=device)
            if grad_colour is None
            else grad_colour.float().contiguous()
        )
        grad_alpha = (
            torch.zeros(num_rays, dtype=torch.float32, device=device)
            if grad_alpha is None
            else grad_alpha.float().contiguous()
        )
        grad_density = torch.empty_like(density)
        grad_rgb = torch.empty_like(rgb)
        launch(
            "composite_backward", device, num_rays,
            pointer(density, torch.float32), pointer(step, torch.float32),
            pointer(rgb, torch.float32), pointer(transmittance, torch.float32),
            pointer(offsets, torch.int64), np.int32(num_rays),
            pointer(grad_colour, torch.float32), pointer(grad_alpha, torch.float32),
            pointer(grad_density, torch.float32), pointer(grad_rgb, torch.float32),
        )  # fmt: skip
        return (
            grad_density if needs_density else None,
            grad_rgb if needs_rgb else None,
            None,
            None,
        )


def composite(
    density: torch.Tensor,
    rgb: torch.Tensor,
    samples: PackedSamples,
    num_rays: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Premultiplied colour [R, 3] and alpha [R] of packed samples, like ``raymarch.composite``
    (float32; inputs of other dtypes are converted, differentiably). Raises ValueError for
    samples not packed by ray (:func:`check_packing`)."""
    check_packing(samples, num_rays)
    offsets = ray_offsets(samples.ray_index, num_rays)
    result: tuple[torch.Tensor, torch.Tensor] = PackedComposite.apply(
        density.float().contiguous(),
        rgb.float().contiguous(),
        samples.step.float().contiguous(),
        offsets,
    )
    return result


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
    ray r's voxels of the round are ``voxel_offsets[r]:voxel_offsets[r + 1]``."""
    num_rays = int(transmittance.numel())
    density, rgb = density.float().contiguous(), rgb.float().contiguous()
    step, voxel_offsets = step.float().contiguous(), voxel_offsets.contiguous()
    launch(
        "composite_round", density.device, num_rays,
        pointer(density, torch.float32), pointer(step, torch.float32),
        pointer(rgb, torch.float32), pointer(voxel_offsets, torch.int64), np.int32(num_rays),
        np.int32(samples_per_voxel), np.float32(termination_threshold),
        pointer(colour, torch.float32), pointer(transmittance, torch.float32),
    )  # fmt: skip


# Consecutive points a thread of the gradient kernel folds together before its atomic adds.
GRADIENT_POINTS_PER_THREAD = 16


class CornerInterpolation(torch.autograd.Function):
    """Forward: ``sum_c weights[:, c] * table[rows[:, c]]``. Backward: the table's gradient by
    atomic scatter (weights are not differentiated: they come from points, which are not
    learnt). Compared with torch's per-corner gathers and multiply-adds, no ``[N, k]``
    temporary is allocated, forward or backward, and each table row is read once per point;
    both keep the same 96 bytes per point for the backward."""

    @staticmethod
    def forward(
        ctx: Any, weights: torch.Tensor, rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        if weights.requires_grad:
            raise ValueError("the fused interpolation does not differentiate its weights")
        num_points, feature_dim = int(weights.shape[0]), int(table.shape[1])
        features = table.new_empty(num_points, feature_dim)
        launch(
            "interpolate_corners", table.device, num_points * feature_dim,
            pointer(weights, torch.float32), pointer(rows, torch.int64), np.int64(num_points),
            pointer(table, torch.float32), np.int32(feature_dim),
            pointer(features, torch.float32),
        )  # fmt: skip
        ctx.save_for_backward(weights, rows)
        ctx.table_rows = int(table.shape[0])
        return features

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_features: torch.Tensor) -> tuple[None, None, torch.Tensor | None]:
        if not ctx.needs_input_grad[2]:
            return None, None, None
        weights, rows = ctx.saved_tensors
        grad_table = grad_features.new_zeros(ctx.table_rows, int(grad_features.shape[1]))
        scatter_corner_gradients(weights, rows, grad_features, grad_table)
        return None, None, grad_table


def scatter_corner_gradients(
    weights: torch.Tensor, rows: torch.Tensor, grad_features: torch.Tensor, grad_table: torch.Tensor
) -> None:
    """``grad_table[rows[:, c]] += weights[:, c] * grad_features`` (atomic adds, in place): the
    transpose of ``interpolate_corners``."""
    grad_features = grad_features.float().contiguous()
    num_points, feature_dim = grad_features.shape
    runs = -(-num_points // GRADIENT_POINTS_PER_THREAD)
    launch(
        "interpolate_corners_backward", grad_features.device, runs * feature_dim,
        pointer(weights, torch.float32), pointer(rows, torch.int64), np.int64(num_points),
        pointer(grad_features, torch.float32), np.int32(feature_dim),
        np.int32(GRADIENT_POINTS_PER_THREAD), pointer(grad_table, torch.float32),
    )  # fmt: skip


class KernelGather:
    """The :class:`~core.neural.field.FeatureGather` of the cupy backend: lookup and weights in one
    kernel (instead of ~15 tensor operations), interpolation in one (instead of 16)."""

    def corners(
        self, index: LevelIndex, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        points = points.float().contiguous()
        num_points, device = int(points.shape[0]), points.device
        cell = torch.empty(num_points, dtype=torch.int64, device=device)
        corner_ids = torch.empty(num_points, 8, dtype=torch.int64, device=device)
        weights = torch.empty(num_points, 8, dtype=torch.float32, device=device)
        launch(
            "locate_corners", device, num_points,
            pointer(points, torch.float32), np.int64(num_points), np.int32(index.resolution),
            pointer(index.sorted_keys, torch.int64), np.int64(index.sorted_keys.numel()),
            pointer(index.key_to_cell, torch.int64), pointer(index.cell_corners, torch.int64),
            pointer(cell, torch.int64), pointer(corner_ids, torch.int64),
            pointer(weights, torch.float32),
        )  # fmt: skip
        return cell, corner_ids, weights

    def interpolate(
        self, weights: torch.Tensor, rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor:
        # The kernels index raw memory: a shape mismatch would read (or, in the backward pass,
        # atomically write) outside the tensors instead of raising.
        if weights.dim() != 2 or weights.shape[1] != 8 or rows.shape != weights.shape:
            raise ValueError(f"need weights and rows of [N, 8], got {weights.shape}, {rows.shape}")
        if table.dim() != 2:
            raise ValueError(f"need a table of [rows, k], got {table.shape}")
        features: torch.Tensor = CornerInterpolation.apply(
            weights.float().contiguous(), rows.contiguous(), table.float().contiguous()
        )
        return features

    def scatter_add(
        self, weights: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, into: torch.Tensor
    ) -> None:
        if into.dtype != torch.float32 or not into.is_contiguous():
            raise ValueError("the gradient kernel adds into a contiguous float32 table")
        scatter_corner_gradients(weights.float().contiguous(), rows.contiguous(), grad, into)


KERNEL_GATHER = KernelGather()
