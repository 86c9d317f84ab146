"""The CUDA kernels (``--backend cupy``) against the torch reference, on the same device.

Every test runs twice:

- ``cuda``: the real thing through CuPy (marked ``gpu``; skipped without a CUDA device, CuPy,
  or kernels that compile);
- ``host``: the same ``.cu`` sources compiled for the CPU with g++ (``tests/kernel_host.py``)
  and driven by the unchanged ``core.neural.render.gpu.ops`` wrappers, so the kernels' logic
  and their Python side are checked on CPU-only machines too.

Tolerances:

- traversal and bin-centre sampling: exact (``torch.equal``); both sides do the same IEEE
  operations in the same order, the kernels with ``__*_rn`` intrinsics so no FMA creeps in;
- jittered sampling: structural (each sample inside its bin, points exactly ``o + d t``), since
  the kernel hashes its jitter instead of drawing torch's CPU random numbers;
- compositing forward: ``rtol=1e-5, atol=1e-6`` (fp32, summation order differs); in thin
  media (optical depth ~1e-3 and ~1e-6 per sample) ``rtol=1e-5`` alone;
- compositing gradients: ``rtol=1e-4`` and ``atol`` 1e-5 of the largest reference gradient;
- training feature gather: cells and corner ids exact, weights ``rtol=1e-6, atol=1e-7``;
  interpolated features ``rtol=1e-5, atol=1e-6`` and their gradients like compositing's
  (atomic adds sum in another order);
- inference from decoded corner tables: torch exactly as without tables, the kernels like the
  training features;
- early-exit renders: 99.9 % of rays within ``1e-5``, all within twice the termination
  threshold (a ray whose transmittance rounds across the threshold stops a voxel apart);
- training gradients through ``render_rays`` and ``render_rays_terminated``: ``rtol=1e-3``,
  ``atol`` 1e-4 of the largest.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from kernel_host import GXX, host_launch, host_pointer

from core.asset.octree import SparseOctree
from core.limits import SAMPLES_PER_VOXEL
from core.neural.field import TORCH_GATHER, FieldConfig, RadianceField, TrainableStore
from core.neural.render.accel import LevelIndex, OctreeAccel
from core.neural.render.backend import select_backend, torch_backend
from core.neural.render.gpu import ops
from core.neural.render.gpu.backend import cupy_backend, cupy_unavailable_reason
from core.neural.render.gpu.kernels import import_cupy
from core.neural.render.occupancy import EMPTY_CHECKS, Culling, sample_occupied
from core.neural.render.raymarch import (
    PackedSamples,
    VoxelHits,
    accumulate,
    composite,
    sample_hits,
    sample_weights,
)
from core.neural.render.renderer import (
    DEFAULT_TERMINATION,
    RayBatch,
    render_rays,
    render_rays_early_exit,
    render_rays_terminated,
    shade,
)
from core.neural.trainer import Trainer, TrainingRays, TrainOptions


def cuda_skip_reason() -> str | None:
    """Why the ``cuda`` variants cannot run here. A kernel that fails to compile is not a
    reason to skip: it fails the tests."""
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    try:
        import_cupy()
    except Exception as error:  # ImportError or a broken CUDA library underneath
        return f"CuPy does not import ({error})"
    return None


CUDA_REASON = cuda_skip_reason()
MAX_LEVEL = 6


@pytest.fixture(
    params=[
        pytest.param("host", marks=pytest.mark.skipif(GXX is None, reason="g++ is not installed")),
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(
                    CUDA_REASON is not None, reason=f"needs CUDA and CuPy: {CUDA_REASON}"
                ),
            ],
        ),
    ]
)
def device(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """The device the kernels run on; ``host`` swaps CuPy launches for the g++ build."""
    if request.param == "host":
        monkeypatch.setattr(ops, "launch", host_launch)
        monkeypatch.setattr(ops, "pointer", host_pointer)
        return torch.device("cpu")
    return torch.device("cuda")


def ray_count(device: torch.device, count: int) -> int:
    """Fewer rays on the host build, where the torch reference and the kernels are slow."""
    return count if device.type == "cuda" else count // 4


@pytest.fixture(scope="module")
def octree() -> SparseOctree:
    """Cells around two sphere shells and a box face: sparse, with gaps rays pass through."""
    rng = np.random.default_rng(7)
    directions = rng.normal(size=(6000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shell = np.concatenate([0.6 * directions[:3000], 0.3 * directions[3000:] + [0.4, 0.2, 0.1]])
    face = np.stack([rng.uniform(-0.9, 0.9, 2000), rng.uniform(-0.9, 0.9, 2000),
                     np.full(2000, -0.75)], axis=1)  # fmt: skip
    return SparseOctree.from_points(np.concatenate([shell, face]), MAX_LEVEL, dilation=1)


def make_rays(device: torch.device, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rays from outside the cube towards random points inside it, plus the awkward
    cases: axis-aligned directions (zero components), tiny negative components, origins inside
    the cube and on cell faces, and rays pointing away from the cube."""
    rng = np.random.default_rng(seed)
    count = ray_count(device, count)
    start = rng.normal(size=(count, 3))
    start *= rng.uniform(2.0, 4.0, size=(count, 1)) / np.linalg.norm(start, axis=1, keepdims=True)
    target = rng.uniform(-0.95, 0.95, size=(count, 3))
    direction = target - start
    direction *= 0.7 / np.linalg.norm(direction, axis=1, keepdims=True)
    special_origins = [
        [-3.0, 0.1, 0.2], [0.3, 3.0, -0.1], [0.25, 0.5, -3.0], [0.0, 0.0, 0.0],
        [0.1, -0.2, 0.3], [0.5, 0.5, 3.0], [2.0, 2.0, 2.0], [-1.0, -1.0, -3.0],
    ]  # fmt: skip
    special_directions = [
        [0.7, 0.0, 0.0], [0.0, -0.7, 0.0], [0.0, 0.0, 0.7], [0.3, -0.5, 0.2],
        [1e-12, -1e-12, 0.7], [-1e-10, 0.0, -0.7], [0.4, 0.4, 0.4], [0.0, 0.0, 0.7],
    ]  # fmt: skip
    origins = np.concatenate([start, special_origins]).astype(np.float32)
    directions = np.concatenate([direction, special_directions]).astype(np.float32)
    return torch.from_numpy(origins).to(device), torch.from_numpy(directions).to(device)


