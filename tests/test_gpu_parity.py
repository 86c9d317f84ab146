"""The CUDA kernels (``--backend cupy``) against the torch reference, on the same CUDA device.

Skipped without a CUDA device, CuPy, or a kernel that compiles. Tolerances:

- traversal and bin-centre sampling: exact (``torch.equal``); both sides do the same IEEE
  operations in the same order, the kernels with ``__*_rn`` intrinsics so no FMA creeps in;
- jittered sampling: structural (each sample inside its bin, points exactly ``o + d t``), since
  the kernel hashes its jitter instead of drawing torch's CPU random numbers;
- compositing forward: ``rtol=1e-5, atol=1e-6`` (fp32, summation order differs);
- compositing gradients: ``rtol=1e-4`` and ``atol`` 1e-5 of the largest reference gradient;
- fused feature gather: ``rtol=1e-5, atol=1e-7``; early-exit images: ``atol=1e-5``.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest
import torch

from core.field import FieldConfig, RadianceField, TrainableStore
from core.octree import SparseOctree
from core.raymarch import OctreeTracer, PackedSamples, composite, sample_hits
from core.render import DEFAULT_TERMINATION, RayBatch, render_rays, render_rays_early_exit


def _unavailable_reason() -> str | None:
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    from core.gpu.backend import cupy_unavailable_reason

    return cupy_unavailable_reason("cuda")


REASON = _unavailable_reason()
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(REASON is not None, reason=f"needs CUDA and CuPy: {REASON}"),
]

DEVICE = torch.device("cuda")
MAX_LEVEL = 6


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


def make_rays(count: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random rays from outside the cube towards random points inside it, plus the awkward
    cases: axis-aligned directions (zero components), tiny negative components, origins inside
    the cube, rays along cell faces, and rays pointing away from the cube."""
    rng = np.random.default_rng(seed)
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
    return torch.from_numpy(origins).to(DEVICE), torch.from_numpy(directions).to(DEVICE)


def ops() -> ModuleType:
    from core.gpu import ops as gpu_ops

    return gpu_ops


@pytest.mark.parametrize("level", [0, 1, 3, MAX_LEVEL])
def test_trace_matches_torch_exactly(octree: SparseOctree, level: int) -> None:
    tracer = OctreeTracer(octree, level).to(DEVICE)
    origins, directions = make_rays(4096)
    expected = tracer(origins, directions)
    actual = ops().trace(tracer, origins, directions)
    assert expected.ray_index.numel() > 0
    for name in ("ray_index", "cell_index", "t_in", "t_out"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name


def test_trace_with_no_rays_and_no_hits(octree: SparseOctree) -> None:
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    empty = torch.zeros(0, 3, device=DEVICE)
    assert ops().trace(tracer, empty, empty).ray_index.numel() == 0
    away = torch.tensor([[3.0, 3.0, 3.0]], device=DEVICE)
    assert ops().trace(tracer, away, away).ray_index.numel() == 0


def test_bin_centre_samples_match_torch_exactly(octree: SparseOctree) -> None:
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    origins, directions = make_rays(2048, seed=1)
    hits = tracer(origins, directions)
    expected = sample_hits(hits, origins, directions, None)
    actual = ops().sample(hits, origins, directions, None)
    for name in ("ray_index", "t", "step", "points"):
        assert torch.equal(getattr(actual, name), getattr(expected, name)), name


def test_jittered_samples_are_stratified(octree: SparseOctree) -> None:
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    origins, directions = make_rays(2048, seed=2)
    hits = tracer(origins, directions)
    generator = torch.Generator().manual_seed(5)
    samples = ops().sample(hits, origins, directions, generator)
    reference = sample_hits(hits, origins, directions, None)
    assert torch.equal(samples.ray_index, reference.ray_index)
    assert torch.equal(samples.step, reference.step)
    length = (hits.t_out - hits.t_in).repeat_interleave(16)
    bin_start = hits.t_in.repeat_interleave(16) + length * torch.arange(16, device=DEVICE).repeat(
        hits.t_in.numel()
    ) / 16  # fmt: skip
    slack = 1e-6 * (1.0 + hits.t_out.abs().max())
    assert bool((samples.t >= bin_start - slack).all())
    assert bool((samples.t <= bin_start + length / 16 + slack).all())
    jitter = (samples.t - bin_start) / (length / 16).clamp(min=1e-12)
    assert abs(float(jitter[length > 1e-3].mean()) - 0.5) < 0.02
    ray = samples.ray_index
    assert torch.equal(samples.points, origins[ray] + directions[ray] * samples.t[:, None])
    again = ops().sample(hits, origins, directions, torch.Generator().manual_seed(5))
    other = ops().sample(hits, origins, directions, torch.Generator().manual_seed(6))
    assert torch.equal(again.t, samples.t) and not torch.equal(other.t, samples.t)


def _composite_inputs(
    octree: SparseOctree, seed: int
) -> tuple[PackedSamples, torch.Tensor, torch.Tensor, int]:
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    origins, directions = make_rays(3000, seed=seed)
    samples = sample_hits(tracer(origins, directions), origins, directions, None)
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    count = samples.t.numel()
    density = torch.relu(torch.randn(count, device=DEVICE, generator=generator) * 30.0)
    rgb = torch.rand(count, 3, device=DEVICE, generator=generator)
    return samples, density.requires_grad_(), rgb.requires_grad_(), int(origins.shape[0])


def _assert_gradient_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1e-12))


