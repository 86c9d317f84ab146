"""A rate term on VQ-AD's codebook logits: the expected code length of the indices (torch).

The ``rans`` codec stores a level's indices in about the entropy of their histogram, so indices
that concentrate on few codebook entries cost fewer bits. The softmax over a corner's logits is
a natural soft assignment: under the level's marginal ``m`` (the mean assignment, held fixed
for the gradient), a corner costs ``-sum_j p_j log2 m_j`` bits. Adding that, weighted, to the
loss pulls corners the images barely constrain (never or seldom sampled, their logits still
near the initialisation) towards the entries their level already uses most, which the image
loss leaves free; well-constrained corners keep what the images ask of them.
"""

from __future__ import annotations

import torch

from .features import CodebookFeatures
from .field import RadianceField


def index_rate_bits(field: RadianceField) -> torch.Tensor:
    """Expected bits per index, averaged over every corner of every codebook level (0 for
    fields without learned indices)."""
    total_bits = torch.zeros(())
    corners = 0
    for _, store in field.levels():
        if not isinstance(store, CodebookFeatures):
            continue
        probabilities = torch.softmax(store.grid_logits, dim=-1)
        marginal = probabilities.mean(dim=0).detach().clamp_min(1e-9)
        total_bits = total_bits.to(probabilities.device)
        total_bits = total_bits - (probabilities * torch.log2(marginal)).sum()
        corners += probabilities.shape[0]
    return total_bits / max(corners, 1)
