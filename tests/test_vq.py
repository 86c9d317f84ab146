"""VQ-AD's straight-through codebook: exact forward, the reference gradient, bounded memory."""

from __future__ import annotations

import torch

from core.neural.features import CodebookFeatures, StraightThroughCodebook
from core.neural.field import mark_touched, touched_rows


def reference_straight_through(logits: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """The public reference's formulation: (one_hot - softmax.detach() + softmax) @ codebook."""
    soft = torch.softmax(logits, dim=-1)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft)
    return (hard - soft.detach() + soft) @ codebook


def test_forward_is_the_argmax_codebook_row() -> None:
    torch.manual_seed(0)
    logits, codebook = torch.randn(50, 16), torch.randn(16, 5)
    features = StraightThroughCodebook.apply(logits, codebook)
    torch.testing.assert_close(features, codebook[logits.argmax(-1)], rtol=0, atol=0)


def test_gradients_match_the_reference_formulation() -> None:
    torch.manual_seed(1)
    for entries in (2, 16, 256):
        logits = torch.randn(40, entries, dtype=torch.float64, requires_grad=True)
        codebook = torch.randn(entries, 6, dtype=torch.float64, requires_grad=True)
        upstream = torch.randn(40, 6, dtype=torch.float64)
        upstream[::3] = 0.0  # rows no sample reached: the backward skips them
        ours = torch.autograd.grad(
            (StraightThroughCodebook.apply(logits, codebook) * upstream).sum(), (logits, codebook)
        )
        reference = torch.autograd.grad(
            (reference_straight_through(logits, codebook) * upstream).sum(), (logits, codebook)
        )
        for got, want in zip(ours, reference, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_a_table_no_sample_reached_gets_zero_gradients() -> None:
    logits = torch.randn(30, 8, requires_grad=True)
    codebook = torch.randn(8, 4, requires_grad=True)
    StraightThroughCodebook.apply(logits, codebook).mul(0.0).sum().backward()
    assert logits.grad is not None and codebook.grad is not None
    assert not logits.grad.any() and not codebook.grad.any()


def test_ties_pick_the_first_largest_logit_as_argmax_does() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randint(0, 3, (500, 16), generator=generator).float()  # many ties
    features = StraightThroughCodebook.apply(logits, torch.eye(16))
    assert torch.equal(features.argmax(-1), logits.argmax(-1))


def test_gradient_reaches_logits_and_codebook_of_touched_rows_only() -> None:
    torch.manual_seed(2)
    store = CodebookFeatures(num_corners=100, feature_dim=4, bitwidth=3)
    rows = torch.tensor([3, 17, 42])
    store(rows).pow(2).sum().backward()
    logit_grad = store.grid_logits.grad
    assert logit_grad is not None and store.grid_codebook.grad is not None
    touched = logit_grad.abs().sum(dim=1) > 0
    assert touched.nonzero().squeeze(1).tolist() == rows.tolist()
    chosen = store.indices()[rows].unique()
    codebook_rows = store.grid_codebook.grad.abs().sum(dim=1) > 0
    assert codebook_rows.nonzero().squeeze(1).tolist() == chosen.tolist()


def test_touched_rows_are_the_sorted_distinct_ids() -> None:
    """What ``torch.unique`` gives, found with a mask whose count is read once for all levels."""
    generator = torch.Generator().manual_seed(4)
    for num_rows in (1, 9, 300):
        ids = torch.randint(0, num_rows, (50, 8), generator=generator)
        touched, local_ids = mark_touched(ids, num_rows)
        rows = touched_rows(touched, int(touched.sum()))
        assert torch.equal(rows, torch.unique(ids))
        assert torch.equal(rows[local_ids], ids)


def test_no_temporary_larger_than_rows_times_entries() -> None:
    """The reference builds [N, 2^b, k]; ours must stay O(N * 2^b) in the autograd graph."""
    logits = torch.randn(512, 256, requires_grad=True)
    codebook = torch.randn(256, 16, requires_grad=True)
    biggest = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal biggest
        biggest = max(biggest, tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        StraightThroughCodebook.apply(logits, codebook).sum().backward()
    assert biggest <= 512 * 256
