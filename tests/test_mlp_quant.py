"""The integer MLP: the trainer's straight-through rounding is the writer's, bit for bit, and it
is switched on for the last steps only, without ever reaching a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.asset.mlp_quant import dequantize_rows, quantize_rows
from core.neural.quantize import quantize_dequantize, rounded_weights


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
def test_training_rounds_exactly_as_the_writer(bits: int) -> None:
    weight = torch.randn(64, 43) * torch.logspace(-6, 1, 64)[:, None]  # rows flushed to zero too
    expected = dequantize_rows(*quantize_rows(weight.numpy(), bits))
    assert (expected[0] == 0).all() and (expected[-1] != 0).any()
    np.testing.assert_array_equal(quantize_dequantize(weight, bits).numpy(), expected)


def test_rounded_weights_train_the_float_weights_and_leave_no_trace() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(8, 16)
    weight = layer.weight
    before, bias = weight.detach().clone(), layer.bias.detach().clone()
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    inputs = torch.randn(32, 8)
    with rounded_weights([layer], 4):
        torch.testing.assert_close(layer.weight, quantize_dequantize(before, 4))
        layer(inputs).square().sum().backward()
        optimizer.step()
    assert layer.weight is weight and not torch.equal(weight, before)
    assert set(layer.state_dict()) == {"weight", "bias"}
    expected_grad = (2 * (inputs @ quantize_dequantize(before, 4).T + bias)).T
    # straight through: the gradient is the one of the rounded forward, applied unchanged
    assert weight.grad is not None
    torch.testing.assert_close(weight.grad, expected_grad @ inputs, rtol=1e-4, atol=1e-3)


def test_the_index_rate_pulls_free_corners_to_the_popular_entry() -> None:
    from core.asset.octree import SparseOctree
    from core.neural.field import FieldConfig, RadianceField
    from core.neural.rate import index_rate_bits

    points = np.random.default_rng(0).uniform(-0.5, 0.5, size=(200, 3))
    octree = SparseOctree.from_points(points, 3)
    field = RadianceField(octree, FieldConfig(2, 3, 4, "codebook", 2), 1.0, np.zeros(3))
    stores = [store for _, store in field.levels()]
    with torch.no_grad():
        for store in stores:
            store.grid_logits[:, 0] += 1.0  # entry 0 is the level's most used one ...
            store.grid_logits[0] = 0.0  # ... and corner 0 is undecided
    probabilities = [torch.softmax(store.grid_logits, -1) for store in stores]
    expected = sum(-(p * torch.log2(p.mean(0))).sum() for p in probabilities) / sum(
        p.shape[0] for p in probabilities
    )
    bits = index_rate_bits(field)
    torch.testing.assert_close(bits, expected)
    bits.backward()
    gradient = stores[0].grid_logits.grad
    assert gradient is not None and gradient[0, 0] < 0 < gradient[0, 1:].min()
