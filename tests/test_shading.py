"""The field's shading function against plain autograd: same densities and colours, same
gradients for the MLP and every level's store, though its backward skips samples of density 0.
Compared in float64, where the different summation orders agree to 1e-12 (in float32 the large
features used here leave 1e-3 of cancellation noise in either)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.asset.octree import SparseOctree
from core.neural.field import TORCH_GATHER, FieldConfig, RadianceField, encode_view_directions
from core.neural.shading import ShadeSamples, ShadingInputs


def random_field(store: str) -> RadianceField:
    """Levels 2..5 on a sphere, features large enough to matter; :func:`half_empty` sets the
    density bias."""
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(3000, 3))
    points = 0.6 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    octree = SparseOctree.from_points(points, 5, dilation=1)
    field = RadianceField(octree, FieldConfig(2, 5, 8, store, 4), 1.0, np.zeros(3))  # type: ignore[arg-type]
    with torch.no_grad():
        for store_module in field.stores:
            for parameter in store_module.parameters():
                parameter.mul_(30.0)  # features large enough to move the density around 0
    return field.double()


def half_empty(field: RadianceField, points: torch.Tensor, directions: torch.Tensor) -> None:
    """Shift the density bias so that about half of these samples have density 0."""
    with torch.no_grad():
        raw, _, inside = reference_outputs(field, points, directions, field.config.num_lods - 1)
        alive = raw[inside].sort().values
        middle = alive.numel() // 2  # halfway between two samples: none sits at density 0
        field.output.bias[0] -= float(alive[middle - 1 : middle + 1].mean())


def random_samples(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(count)
    radius = 0.45 + 0.3 * torch.rand(count, 1, generator=generator)
    points = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=1)
    directions = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=1)
    return (points * radius).double(), directions.double()


def reference_outputs(
    field: RadianceField, points: torch.Tensor, directions: torch.Tensor, lod: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The field's math in plain autograd operations, each store asked for all its corners:
    density before its ReLU, colour, and whether each point is inside the octree."""
    features = points.new_zeros(points.shape[0], field.config.feature_dim)
    inside = None
    for index, store in field.levels()[: lod + 1]:
        cell, corner_ids, weights = TORCH_GATHER.corners(index, points)
        inside = cell >= 0 if inside is None else inside
        table = store(torch.arange(index.num_corners))
        features = features + (weights[:, :, None] * table[corner_ids]).sum(dim=1)
    assert inside is not None
    inputs = torch.cat([features, encode_view_directions(directions)], dim=1)
    output = field.output(torch.relu(field.hidden(inputs)))
    return output[:, 0], torch.sigmoid(output[:, 1:4]), inside


def reference_shading(
    field: RadianceField, points: torch.Tensor, directions: torch.Tensor, lod: int
) -> tuple[torch.Tensor, torch.Tensor]:
    raw, rgb, inside = reference_outputs(field, points, directions, lod)
    return torch.relu(raw) * inside, rgb


def compositing_loss(density: torch.Tensor, rgb: torch.Tensor) -> torch.Tensor:
    """A loss that, like compositing, sees a sample's colour through a weight that is exactly
    0 at density 0."""
    generator = torch.Generator().manual_seed(1)
    weights = -torch.expm1(-density)
    upstream = torch.rand(rgb.shape, generator=generator, dtype=rgb.dtype)
    density_upstream = torch.rand(density.shape, generator=generator, dtype=density.dtype)
    return (density * density_upstream).sum() + (weights[:, None] * rgb * upstream).sum()


