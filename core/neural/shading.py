"""The field's per-sample shading (summed level features -> decoder MLP) as one autograd function
whose backward runs only on the samples that can have a gradient.

After the occupancy grids cull, about 40 % of the samples a training step still shades have
density exactly 0: the density head's ReLU is off, so no gradient reaches its input, and the
compositing weight ``T (1 - exp(-0 * step))`` is exactly 0, so none reaches the colour either.
Autograd would still run the MLP backward and scatter (zero) feature gradients for every one
of them. :class:`ShadeSamples` keeps, in the forward, the rows of the samples with positive
density (the only ones whose gradient can be nonzero) and runs the backward on those alone;
the gradients are the same as autograd's up to float rounding (summation order), for any loss
that sees a sample's colour only through its compositing weight, as every render here does (a
loss on the colour of an empty sample itself would get no gradient from it).

Forward and backward run in chunks of ``chunk_rows`` samples, so the ``[rows, 128]``
temporaries stay cache-sized: on one CPU thread ``addmm`` ran at 19 GFLOP/s on 155k rows and at
77 on 32k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch.autograd.function import once_differentiable


class CornerGather(Protocol):
    """The interpolation half of :class:`~core.neural.field.FeatureGather`."""

    def interpolate(
        self, weights: torch.Tensor, rows: torch.Tensor, table: torch.Tensor
    ) -> torch.Tensor: ...

    def scatter_add(
        self, weights: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor, into: torch.Tensor
    ) -> None: ...


@dataclass(frozen=True)
class LevelLookup:
    """One level's part of a batch of samples: trilinear ``weights`` [N, 8] (0 outside the
    level's cells) and ``rows`` [N, 8] into the level's feature table."""

    weights: torch.Tensor
    rows: torch.Tensor


@dataclass(frozen=True)
class ShadingInputs:
    """What :class:`ShadeSamples` needs besides the differentiable tensors."""

    levels: Sequence[LevelLookup]
    encoded_directions: torch.Tensor  # [N, d] view encoding
    inside: torch.Tensor  # [N] bool: in an allocated coarsest-level cell (else empty space)
    gather: CornerGather
    chunk_rows: int


class ShadeSamples(torch.autograd.Function):
    """Density [N] (ReLU, 0 outside) and RGB [N, 3] (sigmoid) of ``sum_levels interpolate ->
    Linear -> ReLU -> Linear``; differentiable in the MLP parameters and the level tables."""

    @staticmethod
    def forward(
        ctx: Any,
        inputs: ShadingInputs,
        hidden_weight: torch.Tensor,
        hidden_bias: torch.Tensor,
        output_weight: torch.Tensor,
        output_bias: torch.Tensor,
        *tables: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        count = int(inputs.inside.shape[0])
        density = hidden_weight.new_empty(count)
        rgb = hidden_weight.new_empty(count, 3)
        kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        # one set of chunk-sized buffers for all chunks: what the backward needs is gathered
        # out of them, and fresh [8k, 128] blocks each chunk cost page faults
        chunk = min(inputs.chunk_rows, count)
        input_buffer = hidden_weight.new_empty(chunk, hidden_weight.shape[1])
        hidden_buffer = hidden_weight.new_empty(chunk, hidden_weight.shape[0])
        for start in range(0, count, inputs.chunk_rows):
            rows = slice(start, start + inputs.chunk_rows)
            size = min(inputs.chunk_rows, count - start)
            features = summed_features(inputs.levels, tables, inputs.gather, rows)
            mlp_input = torch.cat(
                [features, inputs.encoded_directions[rows]], dim=1, out=input_buffer[:size]
            )
            hidden = linear(mlp_input, hidden_weight, hidden_bias, hidden_buffer[:size]).relu_()
            output = linear(hidden, output_weight, output_bias)
            alive = (output[:, 0] > 0) & inputs.inside[rows]
            density[rows] = torch.where(alive, output[:, 0], 0.0)
            rgb[rows] = torch.sigmoid(output[:, 1:4])
            active = torch.nonzero(alive).squeeze(1) if any(ctx.needs_input_grad) else None
            if active is not None and active.numel():
                kept.append(
                    (
                        active + start,
                        mlp_input.index_select(0, active),
                        hidden.index_select(0, active),
                        rgb[rows].index_select(0, active),
                    )
                )
        ctx.inputs = inputs
        ctx.table_shapes = [table.shape for table in tables]
        ctx.kept = kept
        ctx.save_for_backward(hidden_weight, output_weight)
        return density, rgb

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_density: torch.Tensor, grad_rgb: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        inputs: ShadingInputs = ctx.inputs
        hidden_weight, output_weight = ctx.saved_tensors
        grad_hidden_weight = torch.zeros_like(hidden_weight)
        grad_hidden_bias = hidden_weight.new_zeros(hidden_weight.shape[0])
        grad_output_weight = torch.zeros_like(output_weight)
        grad_output_bias = output_weight.new_zeros(output_weight.shape[0])
        grad_tables = [grad_density.new_zeros(shape) for shape in ctx.table_shapes]
        feature_dim = int(ctx.table_shapes[0][1])
        for active, mlp_input, hidden, rgb in ctx.kept:
            grad_colour = grad_rgb.index_select(0, active) * rgb * (1.0 - rgb)
            grad_output = torch.cat([grad_density.index_select(0, active)[:, None], grad_colour], 1)
            grad_output_weight.addmm_(grad_output.t(), hidden)
            grad_output_bias += grad_output.sum(dim=0)
            grad_hidden = torch.ops.aten.threshold_backward(grad_output @ output_weight, hidden, 0)
            grad_hidden_weight.addmm_(grad_hidden.t(), mlp_input)
            grad_hidden_bias += grad_hidden.sum(dim=0)
            grad_features = grad_hidden @ hidden_weight[:, :feature_dim]
            for grad_table, level in zip(grad_tables, inputs.levels, strict=True):
                weights, rows = (
                    level.weights.index_select(0, active),
                    level.rows.index_select(0, active),
                )
                inputs.gather.scatter_add(weights, rows, grad_features, grad_table)
        ctx.kept = None
        needs = ctx.needs_input_grad
        grads = [grad_hidden_weight, grad_hidden_bias, grad_output_weight, grad_output_bias]
        grads += grad_tables
        return (None, *(g if need else None for g, need in zip(grads, needs[1:], strict=True)))


def linear(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``inputs @ weight.T + bias`` (into ``out`` when given). ``addmm`` first copies the
    broadcast bias into every output row, which took longer than the product itself on [8k, 43]
    x [43, 128] (one CPU thread: 1.4 ms against 0.7 for ``mm`` then ``add_``)."""
    return torch.mm(inputs, weight.t(), out=out).add_(bias)


def summed_features(
    levels: Sequence[LevelLookup],
    tables: Sequence[torch.Tensor],
    gather: CornerGather,
    rows: slice,
) -> torch.Tensor:
    """Features of the samples at ``rows``: the interpolated levels summed, coarsest first."""
    total: torch.Tensor | None = None
    for level, table in zip(levels, tables, strict=True):
        part = gather.interpolate(level.weights[rows], level.rows[rows], table)
        total = part if total is None else total + part
    assert total is not None
    return total