@pytest.mark.parametrize("level", [0, 1, 3, MAX_LEVEL])
def test_trace_matches_torch_exactly(
    device: torch.device, octree: SparseOctree, level: int
) -> None:
    accel = OctreeAccel(octree, level, level).to(device)
    origins, directions = make_rays(device, 4096, seed=0)
    expected = accel.raytrace(origins, directions)
    actual = ops.trace(accel, origins, directions)
    assert expected.ray_index.numel() > 0
    for name in ("ray_index", "cell_index", "t_in", "t_out"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name


def test_trace_with_no_rays_and_no_hits(device: torch.device, octree: SparseOctree) -> None:
    accel = OctreeAccel(octree, 3, 3).to(device)
    empty = torch.zeros(0, 3, device=device)
    assert ops.trace(accel, empty, empty).ray_index.numel() == 0
    away = torch.tensor([[3.0, 3.0, 3.0]], device=device)
    assert ops.trace(accel, away, away).ray_index.numel() == 0


def test_trace_write_keeps_to_each_rays_slots(device: torch.device, octree: SparseOctree) -> None:
    """Given slots that disagree with its walk (one too few for every third ray, two too many
    for the next), ``trace_write`` writes exactly ray r's slots ``offsets[r]..offsets[r + 1]``:
    no neighbour's slot, nothing past the end, and spare slots as zero-length hits."""
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 512, seed=17)
    num_rays = int(origins.shape[0])
    expected = accel.raytrace(origins, directions)
    counts = torch.bincount(expected.ray_index, minlength=num_rays)
    slots = counts.clone()
    slots[0::3] = (counts[0::3] - 1).clamp(min=0)
    slots[1::3] += 2
    offsets = torch.cat([slots.new_zeros(1), torch.cumsum(slots, 0)])
    total = int(offsets[-1])
    tables = accel.trace_tables(device)
    guard = -7  # one slot past the end and every slot start out as this
    ray_index, cell_index = (torch.full((total + 1,), guard, device=device) for _ in range(2))
    scratch_in, scratch_out = (torch.full((total + 1,), guard, dtype=torch.float64,
                                          device=device) for _ in range(2))  # fmt: skip
    t_in, t_out = (torch.full((total + 1,), guard, dtype=torch.float32, device=device)
                   for _ in range(2))  # fmt: skip
    p = ops.pointer
    ops.launch(
        "trace_write", device, num_rays, p(origins, torch.float32), p(directions, torch.float32),
        np.int32(num_rays), p(tables.cell_min, torch.float64), p(tables.children, torch.int32),
        np.int32(accel.trace_level), np.int32(tables.level_start), np.int32(tables.num_roots),
        0, p(offsets, torch.int64), p(ray_index, torch.int64), p(cell_index, torch.int64),
        p(scratch_in, torch.float64), p(scratch_out, torch.float64), p(t_in, torch.float32),
        p(t_out, torch.float32),
    )  # fmt: skip
    for written in (ray_index, cell_index, scratch_in, scratch_out, t_in, t_out):
        assert float(written[total]) == guard
    rays = torch.arange(num_rays, device=device)
    assert torch.equal(ray_index[:total], torch.repeat_interleave(rays, slots))
    first_hit = torch.cumsum(counts, 0) - counts
    for ray in range(num_rays):
        begin, end, hit = int(offsets[ray]), int(offsets[ray + 1]), int(first_hit[ray])
        kept = min(int(counts[ray]), int(slots[ray]))
        got = [a[begin : begin + kept] for a in (cell_index, t_in, t_out)]
        if kept == int(counts[ray]):  # every hit has a slot: the same hits, in order
            want = [a[hit : hit + kept] for a in (expected.cell_index, expected.t_in,
                                                   expected.t_out)]  # fmt: skip
            for got_values, want_values in zip(got, want, strict=True):
                assert torch.equal(got_values, want_values), ray
        else:  # one hit dropped: the others, still front to back
            assert set(got[0].tolist()) <= set(expected.cell_index[hit : hit + kept + 1].tolist())
            assert bool((got[1][1:] >= got[1][:-1]).all()), ray
        spare_in, spare_out = t_in[begin + kept : end], t_out[begin + kept : end]
        assert torch.equal(spare_in, spare_out), ray
        if kept:
            assert bool((spare_in == t_out[begin + kept - 1]).all()), ray


