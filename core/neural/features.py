"""Trainable feature stores for one octree level (torch).

Each store answers one question: "what are the feature vectors of these corners?". The field
interpolates whatever comes back, so the uncompressed grid, VQ-AD and the random-index baseline
differ only here.

VQ-AD's straight-through softmax is a custom autograd function instead of the reference
implementation's ``(one_hot - softmax.detach() + softmax) @ codebook``, which materialises an
``[N, 8, 2^b, k]`` temporary. The forward value of that expression is exactly the argmax row of
the codebook, and its backward needs only ``g_j = <dL/dfeature, D[j]>`` for every entry ``j``
followed by the softmax Jacobian, so memory stays O(corners x 2^b). On the CPU the backward
runs only on the rows whose feature gradient is nonzero: a training render that decodes a whole
level once for all its rounds (``RadianceField.training_tables``) reaches a fraction of its
corners, and for every other row that Jacobian product is exactly 0.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..asset.field_data import LevelData, hashed_indices

FEATURE_INIT_STD = 0.01  # the paper's N(0, 0.01) initialisation


class StraightThroughCodebook(torch.autograd.Function):
    """Forward: ``codebook[argmax(logits)]``. Backward: softmax-relaxed gradient to the logits,
    gradient of the chosen rows to the codebook."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        indices = codebook_indices(logits)
        ctx.save_for_backward(logits, codebook, indices)
        return codebook.index_select(0, indices)

    @staticmethod
    def backward(ctx, grad_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        all_logits, codebook, indices = ctx.saved_tensors
        reached = rows_with_gradient(grad_features)
        logits = all_logits
        if reached is not None:
            grad_features = grad_features.index_select(0, reached)
            logits = all_logits.index_select(0, reached)
            indices = indices.index_select(0, reached)
        probabilities = torch.softmax(logits, dim=-1)
        entry_grad = grad_features @ codebook.t()  # g_j = <dL/df, D[j]>, [rows, 2^b]
        mean_grad = (probabilities * entry_grad).sum(dim=-1, keepdim=True)
        grad_logits = entry_grad.sub_(mean_grad).mul_(probabilities)
        grad_codebook = torch.zeros_like(codebook).index_add_(0, indices, grad_features)
        if reached is not None:
            grad_logits = torch.zeros_like(all_logits).index_copy_(0, reached, grad_logits)
        return grad_logits, grad_codebook


def rows_with_gradient(grad_features: torch.Tensor) -> torch.Tensor | None:
    """The rows of nonzero gradient (``!= 0`` keeps a NaN row, so a diverging run still shows
    in its logits); None, for every row, on a GPU, where finding them would cost a host sync
    and the dense product is cheap."""
    if grad_features.is_cuda:
        return None
    return torch.nonzero(grad_features.abs().sum(dim=1) != 0).squeeze(1)


def codebook_indices(logits: torch.Tensor) -> torch.Tensor:
    """The chosen entry of each row: the first largest logit, as ``argmax`` picks it (``max``
    returns the same index and, on one CPU thread over 16 entries, takes 0.6x the time)."""
    return logits.max(dim=-1).indices


class FeatureStore(nn.Module):
    """Feature vectors of a level's corners, addressed by corner index."""

    feature_dim: int

    def forward(self, corner_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def export(self, level: int) -> LevelData:
        raise NotImplementedError


class DenseFeatures(FeatureStore):
    """One learned vector per corner: the uncompressed NGLOD-NeRF grid."""

    def __init__(self, num_corners: int, feature_dim: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.grid_features = nn.Parameter(torch.randn(num_corners, feature_dim) * FEATURE_INIT_STD)

    def forward(self, corner_ids: torch.Tensor) -> torch.Tensor:
        return self.grid_features.index_select(0, corner_ids)

    def export(self, level: int) -> LevelData:
        return LevelData(level, "dense", features=_numpy(self.grid_features))


class CodebookFeatures(FeatureStore):
    """VQ-AD: learned logits over a per-level codebook of 2^b entries, hard indices forward."""

    def __init__(self, num_corners: int, feature_dim: int, bitwidth: int) -> None:
        super().__init__()
        entries = 1 << bitwidth
        self.feature_dim = feature_dim
        self.bitwidth = bitwidth
        self.grid_codebook = nn.Parameter(torch.randn(entries, feature_dim) * FEATURE_INIT_STD)
        self.grid_logits = nn.Parameter(torch.randn(num_corners, entries) * FEATURE_INIT_STD)

    def forward(self, corner_ids: torch.Tensor) -> torch.Tensor:
        logits = self.grid_logits.index_select(0, corner_ids)
        return StraightThroughCodebook.apply(logits, self.grid_codebook)

    def indices(self) -> torch.Tensor:
        return codebook_indices(self.grid_logits)

    def export(self, level: int) -> LevelData:
        return LevelData(
            level,
            "codebook",
            codebook=_numpy(self.grid_codebook),
            indices=self.indices().cpu().numpy().astype(np.int64),
        )


class HashedFeatures(FeatureStore):
    """Random fixed indices into a learned codebook: the hash-encoding comparison of Table 3."""

    indices: torch.Tensor

    def __init__(self, corners: np.ndarray, feature_dim: int, bitwidth: int) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.bitwidth = bitwidth
        self.grid_codebook = nn.Parameter(
            torch.randn(1 << bitwidth, feature_dim) * FEATURE_INIT_STD
        )
        self.register_buffer("indices", torch.from_numpy(hashed_indices(corners, bitwidth)))

    def forward(self, corner_ids: torch.Tensor) -> torch.Tensor:
        return self.grid_codebook.index_select(0, self.indices.index_select(0, corner_ids))

    def export(self, level: int) -> LevelData:
        return LevelData(level, "hashed", codebook=_numpy(self.grid_codebook))


class FrozenFeatures(FeatureStore):
    """Fixed corner features decoded from an asset, so its bytes can be rendered and scored."""

    table: torch.Tensor

    def __init__(self, level_data: LevelData, corners: np.ndarray) -> None:
        super().__init__()
        table = np.asarray(level_data.corner_features(corners), dtype=np.float32)  # no copy
        self.feature_dim = table.shape[1]
        self.level_data = level_data
        self.register_buffer("table", torch.from_numpy(table))

    def forward(self, corner_ids: torch.Tensor) -> torch.Tensor:
        return self.table.index_select(0, corner_ids)

    def export(self, level: int) -> LevelData:
        return self.level_data


def _numpy(parameter: torch.Tensor) -> np.ndarray:
    return parameter.detach().float().cpu().numpy().copy()
