"""Rendering on the torch reference: the one early-exit loop (inference, and training with
autograd), and expected depth against the captured depth maps of the synthetic scene."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.asset.octree import SparseOctree
from core.data.dataset import load_split
from core.neural.checkpoint import load_checkpoint
from core.neural.field import FieldConfig, RadianceField
from core.neural.render.renderer import (
    RayBatch,
    render_depth_image,
    render_rays,
    render_rays_early_exit,
    render_rays_terminated,
)


def random_field(density_bias: float) -> RadianceField:
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(3000, 3))
    points = 0.6 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    octree = SparseOctree.from_points(points, 5, dilation=1)
    field = RadianceField(octree, FieldConfig(2, 5, 8, "codebook", 4), 1.0, np.zeros(3))
    with torch.no_grad():
        field.output.bias[0] = density_bias
    return field.eval()


def random_rays(count: int) -> RayBatch:
    rng = np.random.default_rng(4)
    origins = rng.normal(size=(count, 3))
    origins *= 3.0 / np.linalg.norm(origins, axis=1, keepdims=True)
    directions = rng.uniform(-0.5, 0.5, size=(count, 3)) - origins
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    tensors = [torch.from_numpy(a).float() for a in (origins, directions)]
    return RayBatch(tensors[0], tensors[1], tensors[1])


def test_early_exit_without_termination_is_the_full_composite() -> None:
    """Rounds of 1, 2, 4 ... voxels blend voxel by voxel: with a threshold no ray reaches,
    the loop must give what compositing every sample at once gives."""
    field, rays = random_field(2.0), random_rays(600)
    with torch.no_grad():
        expected = render_rays(field, rays, 3, None)
    actual = render_rays_early_exit(field, rays, 3, termination_threshold=0.0)
    assert float(expected[1].max()) > 0.5
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_early_exit_stops_rays_at_the_threshold() -> None:
    field, rays = random_field(30.0), random_rays(600)
    full = render_rays_early_exit(field, rays, 3, termination_threshold=0.0)
    early = render_rays_early_exit(field, rays, 3, termination_threshold=1e-2)
    error = (early[0] - full[0]).abs().amax(dim=1)
    assert float(full[1].max()) > 0.99
    assert float(error.max()) <= 1e-2 and float(error.max()) > 0.0


def rendered_gradients(
    render: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    field: RadianceField,
    rays: RayBatch,
    lod: int,
    **options: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Premultiplied RGBA [R, 4] of a differentiable render (bin centres), and the gradients
    of a fixed random weighting of it with respect to every parameter."""
    field.zero_grad(set_to_none=True)
    colour, alpha = render(field, rays, lod, None, **options)
    rgba = torch.cat([colour, alpha[:, None]], dim=1)
    weighting = torch.rand(rgba.shape, generator=torch.Generator().manual_seed(5))
    (rgba * weighting).sum().backward()
    gradients = {
        name: parameter.grad.clone()
        for name, parameter in field.named_parameters()
        if parameter.grad is not None
    }
    return rgba.detach(), gradients


def test_terminated_training_render_without_termination_is_the_full_render() -> None:
    """Rounds blended with a transmittance carried in the graph: with a threshold no ray
    reaches, values and gradients are those of compositing every sample at once."""
    field, rays = random_field(30.0), random_rays(600)
    expected, expected_gradients = rendered_gradients(render_rays, field, rays, 3)
    actual, gradients = rendered_gradients(
        render_rays_terminated, field, rays, 3, termination_threshold=0.0
    )
    assert float(expected[:, 3].max()) > 0.99  # opaque rays, whose later rounds matter least
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert gradients.keys() == expected_gradients.keys()
    for name, gradient in gradients.items():
        scale = float(expected_gradients[name].abs().max())
        torch.testing.assert_close(gradient, expected_gradients[name], rtol=1e-4, atol=1e-6 * scale)


def test_terminated_training_render_changes_pixels_by_at_most_the_threshold() -> None:
    field, rays = random_field(30.0), random_rays(600)
    full, full_gradients = rendered_gradients(render_rays, field, rays, 3)
    early, gradients = rendered_gradients(
        render_rays_terminated, field, rays, 3, termination_threshold=1e-2
    )
    error = (early - full).abs().amax(dim=1)
    assert float(error.max()) <= 1e-2 and float(error.max()) > 0.0
    for name, gradient in gradients.items():  # measured: up to 1.2e-3 of the largest
        scale = float(full_gradients[name].abs().max())
        change = float((gradient - full_gradients[name]).abs().max())
        assert change <= 1e-2 * scale, f"{name}: {change / scale:.2g} of the largest gradient"


def test_expected_depth_matches_the_captured_depth(
    trained_run: Path, synthetic_dataset: Path
) -> None:
    """Weights kept apart from what they accumulate: the expected depth of the trained field
    lands on the captured surface, and closer at finer levels than a constant depth would."""
    field = load_checkpoint(trained_run).field.eval()
    test = load_split(synthetic_dataset, "test")
    lod = field.config.num_lods - 1
    errors, constant_errors, covered = [], [], []
    mean_depth = float(test.depth[test.depth > 0].mean())
    for view in range(len(test)):
        depth, opacity = render_depth_image(field, test.camera_to_world[view], test.intrinsics, lod)
        surface = test.depth[view] > 0
        seen = surface & (opacity > 0.5)
        errors.append(np.abs(depth[seen] - test.depth[view][seen]))
        constant_errors.append(np.abs(mean_depth - test.depth[view][seen]))
        covered.append(seen.sum() / surface.sum())
    error = float(np.concatenate(errors).mean())
    assert float(np.mean(covered)) > 0.9
    assert error < 0.15, f"mean depth error {error:.3f}"
    assert error < 0.5 * float(np.concatenate(constant_errors).mean())