def test_bin_centre_samples_match_torch_exactly(device: torch.device, octree: SparseOctree) -> None:
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 2048, seed=1)
    hits = accel.raytrace(origins, directions)
    expected = sample_hits(hits, origins, directions, None)
    actual = ops.sample(hits, origins, directions, None)
    for name in ("ray_index", "t", "step", "points"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name


def test_jittered_samples_are_stratified(device: torch.device, octree: SparseOctree) -> None:
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 2048, seed=2)
    hits = accel.raytrace(origins, directions)
    samples = ops.sample(hits, origins, directions, torch.Generator().manual_seed(5))
    reference = sample_hits(hits, origins, directions, None)
    assert torch.equal(samples.ray_index, reference.ray_index)
    assert torch.equal(samples.step, reference.step)
    length = (hits.t_out - hits.t_in).repeat_interleave(16)
    bins = torch.arange(16, device=device).repeat(hits.t_in.numel())
    bin_start = hits.t_in.repeat_interleave(16) + length * bins / 16
    slack = 1e-6 * (1.0 + float(hits.t_out.abs().max()))
    assert bool((samples.t >= bin_start - slack).all())
    assert bool((samples.t <= bin_start + length / 16 + slack).all())
    jitter = (samples.t - bin_start) / (length / 16).clamp(min=1e-12)
    assert abs(float(jitter[length > 1e-3].mean()) - 0.5) < 0.02
    ray = samples.ray_index
    assert torch.equal(samples.points, origins[ray] + directions[ray] * samples.t[:, None])
    again = ops.sample(hits, origins, directions, torch.Generator().manual_seed(5))
    other = ops.sample(hits, origins, directions, torch.Generator().manual_seed(6))
    assert torch.equal(again.t, samples.t) and not torch.equal(other.t, samples.t)


# --- Empty-space skipping: the kernels cull hits and samples as the torch path does ----------


def culled_accel(device: torch.device, octree: SparseOctree, trace_level: int) -> OctreeAccel:
    """An accel whose occupancy grids cull at random: each sub-cell is kept with probability
    1/2 and every fourth trace cell loses all of its, so every level has culled cells (the
    tracer's decision) and culled sub-cells next to kept ones (the samplers')."""
    accel = OctreeAccel(octree, trace_level, MAX_LEVEL)
    generator = torch.Generator().manual_seed(21 + trace_level)
    occupancy = accel.occupancy
    for lod in range(len(occupancy.levels)):
        grid = occupancy.grid(lod)
        occupied = torch.rand(grid.occupied.shape, generator=generator) < 0.5
        by_cell = occupied.view(-1, grid.sub_cells)
        by_cell[1::4] = False
        grid.occupied.copy_(occupied)
        grid.cell_occupied.copy_(by_cell.any(dim=1))
    occupancy.checks = EMPTY_CHECKS
    return accel.to(device)


def cullings(accel: OctreeAccel) -> list[Culling]:
    """The culling of every level of detail (all active)."""
    found = [accel.occupancy.culling(lod) for lod in range(len(accel.occupancy.levels))]
    assert all(culling is not None for culling in found)
    return [culling for culling in found if culling is not None]


@pytest.mark.parametrize("trace_level", [1, 3])
def test_culled_trace_matches_torch_exactly(
    device: torch.device, octree: SparseOctree, trace_level: int
) -> None:
    accel = culled_accel(device, octree, trace_level)
    origins, directions = make_rays(device, 4096, seed=22)
    unculled = accel.raytrace(origins, directions).ray_index.numel()
    for culling in cullings(accel):
        expected = accel.raytrace(origins, directions, culling)
        actual = ops.trace(accel, origins, directions, culling)
        assert 0 < expected.ray_index.numel() < unculled
        for name in ("ray_index", "cell_index", "t_in", "t_out"):
            assert torch.equal(getattr(actual, name), getattr(expected, name)), name


@pytest.mark.parametrize("trace_level", [1, 3])
def test_culled_bin_centre_samples_match_torch_exactly(
    device: torch.device, octree: SparseOctree, trace_level: int
) -> None:
    """Bin-centre samples of culled sampling, from the unculled hits (so that culled cells'
    sub-cells are tested too) and from the culled ones, torch's and the kernels'."""
    accel = culled_accel(device, octree, trace_level)
    origins, directions = make_rays(device, 2048, seed=23)
    every_hit = accel.raytrace(origins, directions)
    for culling in cullings(accel):
        kernel_hits = ops.trace(accel, origins, directions, culling)
        for hits in (every_hit, accel.raytrace(origins, directions, culling), kernel_hits):
            expected = sample_occupied(hits, origins, directions, None, SAMPLES_PER_VOXEL, culling)
            actual = ops.sample(hits, origins, directions, None, SAMPLES_PER_VOXEL, culling)
            assert 0 < expected.t.numel() < hits.t_in.numel() * SAMPLES_PER_VOXEL
            for name in ("ray_index", "t", "step", "points"):
                assert torch.equal(getattr(actual, name), getattr(expected, name)), name
        made = ops.sample(kernel_hits, origins, directions, None, SAMPLES_PER_VOXEL, culling)
        assert isinstance(made, ops.KernelSamples)  # still packed by ray: no check needed


def test_culled_jittered_samples_are_the_kept_unculled_ones(
    device: torch.device, octree: SparseOctree
) -> None:
    """With jitter, culling in the kernel keeps exactly the samples that sampling everything
    with the same seed and culling afterwards (torch's decision) keeps, bit for bit."""
    accel = culled_accel(device, octree, 3)
    origins, directions = make_rays(device, 2048, seed=24)
    hits = accel.raytrace(origins, directions)
    for culling in cullings(accel):
        every = ops.sample(hits, origins, directions, torch.Generator().manual_seed(5))
        kept = ops.sample(
            hits, origins, directions, torch.Generator().manual_seed(5), SAMPLES_PER_VOXEL,
            culling,
        )  # fmt: skip
        expected = every.select(culling.occupied_samples(hits, every))
        assert 0 < kept.t.numel() < every.t.numel()
        for name in ("ray_index", "t", "step", "points"):
            assert torch.equal(getattr(kept, name), getattr(expected, name)), name