@pytest.mark.parametrize("seed", [3, 4])
def test_composite_values_and_gradients_match_torch(octree: SparseOctree, seed: int) -> None:
    samples, density, rgb, num_rays = _composite_inputs(octree, seed)
    expected = composite(density, rgb, samples, num_rays)
    actual = ops().composite(density, rgb, samples, num_rays)
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    generator = torch.Generator(device=DEVICE).manual_seed(seed + 100)
    grad_colour = torch.randn(num_rays, 3, device=DEVICE, generator=generator)
    grad_alpha = torch.randn(num_rays, device=DEVICE, generator=generator)
    gradients = []
    for colour, alpha in (expected, actual):
        loss = (colour * grad_colour).sum() + (alpha * grad_alpha).sum()
        gradients.append(torch.autograd.grad(loss, [density, rgb]))
    for want, got in zip(*gradients, strict=True):
        _assert_gradient_close(got, want)


def test_composite_gradient_of_one_output_only(octree: SparseOctree) -> None:
    samples, density, rgb, num_rays = _composite_inputs(octree, 8)
    (expected,) = torch.autograd.grad(composite(density, rgb, samples, num_rays)[1].sum(), density)
    (actual,) = torch.autograd.grad(ops().composite(density, rgb, samples, num_rays)[1].sum(), density)  # fmt: skip
    _assert_gradient_close(actual, expected)


def test_composite_on_a_side_stream(octree: SparseOctree) -> None:
    samples, density, rgb, num_rays = _composite_inputs(octree, 9)
    expected = composite(density, rgb, samples, num_rays)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        actual = ops().composite(density, rgb, samples, num_rays)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(actual[0], expected[0], rtol=1e-5, atol=1e-6)


def make_field(octree: SparseOctree, store: TrainableStore, density_bias: float) -> RadianceField:
    torch.manual_seed(0)
    config = FieldConfig(min_level=3, max_level=MAX_LEVEL, feature_dim=8, store=store)
    field = RadianceField(octree, config, 1.0, np.zeros(3))
    with torch.no_grad():
        field.decoder[2].bias[0] = density_bias
    return field.to(DEVICE).eval()


def make_batch(count: int, seed: int) -> RayBatch:
    origins, directions = make_rays(count, seed)
    view = directions / directions.norm(dim=1, keepdim=True)
    return RayBatch(origins, directions, view)


@pytest.mark.parametrize("store", ["codebook", "dense", "hashed"])
def test_fused_feature_gather_matches_field_features(
    octree: SparseOctree, store: TrainableStore
) -> None:
    from core.gpu.early_exit import corner_tables, shade_fused

    field = make_field(octree, store, 0.0)
    rays = make_batch(2048, seed=10)
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    samples = sample_hits(
        tracer(rays.origins, rays.directions), rays.origins, rays.directions, None
    )
    outside = samples.points.clone()
    outside[::7] *= 1.5  # some points leave the cube and must add nothing
    for lod in range(field.config.num_lods):
        with torch.no_grad():
            expected = field(outside, rays.view_directions[samples.ray_index], lod)
            moved = PackedSamples(samples.ray_index, samples.t, samples.step, outside)
            actual = shade_fused(field, corner_tables(field, lod), moved, rays)
        for got, want in zip(actual, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("density_bias", [0.0, 40.0])
@pytest.mark.parametrize("lod", [0, 3])
def test_early_exit_render_matches_torch(
    octree: SparseOctree, density_bias: float, lod: int
) -> None:
    from core.gpu.early_exit import render_rays_early_exit as render_cupy

    field = make_field(octree, "codebook", density_bias)
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    rays = make_batch(4096, seed=11)
    expected = render_rays_early_exit(field, tracer, rays, lod, DEFAULT_TERMINATION)
    actual = render_cupy(field, tracer, rays, lod, DEFAULT_TERMINATION)
    for got, want in zip(actual, expected, strict=True):
        error = (got - want).abs().reshape(len(rays), -1).amax(dim=1)
        # A ray whose transmittance lands within rounding of the threshold may stop one voxel
        # earlier on one side, which moves it by at most about the threshold; all others agree.
        assert float(error.max()) <= 2.0 * DEFAULT_TERMINATION
        assert float((error > 1e-5).float().mean()) <= 1e-3


def test_training_render_gradients_match_between_backends(octree: SparseOctree) -> None:
    from core.gpu.backend import select_backend, torch_backend

    cupy = select_backend("cupy", DEVICE)
    assert cupy.name == "cupy" and select_backend("auto", DEVICE).name == "cupy"
    field = make_field(octree, "codebook", 5.0).train()
    tracer = OctreeTracer(octree, 3).to(DEVICE)
    rays = make_batch(2048, seed=12)
    target = torch.rand(
        len(rays), 4, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(1)
    )
    gradients = []
    for backend in (torch_backend(), cupy):
        field.zero_grad(set_to_none=True)
        colour, alpha = render_rays(field, tracer, rays, 3, None, backend)
        loss = ((torch.cat([colour, alpha[:, None]], 1) - target) ** 2).mean()
        loss.backward()
        gradients.append([p.grad.clone() for p in field.parameters() if p.grad is not None])
    assert len(gradients[0]) == len(gradients[1]) > 0
    for want, got in zip(*gradients, strict=True):
        scale = float(want.abs().max())
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * max(scale, 1e-12))
