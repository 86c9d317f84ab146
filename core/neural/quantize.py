"""Quantisation-aware fine-tuning of the decoder MLP (torch).

The asset stores the MLP's weight matrices as ``bits``-bit integers with one fp16 scale per row
(``core/asset/mlp_quant.py``). Rounding a trained MLP costs a little PSNR at 8 bits and a lot
below; letting the last steps of training see the rounded weights (straight-through: the forward
uses them, the gradient updates the float weights as if there were no rounding) lets the grid
features and the MLP absorb it. The rounding here is the numpy writer's, operation for
operation, so the weights trained with are the ones shipped (a test compares the two).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..asset.mlp_quant import FP16_SMALLEST_NORMAL, qmax
from ..asset.vbnf.spec import MLP_FP16_BITS

__all__ = ["MLP_FP16_BITS", "quantize_dequantize", "rounded_weights"]


def quantize_dequantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` [rows, cols] rounded as ``mlp_quant.quantize_rows`` then dequantised."""
    largest = weight.abs().amax(dim=1)
    scales = (largest / qmax(bits)).half().float()
    scales = torch.where(scales >= float(FP16_SMALLEST_NORMAL), scales, torch.zeros_like(scales))
    safe = torch.where(scales > 0, scales, torch.ones_like(scales))[:, None]
    codes = torch.clamp(torch.round(weight / safe), -qmax(bits), qmax(bits))
    return codes * scales[:, None]


class StraightThroughRows(nn.Module):
    """A parametrisation: the forward sees the rounded weight, the gradient passes unchanged."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        rounded = quantize_dequantize(weight.detach(), self.bits)
        return weight + (rounded - weight).detach()


@contextmanager
def rounded_weights(layers: list[nn.Linear], bits: int) -> Iterator[None]:
    """While inside, ``layers`` compute with their weights rounded to ``bits`` bits. The float
    weights stay the same ``Parameter`` objects (the optimiser keeps updating them) and are
    plain again afterwards, so checkpoints never hold the parametrisation."""
    for layer in layers:
        parametrize.register_parametrization(layer, "weight", StraightThroughRows(bits))
    try:
        yield
    finally:
        for layer in layers:
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