def test_occupied_samples_of_whole_voxels_match_torch(
    device: torch.device, octree: SparseOctree
) -> None:
    """Which samples of whole voxels an early-exit render shades: the kernel's and torch's
    decision, for bin-centre and jittered points, and for points from each hit's entry to its
    exit inclusive, whose coordinates fall on, or by rounding just past, the cell's faces
    (where both clamp into the hit's cell)."""
    accel = culled_accel(device, octree, 3)
    origins, directions = make_rays(device, 2048, seed=25)
    hits = accel.raytrace(origins, directions)
    fraction = torch.arange(SAMPLES_PER_VOXEL, device=device) / (SAMPLES_PER_VOXEL - 1)
    t = (hits.t_in[:, None] + (hits.t_out - hits.t_in)[:, None] * fraction).reshape(-1)
    ray = hits.ray_index.repeat_interleave(SAMPLES_PER_VOXEL)
    ends = PackedSamples(ray, t, torch.zeros_like(t), origins[ray] + directions[ray] * t[:, None])
    bin_centres = ops.sample(hits, origins, directions, None)
    jittered = ops.sample(hits, origins, directions, torch.Generator().manual_seed(7))
    for culling in cullings(accel):
        for samples in (bin_centres, jittered, ends):
            expected = culling.occupied_samples(hits, samples)
            assert 0 < expected.numel() < samples.t.numel()
            assert torch.equal(ops.occupied_samples(culling, hits, samples), expected)


def test_sample_occupied_write_keeps_to_each_hits_slots(
    device: torch.device, octree: SparseOctree
) -> None:
    """Given slots that disagree with its count (one too few for every third hit, two too many
    for the next), ``sample_occupied_write`` writes exactly hit h's slots: its first kept
    samples, then zero-length samples at the hit's exit, nothing past the end."""
    accel = culled_accel(device, octree, 3)
    origins, directions = make_rays(device, 512, seed=26)
    hits = accel.raytrace(origins, directions)
    culling = cullings(accel)[1]
    expected = sample_occupied(hits, origins, directions, None, SAMPLES_PER_VOXEL, culling)
    every = sample_hits(hits, origins, directions, None)
    num_hits = int(hits.t_in.numel())
    kept_hit = culling.occupied_samples(hits, every) // SAMPLES_PER_VOXEL
    counts = torch.bincount(kept_hit, minlength=num_hits)
    slots = counts.clone()
    slots[0::3] = (counts[0::3] - 1).clamp(min=0)
    slots[1::3] += 2
    offsets = torch.cat([slots.new_zeros(1), torch.cumsum(slots, 0)])
    total = int(offsets[-1])
    guard = -7  # one slot past the end and every slot start out as this
    ray_index = torch.full((total + 1,), guard, device=device)
    t, step = (torch.full((total + 1,), guard, dtype=torch.float32, device=device)
               for _ in range(2))  # fmt: skip
    points = torch.full((total + 1, 3), guard, dtype=torch.float32, device=device)
    p = ops.pointer
    trace_cells = culling.trace_cells.contiguous()
    ops.launch(
        "sample_occupied_write", device, num_hits, p(hits.ray_index, torch.int64),
        p(hits.cell_index, torch.int64), p(hits.t_in, torch.float32),
        p(hits.t_out, torch.float32), np.int64(num_hits), p(origins, torch.float32),
        p(directions, torch.float32), np.int32(SAMPLES_PER_VOXEL), np.int32(0), np.uint64(0),
        p(trace_cells, torch.int64), np.int32(culling.level), np.int32(culling.sub_bits),
        p(culling.occupied, torch.bool), p(offsets, torch.int64), p(ray_index, torch.int64),
        p(t, torch.float32), p(step, torch.float32), p(points, torch.float32),
    )  # fmt: skip
    assert int(ray_index[total]) == guard and float(t[total]) == guard
    assert float(step[total]) == guard and bool((points[total] == guard).all())
    hit = torch.repeat_interleave(torch.arange(num_hits, device=device), slots)
    rank = torch.arange(total, device=device) - offsets[hit]
    assert torch.equal(ray_index[:total], hits.ray_index[hit])
    real = rank < counts[hit]
    source = (torch.cumsum(counts, 0) - counts)[hit[real]] + rank[real]
    for name, written in (("t", t), ("step", step), ("points", points)):
        assert torch.equal(written[:total][real], getattr(expected, name)[source]), name
    spare = ~real
    assert bool(spare.any())
    assert torch.equal(t[:total][spare], hits.t_out[hit[spare]])
    assert bool((step[:total][spare] == 0.0).all())