def gradients(field: RadianceField, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    field.zero_grad(set_to_none=True)
    loss.backward()
    return {
        name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
        for name, p in field.named_parameters()
    }


@pytest.mark.parametrize("store", ["codebook", "dense", "hashed"])
@pytest.mark.parametrize("count", [40, 3000])  # few samples: touched rows; many: whole tables
def test_field_matches_plain_autograd(store: str, count: int) -> None:
    field = random_field(store)
    points, directions = random_samples(count)
    half_empty(field, points, directions)
    lod = field.config.num_lods - 1
    density, rgb = field(points, directions, lod)
    want_density, want_rgb = reference_shading(field, points, directions, lod)
    assert 0.2 < float((density == 0).float().mean()) < 0.8  # both kinds of sample occur
    torch.testing.assert_close(density, want_density, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rgb, want_rgb, rtol=1e-12, atol=1e-12)
    got = gradients(field, compositing_loss(density, rgb))
    want = gradients(field, compositing_loss(want_density, want_rgb))
    for name, expected in want.items():
        scale = float(expected.abs().max()) + 1e-12
        torch.testing.assert_close(got[name] / scale, expected / scale, rtol=0, atol=1e-12)


def test_chunks_and_no_grad_give_the_same_values() -> None:
    field = random_field("codebook")
    points, directions = random_samples(1000)
    levels, tables, inside = field._lookups(points, 3, TORCH_GATHER, None)
    encoded = encode_view_directions(directions)
    whole = ShadeSamples.apply(
        ShadingInputs(levels, encoded, inside, TORCH_GATHER, 1 << 13),
        *field._mlp_parameters(),
        *tables,
    )
    chunked = ShadeSamples.apply(
        ShadingInputs(levels, encoded, inside, TORCH_GATHER, 97), *field._mlp_parameters(), *tables
    )
    with torch.no_grad():
        untracked = field(points, directions, 3)
    for a, b, c in zip(whole, chunked, untracked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        assert not c.requires_grad


def test_a_batch_without_density_has_zero_gradients() -> None:
    field = random_field("codebook")
    with torch.no_grad():
        field.output.bias[0] = -1e4
    points, directions = random_samples(500)
    density, rgb = field(points, directions, 3)
    assert float(density.detach().abs().max()) == 0.0
    for gradient in gradients(field, compositing_loss(density, rgb)).values():
        assert float(gradient.abs().max()) == 0.0


def test_scatter_add_is_the_transpose_of_interpolate() -> None:
    generator = torch.Generator().manual_seed(5)
    table = torch.randn(30, 6, dtype=torch.float64, generator=generator)
    rows = torch.randint(0, 30, (200, 8), generator=generator)
    weights = torch.rand(200, 8, dtype=torch.float64, generator=generator)
    grad = torch.randn(200, 6, dtype=torch.float64, generator=generator)
    table_grad = torch.zeros_like(table)
    TORCH_GATHER.scatter_add(weights, rows, grad, table_grad)
    forward = (TORCH_GATHER.interpolate(weights, rows, table) * grad).sum()
    torch.testing.assert_close(forward, (table * table_grad).sum())


def test_training_tables_shared_by_several_calls_give_the_same_gradients() -> None:
    """A render that shades in rounds decodes the small levels once (``training_tables``);
    levels above the bound stay per call. Either way the gradients are the same."""
    field = random_field("codebook")
    points, directions = random_samples(600)
    half_empty(field, points, directions)
    lod = field.config.num_lods - 1
    bound = field.accel.level_index(1).num_corners  # levels 0 and 1 shared, 2 and 3 per call
    tables = field.training_tables(lod, bound)
    assert [table is None for table in tables] == [False, False, True, True]
    rounds = [slice(0, 250), slice(250, None)]

    def loss(shared: list[torch.Tensor | None] | None) -> torch.Tensor:
        return sum(  # type: ignore[return-value]
            compositing_loss(*field(points[rows], directions[rows], lod, tables=shared))
            for rows in rounds
        )

    got = gradients(field, loss(tables))
    want = gradients(field, loss(None))
    for name, expected in want.items():
        assert float(expected.abs().max()) > 0, name
        torch.testing.assert_close(got[name], expected, rtol=1e-10, atol=1e-12)