@pytest.mark.parametrize("lod", [0, 3])
def test_culled_training_render_matches_torch(
    device: torch.device, octree: SparseOctree, lod: int
) -> None:
    """A field whose own occupancy checks culled part of it: the training render's samples
    are identical on both backends, its colour, opacity and expected depth equal to float
    rounding."""
    field = make_field(device, octree, "codebook", -0.3, culled=True)
    rays = make_batch(device, 2048, seed=27)
    num_rays = len(rays)
    results = []
    for backend in (torch_backend(), cupy_backend()):
        samples = field.accel.raymarch(
            rays.origins, rays.directions, lod, None, backend.trace, backend.sample
        )
        with torch.no_grad():
            density, rgb = shade(field, samples, rays, lod, backend.gather)
            colour, alpha = backend.composite(density, rgb, samples, num_rays)
        weights = sample_weights(density, samples.step, samples.ray_index, num_rays)
        depth = accumulate(weights, samples.t, samples.ray_index, num_rays)
        results.append((samples, colour, alpha, depth))
    (expected, *want), (actual, *got) = results
    every = sample_hits(field.accel.raytrace(rays.origins, rays.directions), rays.origins,
                        rays.directions, None)  # fmt: skip
    assert 0 < expected.t.numel() < every.t.numel()
    for name in ("ray_index", "t", "step", "points"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name
    assert float(want[1].max()) > 0.0
    for got_values, want_values in zip(got, want, strict=True):
        torch.testing.assert_close(got_values, want_values, rtol=1e-5, atol=1e-6)


# Media of the compositing tests: "dense" is partly opaque; in the thin ones (early training)
# the optical depth of a sample, density x step (step ~0.01), is ~1e-3 ("thin") or ~1e-6
# ("faint"), where 1 - exp(-tau) in float32 loses digits that -expm1(-tau) keeps.
MEDIA_DENSITY = {"thin": 0.1, "faint": 1e-4}


def composite_inputs(
    device: torch.device, octree: SparseOctree, seed: int, media: str = "dense"
) -> tuple[PackedSamples, torch.Tensor, torch.Tensor, int]:
    """Bin-centre samples of random rays with random media (see ``MEDIA_DENSITY``)."""
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 3000, seed=seed)
    samples = sample_hits(accel.raytrace(origins, directions), origins, directions, None)
    generator = torch.Generator(device=device).manual_seed(seed)
    count = samples.t.numel()
    if media == "dense":
        density = torch.relu(torch.randn(count, device=device, generator=generator) * 30.0)
    else:
        uniform = torch.rand(count, device=device, generator=generator)
        density = MEDIA_DENSITY[media] * (0.5 + uniform)
    rgb = torch.rand(count, 3, device=device, generator=generator)
    return samples, density.requires_grad_(), rgb.requires_grad_(), int(origins.shape[0])


def composite_tolerance(media: str) -> dict[str, float]:
    """Forward tolerance: relative alone in thin media, whose alphas (~1e-4 when faint) sit
    below any absolute tolerance that suits dense ones."""
    return {"rtol": 1e-5, "atol": 1e-6 if media == "dense" else 1e-12}


def assert_gradient_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1e-12))


@pytest.mark.parametrize(("seed", "media"), [(3, "dense"), (4, "dense"), (5, "thin"), (6, "faint")])
def test_composite_values_and_gradients_match_torch(
    device: torch.device, octree: SparseOctree, seed: int, media: str
) -> None:
    samples, density, rgb, num_rays = composite_inputs(device, octree, seed, media)
    expected = composite(density, rgb, samples, num_rays)
    actual = ops.composite(density, rgb, samples, num_rays)
    assert float(expected[1].detach().max()) > 0.0
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, **composite_tolerance(media))
    generator = torch.Generator(device=device).manual_seed(seed + 100)
    grad_colour = torch.randn(num_rays, 3, device=device, generator=generator)
    grad_alpha = torch.randn(num_rays, device=device, generator=generator)
    gradients = []
    for colour, alpha in (expected, actual):
        loss = (colour * grad_colour).sum() + (alpha * grad_alpha).sum()
        gradients.append(torch.autograd.grad(loss, [density, rgb]))
    for want, got in zip(*gradients, strict=True):
        assert_gradient_close(got, want)


@pytest.mark.parametrize("media", ["dense", "faint"])
def test_composite_round_of_one_voxel_matches_torch(
    device: torch.device, octree: SparseOctree, media: str
) -> None:
    """An early-exit round that takes each ray's first voxel composites it like the torch
    reference (colour exactly so; transmittance holds 1 - alpha, so only to float32 rounding
    of that difference)."""
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 3000, seed=16)
    num_rays = int(origins.shape[0])
    hits = accel.raytrace(origins, directions)
    counts = torch.bincount(hits.ray_index, minlength=num_rays)
    first = (torch.cumsum(counts, 0) - counts)[counts > 0]
    round_hits = VoxelHits(*(a[first] for a in (hits.ray_index, hits.cell_index, hits.t_in,
                                                 hits.t_out)))  # fmt: skip
    samples = sample_hits(round_hits, origins, directions, None)
    generator = torch.Generator(device=device).manual_seed(16)
    uniform = torch.rand(samples.t.numel(), device=device, generator=generator)
    density = 30.0 * uniform if media == "dense" else MEDIA_DENSITY[media] * (0.5 + uniform)
    rgb = torch.rand(samples.t.numel(), 3, device=device, generator=generator)
    expected_colour, expected_alpha = composite(density, rgb, samples, num_rays)
    voxel_offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts > 0, 0)])
    colour = torch.zeros(num_rays, 3, device=device)
    transmittance = torch.ones(num_rays, device=device)
    ops.composite_round(density, rgb, samples.step, voxel_offsets, SAMPLES_PER_VOXEL, 0.0,
                        colour, transmittance)  # fmt: skip
    assert float(expected_alpha.max()) > 0.0
    torch.testing.assert_close(colour, expected_colour, **composite_tolerance(media))
    torch.testing.assert_close(transmittance, 1.0 - expected_alpha, rtol=0.0, atol=1e-6)


def test_composite_refuses_samples_not_packed_by_ray(
    device: torch.device, octree: SparseOctree
) -> None:
    """The kernels read ray r's samples as one slice: a sample of an out-of-range or unsorted
    ray index would belong to no ray (outputs never written) or to the wrong one."""
    samples, density, rgb, num_rays = composite_inputs(device, octree, 18)
    ray = samples.ray_index
    negative = ray.clone()
    negative[0] = -1
    unsorted = ray.clone()
    change = int(torch.nonzero(ray[1:] != ray[:-1])[0])
    unsorted[change], unsorted[change + 1] = ray[change + 1], ray[change]
    for ray_index, rays in ((ray, int(ray[-1])), (negative, num_rays), (unsorted, num_rays)):
        with pytest.raises(ValueError, match="packed by ray"):
            ops.composite(density, rgb, replace(samples, ray_index=ray_index), rays)
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 3000, seed=18)
    made = ops.sample(ops.trace(accel, origins, directions), origins, directions, None)
    assert isinstance(made, ops.KernelSamples)  # packed by construction: no check, no sync
    assert torch.equal(made.ray_index, ray)
    with pytest.raises(ValueError, match="packed by ray"):  # but not for fewer rays
        ops.composite(density, rgb, made, int(ray[-1]))


def test_composite_gradient_of_one_output_only(device: torch.device, octree: SparseOctree) -> None:
    samples, density, rgb, num_rays = composite_inputs(device, octree, 8)
    gradients = [
        torch.autograd.grad(function(density, rgb, samples, num_rays)[1].sum(), density)[0]
        for function in (composite, ops.composite)
    ]
    assert_gradient_close(gradients[1], gradients[0])


def test_composite_on_a_side_stream(device: torch.device, octree: SparseOctree) -> None:
    """The kernels run on torch's current stream: their input is written on a side stream
    only after a 20 ms sleep there, so a kernel launched on any other stream would read it
    before it exists."""
    if device.type != "cuda":
        pytest.skip("streams exist on CUDA only")
    _, density, rgb, num_rays = composite_inputs(device, octree, 9)
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, 3000, seed=9)
    samples = ops.sample(ops.trace(accel, origins, directions), origins, directions, None)
    assert isinstance(samples, ops.KernelSamples)  # composite waits for nothing on the host
    expected = composite(density * 2.0, rgb, samples, num_rays)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        torch.cuda._sleep(40_000_000)  # clock cycles: ~20 ms at 2 GHz
        doubled = density.detach() * 2.0
        actual = ops.composite(doubled, rgb.detach(), samples, num_rays)
    torch.cuda.current_stream().wait_stream(stream)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("density_bias", "culled", "syncs"), [(5.0, False, 3), (-0.3, True, 4)])
def test_cupy_training_step_waits_for_the_gpu_a_fixed_number_of_times(
    device: torch.device,
    octree: SparseOctree,
    tmp_path: Path,
    density_bias: float,
    culled: bool,
    syncs: int,
) -> None:
    """The host syncs of a cupy training step, counted by torch's sync debug mode: the number
    of hits (it sizes the hit list), the numbers of corners each level touches (they size the
    rows asked of each store; read for all levels at once) and the loss the step reports; with
    culling, also the number of kept samples (it sizes the sample list). Besides, the shading
    function finds the samples of positive density once per chunk of samples (``nonzero``)."""
    if device.type != "cuda":
        pytest.skip("host syncs exist on CUDA only")
    field = make_field(device, octree, "codebook", density_bias, culled).train()
    batch = make_batch(device, 2048, seed=19)
    target = torch.rand(len(batch), 4, device=device)
    options = TrainOptions(batch_rays=1024, device="cuda", backend="cupy")
    trainer = Trainer(field, TrainingRays(batch, target), options, tmp_path)
    ids = torch.arange(1024, device=device)
    trainer.step(ids)  # compiles the kernels and builds Adam's state
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.step(ids)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    sites = [
        f"{Path(w.filename).name}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)
    ]
    per_chunk = [site for site in sites if site.startswith("shading.py:")]
    assert per_chunk and len(sites) - len(per_chunk) == syncs, sites


LARGE_RAYS = 1 << 20


def test_large_input_matches_torch(device: torch.device, octree: SparseOctree) -> None:
    """2^20 rays, ~7 million hits, ~100 million samples (the other tests take a few thousand
    rays): 64-bit sample indices, grids of thousands of blocks, and each kernel's output
    against torch's at that size."""
    if device.type != "cuda":
        pytest.skip("too large for the host build")
    if torch.cuda.get_device_properties(device).total_memory < 32 * 2**30:
        pytest.skip("needs a GPU with 32 GiB or more")
    accel = OctreeAccel(octree, 3, 3).to(device)
    origins, directions = make_rays(device, LARGE_RAYS, seed=20)
    expected_hits = accel.raytrace(origins, directions)
    hits = ops.trace(accel, origins, directions)
    for name in ("ray_index", "cell_index", "t_in", "t_out"):
        assert torch.equal(getattr(hits, name), getattr(expected_hits, name)), name
    del expected_hits
    expected = sample_hits(hits, origins, directions, None)
    samples = ops.sample(hits, origins, directions, None)
    assert samples.t.numel() > 50_000_000
    for name in ("ray_index", "t", "step", "points"):
        assert torch.equal(getattr(samples, name), getattr(expected, name)), name
    del expected
    generator = torch.Generator(device=device).manual_seed(20)
    count = samples.t.numel()
    density = (MEDIA_DENSITY["thin"] * 100.0 * torch.rand(count, device=device,
               generator=generator)).requires_grad_()  # fmt: skip
    rgb = torch.rand(count, 3, device=device, generator=generator).requires_grad_()
    num_rays = int(origins.shape[0])
    results = []
    for function in (composite, ops.composite):
        colour, alpha = function(density, rgb, samples, num_rays)
        loss = colour.sum() + 0.5 * alpha.sum()
        results.append(
            (colour.detach(), alpha.detach(), *torch.autograd.grad(loss, [density, rgb]))
        )
    for got, want in zip(results[1][:2], results[0][:2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(results[1][2:], results[0][2:], strict=True):
        assert_gradient_close(got, want)


def test_large_culled_input_matches_torch(device: torch.device, octree: SparseOctree) -> None:
    """2^20 rays through randomly culled grids: the culled trace and sampling kernels against
    torch at a size where their grids run to thousands of blocks."""
    if device.type != "cuda":
        pytest.skip("too large for the host build")
    if torch.cuda.get_device_properties(device).total_memory < 32 * 2**30:
        pytest.skip("needs a GPU with 32 GiB or more")
    accel = culled_accel(device, octree, 3)
    origins, directions = make_rays(device, LARGE_RAYS, seed=28)
    culling = cullings(accel)[-1]
    expected_hits = accel.raytrace(origins, directions, culling)
    hits = ops.trace(accel, origins, directions, culling)
    for name in ("ray_index", "cell_index", "t_in", "t_out"):
        assert torch.equal(getattr(hits, name), getattr(expected_hits, name)), name
    del expected_hits
    expected = sample_occupied(hits, origins, directions, None, SAMPLES_PER_VOXEL, culling)
    samples = ops.sample(hits, origins, directions, None, SAMPLES_PER_VOXEL, culling)
    assert samples.t.numel() > 10_000_000
    for name in ("ray_index", "t", "step", "points"):
        assert torch.equal(getattr(samples, name), getattr(expected, name)), name


def make_field(
    device: torch.device,
    octree: SparseOctree,
    store: TrainableStore,
    density_bias: float,
    culled: bool = False,
) -> RadianceField:
    """A random field; a large density bias makes rays opaque within a voxel or two.
    ``culled``: its occupancy grids are checked and cull part of the space."""
    torch.manual_seed(0)
    config = FieldConfig(min_level=3, max_level=MAX_LEVEL, feature_dim=8, store=store)
    field = RadianceField(octree, config, 1.0, np.zeros(3))
    with torch.no_grad():
        field.output.bias[0] = density_bias
    field = field.to(device).eval()
    if culled:
        generator = torch.Generator().manual_seed(0)
        for _ in range(EMPTY_CHECKS):
            field.check_occupancy(generator)
        grids = [field.accel.occupancy.grid(lod) for lod in range(config.num_lods)]
        assert not all(bool(grid.occupied.all()) for grid in grids), "nothing culled"
    return field


def make_batch(device: torch.device, count: int, seed: int) -> RayBatch:
    origins, directions = make_rays(device, count, seed)
    return RayBatch(origins, directions, directions / directions.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("store", ["codebook", "dense", "hashed"])
def test_inference_from_corner_tables_matches_field(
    device: torch.device, octree: SparseOctree, store: TrainableStore
) -> None:
    """Renders decode each level's corner table once and interpolate it with the kernels."""
    field = make_field(device, octree, store, 0.0)
    points = gather_points(device, octree, seed=10)
    generator = torch.Generator(device=device).manual_seed(10)
    directions = torch.nn.functional.normalize(
        torch.randn(points.shape[0], 3, device=device, generator=generator), dim=1
    )
    for lod in range(field.config.num_lods):
        with torch.no_grad():
            expected = field(points, directions, lod)
            tables = field.corner_tables(lod)
            from_tables = field(points, directions, lod, TORCH_GATHER, tables)
            actual = field(points, directions, lod, ops.KERNEL_GATHER, tables)
        for got, same, want in zip(actual, from_tables, expected, strict=True):
            assert torch.equal(same, want)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def gather_points(device: torch.device, octree: SparseOctree, seed: int) -> torch.Tensor:
    """Samples along random rays (mostly in allocated cells), every 7th pushed out of the cube,
    plus points on the cube's faces and corners, where cells clamp."""
    origins, directions = make_rays(device, 2048, seed=seed)
    accel = OctreeAccel(octree, 3, 3).to(device)
    points = sample_hits(
        accel.raytrace(origins, directions), origins, directions, None
    ).points.clone()
    points[::7] *= 1.5
    faces = torch.tensor(
        [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -0.3, 0.2], [0.0, 0.0, 0.0], [-1.0, 0.6, 1.0]],
        device=device,
    )
    return torch.cat([points, faces]).contiguous()


@pytest.mark.parametrize("level", [0, 3, MAX_LEVEL])
def test_locate_corners_matches_torch(
    device: torch.device, octree: SparseOctree, level: int
) -> None:
    index = LevelIndex(octree, level).to(device)
    points = gather_points(device, octree, seed=13)
    expected = TORCH_GATHER.corners(index, points)
    actual = ops.KERNEL_GATHER.corners(index, points)
    assert bool((expected[0] >= 0).any()) and bool((expected[0] < 0).any())
    assert torch.equal(actual[0], expected[0])
    assert torch.equal(actual[1], expected[1])
    torch.testing.assert_close(actual[2], expected[2], rtol=1e-6, atol=1e-7)


def test_corner_interpolation_values_and_gradients(device: torch.device) -> None:
    generator = torch.Generator(device=device).manual_seed(14)
    num_points, num_rows, feature_dim = ray_count(device, 20000), 300, 8
    weights = torch.rand(num_points, 8, device=device, generator=generator)
    weights[::5] = 0.0  # unallocated points
    # Half the points in runs sharing their rows (samples of one voxel), half scattered; the
    # gradient kernel folds runs together before its atomic adds.
    runs = torch.randint(0, num_rows, (num_points // 16, 8), device=device, generator=generator)
    scattered = torch.randint(
        0, num_rows, (num_points - num_points // 16 * 8, 8), device=device, generator=generator
    )
    rows = torch.cat([runs.repeat_interleave(8, dim=0), scattered])
    table = torch.randn(num_rows, feature_dim, device=device, generator=generator)
    table.requires_grad_()
    grad_features = torch.randn(num_points, feature_dim, device=device, generator=generator)
    results = []
    for gather in (TORCH_GATHER, ops.KERNEL_GATHER):
        features = gather.interpolate(weights, rows, table)
        (grad_table,) = torch.autograd.grad((features * grad_features).sum(), table)
        results.append((features, grad_table))
    (want_features, want_grad), (got_features, got_grad) = results
    torch.testing.assert_close(got_features, want_features, rtol=1e-5, atol=1e-6)
    assert_gradient_close(got_grad, want_grad)
    with pytest.raises(ValueError, match="does not differentiate its weights"):
        ops.KERNEL_GATHER.interpolate(weights.requires_grad_(), rows, table)
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        ops.KERNEL_GATHER.interpolate(weights[:, :4], rows[:, :4], table)


@pytest.mark.parametrize("store", ["codebook", "dense", "hashed"])
def test_training_feature_gather_matches_field(
    device: torch.device, octree: SparseOctree, store: TrainableStore
) -> None:
    field = make_field(device, octree, store, 0.0).train()
    points = gather_points(device, octree, seed=15)
    generator = torch.Generator(device=device).manual_seed(15)
    for lod in (0, field.config.num_lods - 1):
        weights = torch.randn(points.shape[0], field.config.feature_dim, device=device,
                              generator=generator)  # fmt: skip
        results = []
        for gather in (TORCH_GATHER, ops.KERNEL_GATHER):
            field.zero_grad(set_to_none=True)
            features, inside = field.features(points, lod, gather)
            (features * weights).sum().backward()
            grads = [p.grad.clone() for p in field.stores.parameters() if p.grad is not None]
            results.append((features.detach(), inside, grads))
        (want, want_inside, want_grads), (got, got_inside, got_grads) = results
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        assert torch.equal(got_inside, want_inside)
        assert len(got_grads) == len(want_grads) > 0
        for got_grad, want_grad in zip(got_grads, want_grads, strict=True):
            assert_gradient_close(got_grad, want_grad)


@pytest.mark.parametrize(("density_bias", "culled"), [(0.0, False), (40.0, False), (-0.3, True)])
@pytest.mark.parametrize("lod", [0, 3])
def test_early_exit_render_matches_torch(
    device: torch.device, octree: SparseOctree, density_bias: float, culled: bool, lod: int
) -> None:
    field = make_field(device, octree, "codebook", density_bias, culled)
    rays = make_batch(device, 4096, seed=11)
    expected = render_rays_early_exit(field, rays, lod, DEFAULT_TERMINATION, torch_backend())
    actual = render_rays_early_exit(field, rays, lod, DEFAULT_TERMINATION, cupy_backend())
    assert float(expected[1].max()) > 0.0
    for got, want in zip(actual, expected, strict=True):
        error = (got - want).abs().reshape(len(rays), -1).amax(dim=1)
        # A ray whose transmittance lands within rounding of the threshold may stop one voxel
        # earlier on one side, which moves it by at most about the threshold; all others agree.
        assert float(error.max()) <= 2.0 * DEFAULT_TERMINATION
        assert float((error > 1e-5).float().mean()) <= 1e-3


@pytest.mark.parametrize("render", [render_rays, render_rays_terminated])
@pytest.mark.parametrize(("density_bias", "culled"), [(5.0, False), (-0.3, True)])
def test_training_render_gradients_match_between_backends(
    device: torch.device,
    octree: SparseOctree,
    density_bias: float,
    culled: bool,
    render: Callable[..., tuple[torch.Tensor, torch.Tensor]],
) -> None:
    """Both training renders: every sample, and early termination inside the graph."""
    if device.type == "cuda":
        assert cupy_unavailable_reason(device) is None  # says which kernel fails to compile
        assert select_backend("cupy", device).name == "cupy"
        assert select_backend("auto", device).name == "cupy"
    field = make_field(device, octree, "codebook", density_bias, culled).train()
    rays = make_batch(device, 2048, seed=12)
    generator = torch.Generator(device=device).manual_seed(1)
    target = torch.rand(len(rays), 4, device=device, generator=generator)
    gradients = []
    for backend in (torch_backend(), cupy_backend()):
        field.zero_grad(set_to_none=True)
        colour, alpha = render(field, rays, 3, None, backend)
        loss = ((torch.cat([colour, alpha[:, None]], 1) - target) ** 2).mean()
        loss.backward()
        gradients.append([p.grad.clone() for p in field.parameters() if p.grad is not None])
    assert len(gradients[0]) == len(gradients[1]) > 0
    for want, got in zip(*gradients, strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * max(scale, 1e-12))
